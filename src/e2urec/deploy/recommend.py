"""Recommendations from the store's current version: unrated movies ranked by P(yes)."""

from __future__ import annotations

from typing import Any

import torch

from e2urec.checkpoints.scorers import load_scorer
from e2urec.data.catalog import read_catalog
from e2urec.data.prompts import YES_ANSWER
from e2urec.data.samples import read_manifest
from e2urec.deploy.status import backbone_altered
from e2urec.deploy.store import Store
from e2urec.evaluation.predict import predict_groups
from e2urec.fileio import folder_sha256


class RecommendError(ValueError):
    """No recommendation can be made for this user; the message says why."""


def recommend(store: Store, user: str, top: int = 10, batch_size: int = 32,
              device: torch.device | None = None) -> list[dict[str, Any]]:
    """The ``top`` movies ``user`` has not rated, by the current version's P(yes)."""
    forgotten = store.ledger.forgotten()
    if user in forgotten:
        raise RecommendError(f"user {user} was forgotten (request {forgotten[user]}): their "
                             "profile and ratings are deleted, there is nothing to "
                             "recommend from")
    current = store.ledger.current()
    if folder_sha256(store.current_dir()) != current.model_sha256:
        raise RecommendError(f"version {current.id}'s files differ from their recorded hashes "
                             "(altered or damaged); nothing is served from them (see e2urec "
                             "deploy status)")
    if altered := backbone_altered(store):
        raise RecommendError(f"{altered}; nothing is served from it (see e2urec deploy status)")
    catalog = read_catalog(store.data_dir, store_history(store))
    if catalog is None:
        raise RecommendError(f"{store.data_dir} has no movie catalogue (items.jsonl, "
                             "users.jsonl); prepare the data with this version of e2urec")
    if user not in catalog.users:
        raise RecommendError(f"unknown user {user}: not in the store's data")
    if top < 1:
        raise RecommendError("--top must be at least 1")
    items = catalog.unrated(user)
    rows = [{"prompt": catalog.prompt(user, item), "answer": YES_ANSWER, "label": 1}
            for item in items]
    scores = predict_groups(load_scorer(store.current_dir()), [rows], batch_size,
                            device=device)[0]
    order = sorted(range(len(items)), key=lambda i: (-scores[i], i))[:top]
    return [{"rank": r + 1, "item_id": items[i], "title": catalog.titles[items[i]],
             "p_yes": float(scores[i])} for r, i in enumerate(order)]


def store_history(store: Store) -> int:
    """How many past ratings the store's prompts show (the data's ``history``)."""
    return int(read_manifest(store.data_dir).get("config", {}).get("history", 10))
