"""Slices in time inside a shard, and the exactness they must keep: a deletion that
restarts a shard from a slice checkpoint ends byte for byte where a rebuild without
the users ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from e2urec.backbones.registry import create_backbone
from e2urec.checkpoints.folders import read_meta, save_model
from e2urec.config import BackboneConfig, ConfigError, PrepareConfig
from e2urec.data.movielens import read_movielens
from e2urec.data.protocol import prepare, write_prepared
from e2urec.data.samples import read_split
from e2urec.deploy.redaction import copy_data
from e2urec.methods import run_method
from e2urec.training.loop import make_accelerator
from e2urec.training.shards import ShardTrainer, initial_ensemble
from e2urec.training.slices import (
    HOUR,
    checkpoint_dir,
    draw_slice_bounds,
    first_times,
    split_by_slice,
)
from tests.helpers import quick_train, tiny_backbone, write_ml100k


def rows_of(user, *times):
    return [{"user_id": user, "timestamp": t} for t in times]


def test_each_user_sits_in_the_slice_of_its_first_row_and_no_other_user_moves_it():
    rows = (rows_of("a", 10 * HOUR, 50 * HOUR) + rows_of("b", 20 * HOUR + 5)
            + rows_of("c", 30 * HOUR, 31 * HOUR) + rows_of("d", 40 * HOUR + 7))
    bounds = draw_slice_bounds(rows, 3)
    assert len(bounds) == 2 and all(b % HOUR == 0 for b in bounds)
    parts = split_by_slice(rows, bounds)
    # Two rows a slice; a user's rows stay together, by first row ("a"'s late row too).
    assert [sorted({r["user_id"] for r in p}) for p in parts] == [["a"], ["b", "c"], ["d"]]
    assert bounds == [20 * HOUR, 40 * HOUR]
    # Without "a" and "c" the others keep their slices: a slice is the user's own fact.
    fewer = [r for r in rows if r["user_id"] in {"b", "d"}]
    assert [sorted({r["user_id"] for r in p}) for p in split_by_slice(fewer, bounds)] == \
        [[], ["b"], ["d"]]
    assert draw_slice_bounds(rows, 1) == []
    with pytest.raises(ValueError, match="at least 1"):
        draw_slice_bounds(rows, 0)


def test_slices_refuse_early_stopping_which_reads_every_users_valid_rows(prepared_dir,
                                                                         tmp_path):
    with pytest.raises(ConfigError, match="early_stopping: false"):
        ShardTrainer(prepared_dir, tiny_backbone(), quick_train(early_stopping=True),
                     make_accelerator(cpu=True), tmp_path, [[1]])


@pytest.fixture(scope="module")
def late_user_data(tmp_path_factory):
    """Users who arrive two hours apart in two user shards; the forgotten user is the
    one who arrived last, so that a deletion restarts its shard from a slice
    checkpoint, not from the start."""
    raw = write_ml100k(tmp_path_factory.mktemp("arrivals") / "ml-100k", n_users=20,
                       arrival_gap=2 * HOUR)
    config = PrepareConfig(protocol="paper", window=None, shards=2, seed=3, holdout_fraction=0.25,
                           min_holdout_users=4, forget_users=["1"])
    first = first_times(prepare(read_movielens(raw), config).splits["train"])
    late = max(first, key=lambda u: (first[u], u))
    config.forget_users = [late]
    return write_prepared(prepare(read_movielens(raw), config),
                          tmp_path_factory.mktemp("late-user") / "data"), late


@pytest.mark.parametrize("slice_data", ["own", "cumulative"])
def test_a_sliced_deletion_equals_a_rebuild_without_the_user_byte_for_byte(late_user_data,
                                                                          tmp_path, slice_data):
    data, user = late_user_data
    train = quick_train(epochs=1, early_stopping=False)
    # The backbone's start is fixed once (as a store keeps it), so a rebuild shares it.
    start = save_model(create_backbone(tiny_backbone(), data, train.seed), tmp_path / "start")
    backbone = BackboneConfig(name=str(start), max_prompt_tokens=tiny_backbone().max_prompt_tokens)
    run_method("receraser", data, None, backbone, train,
               {"slices": 3, "slice_data": slice_data, "aggregator_hidden": 4,
                "aggregator_epochs": 1}, tmp_path / "out")
    out = tmp_path / "out"
    bounds = read_meta(out / "initial")["slice_bounds"]
    assert len(bounds) == 2 and all(len(b) == 2 for b in bounds)  # drawn per shard

    # The rebuild: the data without the user (as a store purges it), the same settings.
    rebuilt_data = tmp_path / "without"
    copy_data(data, rebuilt_data, drop_users={user})
    trainer = ShardTrainer(rebuilt_data, backbone, train, make_accelerator(cpu=True),
                           tmp_path / "rebuilt", bounds, slice_data=slice_data)
    rebuilt = initial_ensemble(trainer, "user_balanced", tmp_path / "rebuilt")

    shards = json.loads((data / "shards.json").read_text())["user_balanced"]
    members = [out / m for m in read_meta(out)["members"]]
    assert len(members) == len(rebuilt) == 2
    retrained = read_meta(members[shards[user]])["train_record"]
    assert retrained["first_slice"] == 2  # the user arrived last: two slices kept as they were
    # Own slices retrain the user's slice alone; cumulative ones every row up to it (an
    # empty slice trains nothing: its member is the checkpoint before it).
    last = retrained["slices"][2]
    assert retrained["trained_samples"] == (
        last if slice_data == "own" or not last else retrained["samples"])
    assert retrained["slices"][2] < retrained["samples"]
    for mine, theirs in zip(members, rebuilt, strict=True):
        assert_same_weights(mine, theirs)
        for index in range(2):
            assert_same_weights(checkpoint_dir(mine, index), checkpoint_dir(theirs, index))
    # ... and the user's rows were in the slice it retrained, not in what it kept.
    train_rows = [r for r in read_split(data, "train") if shards[r["user_id"]] == shards[user]]
    assert any(r["user_id"] == user
               for r in split_by_slice(train_rows, bounds[shards[user]])[2])


def assert_same_weights(a: Path, b: Path) -> None:
    mine, theirs = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert mine[name].equal(theirs[name]), f"{a} and {b} differ at {name}"
