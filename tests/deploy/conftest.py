"""A served model and a store on it, copied fresh for each test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from e2urec.deploy.store import init_store
from e2urec.training.finetune import train_split
from tests.helpers import quick_train, tiny_backbone

STORE_TRAIN = quick_train()  # the Original's recipe, and the store's for method retrain


@pytest.fixture(scope="module")
def served_model(tmp_path_factory, prepared_dir) -> Path:
    out = tmp_path_factory.mktemp("served") / "original"
    train_split(prepared_dir, "train", tiny_backbone(), STORE_TRAIN, out)
    return out


@pytest.fixture(scope="module")
def template_store(tmp_path_factory, served_model, prepared_dir) -> Path:
    root = tmp_path_factory.mktemp("template") / "store"
    init_store(served_model, prepared_dir, root, tiny_backbone(), STORE_TRAIN).close()
    return root


@pytest.fixture
def store(tmp_path, template_store) -> Path:
    return Path(shutil.copytree(template_store, tmp_path / "store"))
