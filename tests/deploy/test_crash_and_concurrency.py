"""kill -9 during `e2urec forget`, and two requests on one store at once (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2urec.deploy.status import status
from e2urec.deploy.store import open_store
from tests.deploy.test_store import users_in

pytestmark = pytest.mark.slow

ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}


# Verification is not what these tests are about: a retrained candidate always passes.
LENIENT = ["--mia-margin", "1", "--canary-margin", "2", "--max-valid-auc-drop", "1"]


def forget_process(store: Path, user: str, request_id: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "e2urec.cli", "--threads", "1", "forget", "--store", str(store),
         "--users", user, "--method", "retrain", "--request-id", request_id, *LENIENT, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 120) -> str:
    """Read the process's log until a line holds ``text``; return that line."""
    deadline = time.monotonic() + timeout
    for line in process.stderr:
        if text in line:
            return line
        assert time.monotonic() < deadline, f"no line with {text!r} in {timeout}s"
    raise AssertionError(f"the process ended without logging {text!r}")


def assert_forgotten_once(store: Path, user: str, request_id: str) -> None:
    handle = open_store(store)
    ledger = handle.ledger
    request = ledger.request(request_id)
    assert request["status"] == "done"
    assert ledger.forgotten() == {user: request_id}
    assert [v.state for v in ledger.versions()] == ["purged", "current"]
    assert sorted(p.name for p in (store / "versions").iterdir()) == [ledger.current().id]
    assert user not in users_in(store / "data")
    report = status(handle)
    assert report["consistent"] and not report["unfinished"], report
    assert not report["unrecorded_versions"] and not report["leftover_work"], report
    handle.close()


# Moments to kill at: just recorded; while retraining; with the new version current and the
# purge under way (the log line is written right before the purge starts).
KILL_AFTER = ["recorded as pending", "unlearning", "is current; purging"]


@pytest.mark.parametrize("moment", KILL_AFTER)
def test_kill_9_at_any_moment_leaves_a_consistent_store_and_a_rerun_completes(moment, store):
    process = forget_process(store, "2", "req-k")
    wait_for_line(process, moment)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    checker = subprocess.run([sys.executable, "-m", "e2urec.cli", "deploy", "status",
                              "--store", str(store)], capture_output=True, text=True, env=ENV)
    report = status(open_store(store))
    assert not report["problems"], report  # current version whole, data as recorded
    # A kill inside a data copy leaves its temporary folder: reported, never called consistent.
    copies = report["leftover_copies"]
    assert checker.returncode == (1 if copies else 0), checker.stdout + checker.stderr
    assert ("NOT consistent" in checker.stdout) == bool(copies)
    assert all(copy in checker.stdout for copy in copies)
    request = open_store(store).ledger.request("req-k")
    if request["status"] != "done":  # the kill can land after the last step
        assert request["status"] in ("pending", "applied")
        assert "unfinished request req-k" in checker.stdout

    rerun = forget_process(store, "2", "req-k")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "req-k: done" in out or "already done" in out
    assert_forgotten_once(store, "2", "req-k")  # leftover copies included: none remain
    done = open_store(store).ledger.request("req-k")
    assert all(any(copy in item for item in done["purged"]) for copy in copies), done


def test_two_requests_at_once_one_fails_fast_and_one_waits(store):
    first = forget_process(store, "2", "req-1")
    wait_for_line(first, "unlearning")
    first.send_signal(signal.SIGSTOP)  # paused mid-request, holding the store's lock
    try:
        clash = forget_process(store, "4", "req-2")
        _, err = clash.communicate(timeout=120)
        assert clash.returncode == 2, err
        assert "is in use by another request" in err and "--wait" in err
        waiting = forget_process(store, "4", "req-2", "--wait")
        same = forget_process(store, "2", "req-1", "--wait")  # the first request, sent twice
        wait_for_line(waiting, "waiting")
        wait_for_line(same, "waiting")
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0
    out_waiting, err_waiting = waiting.communicate(timeout=300)
    out_same, _ = same.communicate(timeout=300)
    assert waiting.returncode == 0, out_waiting + err_waiting
    assert "req-2: done" in out_waiting
    assert same.returncode == 0 and "already done" in out_same

    ledger = open_store(store).ledger
    assert [(r["id"], r["status"]) for r in ledger.requests()] == [("req-1", "done"),
                                                                  ("req-2", "done")]
    assert ledger.forgotten() == {"2": "req-1", "4": "req-2"}
    assert [v.state for v in ledger.versions()] == ["purged", "purged", "current"]
    assert {"2", "4"}.isdisjoint(users_in(store / "data"))
