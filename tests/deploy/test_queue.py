"""The queue: requests the check cannot see alone wait, and are forgotten together.

On the test store (no reference models: the loss-threshold check decides) a
non-pilot user, or three of them, cannot be told from never-trained users, and
five together can (the group's ranking): measured, not assumed, by the store's
own check before each request.
"""

from __future__ import annotations

import sqlite3

from e2urec.cli import main
from e2urec.deploy.requests import forget
from e2urec.deploy.store import open_store
from tests.deploy.test_store import users_in
from tests.helpers import fails

QUIET = {"log": lambda _: None}


def test_requests_the_check_cannot_see_alone_wait_and_are_forgotten_together(store):
    with open_store(store) as handle:
        first = forget(handle, ["5", "6"], queue_days=30, **QUIET)
        assert first.status == "queued" and "queued until" in first.message
        waiting = handle.ledger.request(first.request_id)
        assert waiting["reason"].startswith("queued: no power")
        assert waiting["due"] > waiting["received"] and handle.ledger.forgotten() == {}
        assert handle.ledger.unfinished() == []  # waiting blocks no other request
        assert {"5", "6"} <= users_in(store / "data")

        second = forget(handle, ["8", "10", "13"], queue_days=30, **QUIET)
        ledger = handle.ledger
        batch = ledger.requests()[2]
        assert batch["users"] == ["5", "6", "8", "10", "13"]
        assert batch["requested_by"] == ("queue (the check can see them together): "
                                         "r0001, r0002")
        assert second.status == "done" and second.request_id == "r0002"
        forgotten = ledger.forgotten()
        assert set(forgotten) == {"5", "6", "8", "10", "13"}
        by = forgotten["5"]  # the batch, or its exact retry where it failed verification
        assert by in (batch["id"], "r0004")
        for rid in ("r0001", "r0002"):
            request = ledger.request(rid)
            assert request["status"] == "done"
            assert request["reason"].endswith(f"forgotten by request(s) {by}")
            assert request["version_after"] == ledger.current().id
    assert not {"5", "6", "8", "10", "13"} & users_in(store / "data")


def test_a_queued_request_past_due_is_forgotten_on_the_exact_path(store, capsys):
    argv = ["--threads", "1", "forget", "--store", str(store), "--users", "5",
            "--queue-days", "2"]
    assert main(argv) == 0
    assert "r0001: queued: request r0001 is queued until" in capsys.readouterr().out
    with sqlite3.connect(store / "ledger.sqlite") as db:  # two days pass
        db.execute("UPDATE requests SET due = '2026-01-01T00:00:00+00:00' WHERE id = 'r0001'")
    assert main(["deploy", "status", "--store", str(store)]) == 0  # waiting is consistent
    shown = capsys.readouterr().out
    assert "queued request r0001 (1 user(s)), due" in shown
    assert f"OVERDUE, run e2urec deploy flush --store {store}" in shown
    assert main(["--threads", "1", "deploy", "flush", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("r0002: done")
    ledger = open_store(store).ledger
    batch = ledger.request("r0002")
    assert batch["method"] == "retrain" and batch["requested_by"] == "queue (due: r0001): r0001"
    assert ledger.request("r0001")["status"] == "done" and ledger.forgotten() == {"5": "r0002"}
    assert main(["deploy", "flush", "--store", str(store)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_a_request_naming_a_queued_user_forgets_them_at_once(store):
    with open_store(store) as handle:
        assert forget(handle, ["5", "6"], queue_days=30, **QUIET).status == "queued"
        assert forget(handle, ["5"], "retrain", **QUIET).status == "done"
        assert handle.ledger.request("r0001")["status"] == "queued"  # 6 still waits
        assert forget(handle, ["6"], "retrain", **QUIET).status == "done"
        closed = handle.ledger.request("r0001")
        assert closed["status"] == "done"
        assert closed["reason"].endswith("forgotten by request(s) r0002, r0003")


def test_a_queued_request_can_be_abandoned(store, capsys):
    with open_store(store) as handle:
        assert forget(handle, ["5"], queue_days=30, **QUIET).status == "queued"
    assert main(["deploy", "abandon", "--store", str(store), "--request-id", "r0001",
                 "--reason", "withdrawn"]) == 0
    capsys.readouterr()
    with open_store(store) as handle:
        assert handle.ledger.request("r0001")["status"] == "abandoned"
        assert handle.ledger.queued() == []
        assert forget(handle, ["6"], "retrain", **QUIET).status == "done"
    assert "5" in users_in(store / "data")


def test_a_wait_outside_what_deletion_law_allows_is_refused_before_any_work(store, capsys):
    for days in ("0", "31", "-1"):
        fails(["forget", "--store", str(store), "--users", "5", "--queue-days", days],
              capsys, f"queue_days {float(days)}", "at most 30 days", unchanged=(store,))
