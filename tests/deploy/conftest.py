"""A served model and a store on it, copied fresh for each test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from e2urec.config import to_dict
from e2urec.deploy.store import init_store
from tests.helpers import TINY, quick_train, tiny_backbone

STORE_TRAIN = quick_train()  # the Original's recipe, and the store's for method retrain


@pytest.fixture(scope="module")
def template_store(tmp_path_factory, served_model, store_data) -> Path:
    root = tmp_path_factory.mktemp("template") / "store"
    # No auditor here (its references are tested in test_auditor.py): the loss-threshold
    # check decides, and each test's store costs no reference training.
    init_store(served_model, store_data, root, tiny_backbone(), STORE_TRAIN,
               references=0).close()
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
