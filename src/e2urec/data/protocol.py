"""The paper's data protocol: history, window, time split, forget set, shards.

``prepare`` is pure (data + config -> :class:`Prepared`); ``write_prepared``
puts the result on disk atomically. Same input and seed give the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from e2urec.config import ConfigError, PrepareConfig, to_dict
from e2urec.data.movielens import MovieLens
from e2urec.data.prompts import answer_for, build_prompt
from e2urec.data.samples import write_jsonl
from e2urec.data.sources import RawSource, find_raw, read_raw
from e2urec.fileio import atomic_dir


class ForgetRequestError(ValueError):
    """A forget request names users that cannot be forgotten, or nobody."""


@dataclass
class Prepared:
    splits: dict[str, list[dict[str, Any]]]
    shards: dict[str, Any]
    manifest: dict[str, Any]


def build_samples(data: MovieLens, config: PrepareConfig) -> pd.DataFrame:
    """All samples with >= ``min_history`` earlier ratings, newest ``window`` kept, in order."""
    ratings = data.ratings.sort_values(["timestamp", "user_id", "item_id"], kind="stable")
    ratings = ratings.reset_index(drop=True)
    ratings["n_history"] = ratings.groupby("user_id", sort=False).cumcount()
    eligible = ratings[ratings.n_history >= config.min_history]
    if config.window is not None and config.window > len(eligible):
        raise ConfigError(f"window {config.window:,} exceeds the {len(eligible):,} samples "
                          f"{config.dataset} has (ratings with >= {config.min_history} earlier "
                          f"ratings); use a window of at most {len(eligible):,}")
    window = eligible.tail(config.window or len(eligible)).reset_index(drop=True)

    titles = dict(zip(data.items.item_id, data.items.title, strict=True))
    users = data.users.set_index("user_id")
    by_user = {u: list(zip(g.item_id, g.rating, strict=True))
               for u, g in ratings.groupby("user_id", sort=False)}
    prompts, answers = [], []
    for row in window.itertuples(index=False):
        past = by_user[row.user_id][max(0, row.n_history - config.history):row.n_history]
        user = users.loc[row.user_id]
        prompts.append(build_prompt(
            str(user.gender), int(user.age), str(user.occupation),
            [(titles[item], rating) for item, rating in past], titles[row.item_id],
        ))
        answers.append(answer_for(row.rating))
    window["prompt"] = prompts
    window["answer"] = answers
    window["label"] = (window.rating > 3).astype(int)
    window["sample_id"] = np.arange(len(window))
    return window


def time_split(samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split in time order 60/20/20 into train/valid/test."""
    n = len(samples)
    n_train, n_valid = int(n * 0.6), int(n * 0.2)
    return {
        "train": samples.iloc[:n_train],
        "valid": samples.iloc[n_train:n_train + n_valid],
        "test": samples.iloc[n_train + n_valid:],
    }


def select_forget_users(train_users: list[str], config: PrepareConfig) -> list[str]:
    """The users to forget: an explicit list (validated) or a seeded fraction."""
    known = set(train_users)
    if config.forget_users is not None:
        requested = [str(u).strip() for u in config.forget_users if str(u).strip()]
        if not requested:
            raise ForgetRequestError("the forget request names no users")
        unknown = sorted(set(requested) - known)
        if unknown:
            raise ForgetRequestError(
                f"{len(unknown)} user id(s) in the forget request have no training samples: "
                f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}"
            )
        return sorted(set(requested), key=train_users.index)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(train_users))
    n_forget = max(1, round(config.forget_fraction * len(train_users)))
    if n_forget >= len(train_users):
        raise ForgetRequestError("the forget fraction would forget every training user")
    return [train_users[i] for i in sorted(order[:n_forget])]


def make_shards(train: pd.DataFrame, k: int, seed: int) -> dict[str, Any]:
    """SISA shards (random samples) and user-balanced shards (users never split)."""
    rng = np.random.default_rng(seed)
    random_shard = np.empty(len(train), dtype=int)
    random_shard[rng.permutation(len(train))] = np.arange(len(train)) % k
    counts = train.groupby("user_id", sort=False).size()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    loads = [0] * k
    user_shard: dict[str, int] = {}
    for user, count in order:
        shard = min(range(k), key=lambda s: (loads[s], s))
        user_shard[str(user)] = shard
        loads[shard] += int(count)
    return {
        "k": k,
        "sisa": {str(sid): int(s) for sid, s in zip(train.sample_id, random_shard, strict=True)},
        "user_balanced": user_shard,
    }


def prepare(data: MovieLens, config: PrepareConfig,
            provenance: dict[str, Any] | None = None) -> Prepared:
    """The protocol applied to ``data`` (pure); ``provenance`` goes into the manifest."""
    config.validate()
    samples = build_samples(data, config)
    if len(samples) < 10:
        raise ConfigError(f"only {len(samples)} samples have >= {config.min_history} history "
                          "items; the data is too small for the protocol")
    parts = time_split(samples)
    train = parts["train"]
    train_users = list(dict.fromkeys(train.user_id))
    forget_users = select_forget_users(train_users, config)
    forgotten = train.user_id.isin(set(forget_users))
    unseen = ~pd.concat([parts["valid"], parts["test"]]).user_id.isin(set(train_users))
    parts["forget"] = train[forgotten]
    parts["retain"] = train[~forgotten]
    parts["holdout"] = pd.concat([parts["valid"], parts["test"]])[unseen]
    shards = make_shards(train, config.shards, config.seed)
    splits = {name: _records(df) for name, df in parts.items()}
    manifest = {
        "dataset": config.dataset,
        **(provenance or {}),
        "config": to_dict(config),
        "counts": {name: len(rows) for name, rows in splits.items()},
        "train_users": len(train_users),
        "forget_user_ids": forget_users,
        "label_share_yes": {n: _share(rows) for n, rows in splits.items()},
    }
    return Prepared(splits, shards, manifest)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {"sample_id": int(r.sample_id), "user_id": str(r.user_id), "item_id": str(r.item_id),
         "rating": float(r.rating), "timestamp": int(r.timestamp), "label": int(r.label),
         "prompt": r.prompt, "answer": r.answer}
        for r in df.itertuples(index=False)
    ]


def _share(rows: list[dict[str, Any]]) -> float | None:
    return round(sum(r["label"] for r in rows) / len(rows), 4) if rows else None


def prepare_dataset(config: PrepareConfig, raw: RawSource | None = None) -> Prepared:
    """The one prepare path (CLI, bench, benchmarks): find, check, read, apply the protocol."""
    raw = raw or find_raw(config)
    return prepare(read_raw(raw, config), config,
                   {"source": str(raw.folder), "raw_sha256": raw.digest})


def write_prepared(prepared: Prepared, out_dir: str | Path) -> Path:
    """Write every split, the shards and the manifest; replace ``out_dir`` atomically."""
    with atomic_dir(out_dir) as tmp:
        for name, rows in prepared.splits.items():
            write_jsonl(tmp / f"{name}.jsonl", rows)
        (tmp / "shards.json").write_text(json.dumps(prepared.shards, indent=1) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(prepared.manifest, indent=2) + "\n")
    return Path(out_dir)
