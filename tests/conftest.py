"""Shared fixtures: a synthetic MovieLens folder, prepared data and tiny trained models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2urec.config import PrepareConfig
from e2urec.data.movielens import read_movielens
from e2urec.data.protocol import prepare, write_prepared
from tests.helpers import PILOTS, SHARED_ML100K, quick_train, tiny_backbone, write_ml100k

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    return write_ml100k(tmp_path_factory.mktemp("raw") / "ml-100k")


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory, synthetic_raw) -> Path:
    config = PrepareConfig(protocol="paper", window=None, forget_users=PILOTS, shards=2, seed=1,
                           holdout_fraction=0.25, min_holdout_users=4, canaries=2,
                           min_canary_users=2, min_canary_rows=1)
    out = tmp_path_factory.mktemp("prepared") / "data"
    return write_prepared(prepare(read_movielens(synthetic_raw), config), out)


@pytest.fixture(scope="session", params=["tiny-llama", "tiny-t5"])
def original_dir(request, tmp_path_factory, prepared_dir) -> Path:
    """A tiny Original model (per family) trained on the synthetic train split."""
    from e2urec.training.finetune import train_split

    out = tmp_path_factory.mktemp(f"original-{request.param}") / "model"
    train_split(prepared_dir, "train", tiny_backbone(request.param), quick_train(), out)
    return out


@pytest.fixture(scope="session")
def real_ml100k() -> Path:
    """The real MovieLens-100K: ../shared, $E2UREC_DATA_DIR, the cache or the recbole wheel."""
    from e2urec.data.sources import DatasetNotFoundError, locate_dataset

    if SHARED_ML100K.is_dir():
        return SHARED_ML100K
    try:
        return locate_dataset("ml-100k", allow_download=False)
    except DatasetNotFoundError:
        pytest.skip("no MovieLens-100K here: install the recbole wheel (README) or set "
                    "E2UREC_DATA_DIR")


@pytest.fixture(scope="session")
def store_data(tmp_path_factory) -> Path:
    """Prepared data with enough never-trained users to verify against (6 audit users)
    and users of varied taste, as a store holds."""
    raw = write_ml100k(tmp_path_factory.mktemp("store-raw") / "ml-100k", n_users=24,
                       per_user=24)
    config = PrepareConfig(protocol="paper", window=None, forget_users=PILOTS, shards=2, seed=1,
                           holdout_fraction=0.4, canaries=2, min_canary_users=2,
                           min_canary_rows=1)
    out = tmp_path_factory.mktemp("store-data") / "data"
    return write_prepared(prepare(read_movielens(raw), config), out)


@pytest.fixture(scope="session")
def served_model(tmp_path_factory, store_data) -> Path:
    """The store's Original: the quick recipe on ``store_data``'s train split."""
    from e2urec.training.finetune import train_split

    out = tmp_path_factory.mktemp("served") / "original"
    train_split(store_data, "train", tiny_backbone(), quick_train(), out)
    return out
