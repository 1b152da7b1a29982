"""A store's consistency report, and the scratch no request needs, on a real store."""

from __future__ import annotations

import os

from e2urec.deploy.status import purge_scratch, stale_scratch, status
from e2urec.deploy.store import open_store


def test_a_fresh_store_is_consistent(store):
    report = status(open_store(store))
    assert report["consistent"] and report["problems"] == []
    assert (report["current"], report["versions"], report["forgotten_users"]) == ("v0000", 1, 0)


def test_an_interrupted_writes_copy_and_a_requests_leftover_are_stale_and_purged(store):
    (store / ".data.tmp1234").mkdir()  # what an interrupted atomic write leaves
    (store / ".data.tmp1234" / "train.jsonl").write_text("{}\n")
    (store / "work" / "r0009").mkdir(parents=True)  # a request the ledger does not know
    handle = open_store(store)
    report = status(handle)
    assert not report["consistent"]
    assert report["leftover_copies"] == [".data.tmp1234"]
    assert "work/r0009" in report["stale_scratch"]
    assert {p.name for p in stale_scratch(handle)} == {".data.tmp1234", "r0009"}
    gone = purge_scratch(handle)
    assert len(gone) == 2 and not (store / ".data.tmp1234").exists()
    assert status(handle)["consistent"]


def test_altered_weights_and_links_are_problems(store):
    weights = store / "versions" / "v0000" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    os.symlink(store / "data", store / "elsewhere")
    problems = status(open_store(store))["problems"]
    assert any("differ from their recorded hashes" in p for p in problems)
    assert any("symbolic links (elsewhere)" in p for p in problems)
