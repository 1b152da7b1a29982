"""A store's data without some users, and a request's own data, on real prepared folders."""

from __future__ import annotations

import json
import shutil

from e2urec.data.catalog import read_catalog
from e2urec.data.samples import SHARDS_FILE, SPLITS, read_manifest, read_split
from e2urec.deploy.redaction import copy_data, data_users, request_data

PILOT = "2"  # a forgotten pilot of store_data: training rows, a canary, a shard


def test_copy_data_leaves_nothing_of_the_dropped_users(store_data, tmp_path):
    target = tmp_path / "data"
    before = {split: read_split(store_data, split) for split in SPLITS}
    # the user is in every place the copy must clear
    assert PILOT in read_manifest(store_data)["forget_user_ids"]
    assert PILOT in json.loads((store_data / SHARDS_FILE).read_text())["user_balanced"]
    assert PILOT in read_catalog(store_data).users
    assert any(r["user_id"] == PILOT for r in before["train"])
    dropped = copy_data(store_data, target, {PILOT})
    assert PILOT not in data_users(target) and PILOT in data_users(store_data)
    for split, rows in before.items():
        gone = sum(r["user_id"] == PILOT for r in rows)
        assert len(read_split(target, split)) == len(rows) - gone
        assert dropped.get(split, 0) == gone
    manifest = read_manifest(target)
    assert PILOT not in manifest["forget_user_ids"]
    assert PILOT not in (manifest.get("canaries") or {}).get("users", {})
    assert manifest["counts"]["train"] == len(read_split(target, "train"))
    shards = json.loads((target / SHARDS_FILE).read_text())
    assert PILOT not in shards["user_balanced"]
    kept_samples = {r["sample_id"] for r in read_split(target, "train")}
    assert {int(k) for k in shards["sisa"]} <= kept_samples
    assert PILOT not in read_catalog(target).users


def test_copy_data_over_itself_replaces_the_folder_whole(store_data, tmp_path):
    data = shutil.copytree(store_data, tmp_path / "data")
    copy_data(data, data, {PILOT})
    assert PILOT not in data_users(data)
    assert not [p.name for p in tmp_path.iterdir() if p.name != "data"]  # no temporary left


def test_request_data_holds_the_users_rows_as_forget_and_everyone_else_as_retain(
        store_data, tmp_path):
    out = request_data(store_data, [PILOT], tmp_path / "request")
    train = read_split(store_data, "train")
    assert read_split(out, "forget") == [r for r in train if r["user_id"] == PILOT]
    assert read_split(out, "retain") == [r for r in train if r["user_id"] != PILOT]
    assert {r["user_id"] for r in read_split(out, "canary")} <= {PILOT}
    for split in ("valid", "test", "probe", "audit"):
        assert PILOT not in {r["user_id"] for r in read_split(out, split)}
    manifest = read_manifest(out)
    assert manifest["forget_user_ids"] == [PILOT]
    assert set(manifest["canaries"]["users"]) <= {PILOT}
    assert PILOT not in read_catalog(out).users
