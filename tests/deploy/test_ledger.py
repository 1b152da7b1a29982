"""The ledger on its own: a real SQLite file, its rules for versions and forgotten users."""

from __future__ import annotations

import sqlite3

import pytest

from e2urec.deploy.ledger import FORMAT, Ledger, LedgerError, Version, now

WEIGHTS = {"model.safetensors": "aa", "config.json": "c1"}


def ledger_with_two_versions(tmp_path) -> Ledger:
    """v0000 trained on user u1 (current), v0001 without them (retired)."""
    ledger = Ledger.create(tmp_path / "ledger.sqlite")
    with ledger.transaction() as db:
        ledger.add_version(db, Version("v0000", None, None, now(), WEIGHTS, [], "retired"))
        ledger.make_current(db, "v0000")
        ledger.add_version(db, Version("v0001", "v0000", "r1", now(),
                                       {"model.safetensors": "bb"}, ["u1"], "retired"))
    return ledger


def test_a_version_that_held_a_forgotten_user_never_becomes_current_again(tmp_path):
    ledger = ledger_with_two_versions(tmp_path)
    ledger.record_request("r1", ["u1"], "retrain", {}, {})
    with ledger.transaction() as db:
        ledger.add_forgotten(db, ["u1"], "r1")
        ledger.make_current(db, "v0001")
    assert ledger.current().id == "v0001" and ledger.forgotten() == {"u1": "r1"}
    with pytest.raises(LedgerError, match="trained on forgotten users"), \
            ledger.transaction() as db:
        ledger.make_current(db, "v0000")
    assert ledger.current().id == "v0001"  # the failed transaction changed nothing
    # the same weights, under any other file hashes, are recognised as that version's
    held = ledger.held_forgotten({"model.safetensors": "aa", "tokenizer.json": "t"})
    assert held is not None and held[0].id == "v0000" and held[1] == ["u1"]
    assert ledger.held_forgotten({"model.safetensors": "bb"}) is None


def test_a_transaction_is_all_or_nothing(tmp_path):
    ledger = ledger_with_two_versions(tmp_path)
    ledger.record_request("r1", ["u1"], "retrain", {}, {})
    with pytest.raises(RuntimeError), ledger.transaction() as db:
        ledger.update_request(db, "r1", status="applied")
        ledger.add_forgotten(db, ["u1"], "r1")
        raise RuntimeError("killed between two writes")
    assert ledger.request("r1")["status"] == "pending" and ledger.forgotten() == {}


def test_request_ids_skip_the_ones_an_operator_used(tmp_path):
    ledger = Ledger.create(tmp_path / "ledger.sqlite")
    ledger.record_request("r0002", ["a"], "e2urec", {}, {})
    assert ledger.next_request_id() == "r0003"  # r0002 is taken
    ledger.record_request("r0003", ["b"], "e2urec", {}, {})
    assert ledger.next_request_id() == "r0004"
    assert [r["id"] for r in ledger.unfinished()] == ["r0002", "r0003"]
    with pytest.raises(sqlite3.IntegrityError):  # one id, one request
        ledger.record_request("r0003", ["c"], "e2urec", {}, {})


def test_open_refuses_what_it_cannot_read_safely(tmp_path):
    with pytest.raises(LedgerError, match="missing"):
        Ledger.open(tmp_path / "none.sqlite")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match="not a readable ledger"):
        Ledger.open(garbage)
    newer = Ledger.create(tmp_path / "newer.sqlite")
    newer.db.execute(f"PRAGMA user_version = {FORMAT + 1}")
    newer.close()
    with pytest.raises(LedgerError, match="newer than this e2urec reads"):
        Ledger.open(tmp_path / "newer.sqlite")


FORMAT_2_REQUESTS = """
CREATE TABLE requests (
    id TEXT PRIMARY KEY, users TEXT NOT NULL, received TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'applied', 'done', 'failed',
                                           'abandoned')),
    method TEXT, options TEXT, verification TEXT, finished TEXT, seconds REAL,
    unlearn_seconds REAL, version_before TEXT, version_after TEXT, metrics_before TEXT,
    metrics_after TEXT, data_sha256 TEXT, model_sha256 TEXT, purged TEXT, reason TEXT,
    requested_by TEXT, outside TEXT
);
"""


def test_a_format_2_ledger_is_upgraded_in_place_and_keeps_every_request(tmp_path):
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.executescript(FORMAT_2_REQUESTS + "INSERT INTO requests (id, users, received, status, "
                     "requested_by) VALUES ('r1', '[\"u1\"]', '2026-01-01', 'done', 'dpo');"
                     "PRAGMA user_version = 2;")
    db.close()
    ledger = Ledger.open(path)
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == FORMAT == 3
    old = ledger.request("r1")
    assert (old["users"], old["status"], old["requested_by"], old["due"]) == \
        (["u1"], "done", "dpo", None)
    # The new status and column are usable: a request that may wait is queued.
    ledger.record_request("r2", ["u2"], "e2urec", {}, {}, due="2026-02-01T00:00:00+00:00")
    with ledger.transaction() as tx:
        ledger.update_request(tx, "r2", status="queued")
    assert [r["id"] for r in ledger.queued()] == ["r2"] and ledger.unfinished() == []
