"""Shared fixtures: synthetic MovieLens folders, prepared data and tiny trained models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from e2urec.config import BackboneConfig, PrepareConfig, TrainConfig
from e2urec.data.movielens import read_movielens
from e2urec.data.protocol import prepare, write_prepared

SHARED_ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
TINY = {"tiny_hidden": 32, "tiny_layers": 1, "tiny_heads": 2, "tiny_intermediate": 64,
        "tiny_vocab": 600}

CAFE = "Caf\u00e9"  # a Latin-1 title, as in the real u.item

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_ml100k(folder: Path, n_users: int = 16, n_items: int = 40, per_user: int = 14,
                 seed: int = 0) -> Path:
    """A small GroupLens-100K-format folder whose labels depend on the item."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False)
        for j, item in enumerate(items):
            liked = item % 2 == 0
            rating = int(rng.choice([4, 5])) if liked else int(rng.choice([1, 2, 3]))
            lines.append(f"{u}\t{item}\t{rating}\t{1_000_000 + 1000 * j + u}")
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    jobs = ["engineer", "writer", "student", "artist"]
    (folder / "u.user").write_text("".join(
        f"{u}|{20 + u}|{'M' if u % 2 else 'F'}|{jobs[u % 4]}|0000{u}\n"
        for u in range(1, n_users + 1)))
    (folder / "u.item").write_bytes("".join(
        f"{i}|{CAFE if i == 3 else 'Movie'} {i} (19{50 + i % 40})|01-Jan-1995||http://x|0\n"
        for i in range(1, n_items + 1)).encode("latin-1"))
    return folder


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    return write_ml100k(tmp_path_factory.mktemp("raw") / "ml-100k")


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory, synthetic_raw) -> Path:
    config = PrepareConfig(window=10_000, forget_fraction=0.25, shards=2, seed=1)
    out = tmp_path_factory.mktemp("prepared") / "data"
    return write_prepared(prepare(read_movielens(synthetic_raw), config), out)


def tiny_backbone(name: str = "tiny-llama") -> BackboneConfig:
    return BackboneConfig(name=name, **TINY)


def quick_train(**overrides) -> TrainConfig:
    values = {"epochs": 2, "lr": 3e-3, "batch_size": 16, "patience": 2, "seed": 0}
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session", params=["tiny-llama", "tiny-t5"])
def original_dir(request, tmp_path_factory, prepared_dir) -> Path:
    """A tiny Original model (per family) trained on the synthetic train split."""
    from e2urec.training.finetune import train_split

    out = tmp_path_factory.mktemp(f"original-{request.param}") / "model"
    train_split(prepared_dir, "train", tiny_backbone(request.param), quick_train(), out)
    return out
