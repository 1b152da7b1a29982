"""Shared fixtures: a synthetic MovieLens folder, prepared data and tiny trained models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2urec.config import PrepareConfig
from e2urec.data.movielens import read_movielens
from e2urec.data.protocol import prepare, write_prepared
from tests.helpers import PILOTS, quick_train, tiny_backbone, write_ml100k

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    return write_ml100k(tmp_path_factory.mktemp("raw") / "ml-100k")


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory, synthetic_raw) -> Path:
    config = PrepareConfig(window=10_000, forget_users=PILOTS, shards=2, seed=1)
    out = tmp_path_factory.mktemp("prepared") / "data"
    return write_prepared(prepare(read_movielens(synthetic_raw), config), out)


@pytest.fixture(scope="session", params=["tiny-llama", "tiny-t5"])
def original_dir(request, tmp_path_factory, prepared_dir) -> Path:
    """A tiny Original model (per family) trained on the synthetic train split."""
    from e2urec.training.finetune import train_split

    out = tmp_path_factory.mktemp(f"original-{request.param}") / "model"
    train_split(prepared_dir, "train", tiny_backbone(request.param), quick_train(), out)
    return out
