"""A served model and a store on it, copied fresh for each test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from e2urec.config import PrepareConfig, to_dict
from e2urec.data.movielens import read_movielens
from e2urec.data.protocol import prepare, write_prepared
from e2urec.deploy.store import init_store
from e2urec.training.finetune import train_split
from tests.helpers import PILOTS, TINY, quick_train, tiny_backbone, write_ml100k

STORE_TRAIN = quick_train()  # the Original's recipe, and the store's for method retrain


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


@pytest.fixture(scope="module")
def served_model(tmp_path_factory, store_data) -> Path:
    out = tmp_path_factory.mktemp("served") / "original"
    train_split(store_data, "train", tiny_backbone(), STORE_TRAIN, out)
    return out


@pytest.fixture(scope="module")
def template_store(tmp_path_factory, served_model, store_data) -> Path:
    root = tmp_path_factory.mktemp("template") / "store"
    init_store(served_model, store_data, root, tiny_backbone(), STORE_TRAIN).close()
    return root


@pytest.fixture
def store(tmp_path, template_store) -> Path:
    return Path(shutil.copytree(template_store, tmp_path / "store"))


# Slices train a fixed number of epochs: early stopping would read every user's valid rows.
TRAIN_SETS = [f"--set=train.{k}={v}" for k, v in
              {**to_dict(STORE_TRAIN), "epochs": 2, "early_stopping": False}.items()
              if not isinstance(v, dict | list) and v is not None]
RECERASER = ["--option=aggregator_hidden=4", "--option=aggregator_epochs=2"]
TINY_SETS = [f"--set=backbone.{k}={v}" for k, v in TINY.items()]


@pytest.fixture(scope="session")
def ensemble_template(tmp_path_factory, store_data) -> Path:
    """A store serving a RecEraser ensemble of 2 user shards with 2 slices each."""
    from e2urec.cli import main

    root = tmp_path_factory.mktemp("ensemble") / "store"
    code = main(["--threads", "1", "deploy", "init", "--method", "receraser", "--shards", "2",
                 "--slices", "2", *RECERASER, "--data", str(store_data), "--store", str(root),
                 *TINY_SETS, *TRAIN_SETS])
    assert code == 0
    return root


@pytest.fixture
def ensemble_store(tmp_path, ensemble_template) -> Path:
    return Path(shutil.copytree(ensemble_template, tmp_path / "ensemble-store"))
