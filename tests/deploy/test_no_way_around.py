"""A store that cannot be fooled or blocked: each way found to end a request "done"
without forgetting, to bring a forgotten user back, or to jam later requests, replayed
through the real command (real processes, kills and files)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from e2urec.checkpoints.folders import read_meta
from e2urec.cli import main
from e2urec.deploy.requests import forget
from e2urec.deploy.store import open_store
from e2urec.deploy.verify import Verification, power, verdict
from tests.deploy.test_crash_and_concurrency import ENV, LENIENT, wait_for_line
from tests.deploy.test_store import users_in
from tests.helpers import fails, read_table, snapshot

# A step too small to move anything an auditor can see (the reproduction).
TINY_STEP = ["--method", "neggrad", "--option", "schedule.lr=1e-7"]


def cli(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "e2urec.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def user_measure(mia: float) -> dict:
    return {"rows": 20, "mia_auc": mia, "null_mean": 0.5, "null_sd": 0.05}


def measured(users: dict[str, float]) -> dict:
    return {"valid_auc": 0.7, "audit_users": 6, "_valid": (None, None),
            "users": {u: user_measure(v) for u, v in users.items()}}


def test_a_check_with_no_power_cannot_pass_an_approximate_method(monkeypatch):
    from e2urec.deploy import verify

    monkeypatch.setattr(verify, "paired_auc_se", lambda *a: 0.0)
    blind = measured({"7": 0.52})  # before: indistinguishable from never-trained users
    assert power(blind, Verification())["powered"] is False
    reason = verdict(blind, blind, Verification())
    assert reason.startswith("no power: before unlearning, the check could not tell user(s) "
                             "['7'] from never-trained users")
    assert verdict(blind, blind, Verification(), exact=True) is None  # exact: no power asked
    seen = measured({"7": 0.75})  # before: remembered, beyond the band
    assert power(seen, Verification()) == {"users": {"7": ["membership"]}, "group": [],
                                           "powered": True}
    assert verdict(seen, measured({"7": 0.5}), Verification()) is None
    assert "(remembered)" in verdict(seen, seen, Verification())


def test_a_step_too_small_never_ends_done_and_the_exact_path_says_why(store, capsys):
    before = snapshot(store / "versions", store / "data")
    code = main(["--threads", "1", "forget", "--store", str(store), "--users", "2", *TINY_STEP,
                 "--no-exact-retry"])
    out = capsys.readouterr().out
    assert code == 1 and "r0001: failed" in out, out
    assert "no power" in out or "did not move toward never-trained users" in out
    assert snapshot(store / "versions", store / "data") == before
    request = open_store(store).ledger.request("r0001")
    assert request["metrics_before"]["power"]["users"].keys() == {"2"}

    # With the retry (the default) the users are forgotten on the exact path, and the
    # ledger says why the approximate attempt could not end done.
    assert main(["--threads", "1", "forget", "--store", str(store), "--users", "2",
                 *TINY_STEP, "--mia-margin", "0.6"]) == 0
    capsys.readouterr()
    ledger = open_store(store).ledger
    first, retry = ledger.request("r0002"), ledger.request("r0003")
    assert first["status"] == "failed" and "retried on the exact path" in first["reason"]
    assert (retry["status"], retry["method"]) == ("done", "retrain")
    assert main(["deploy", "history", "--store", str(store)]) == 0
    rows = {r["request"]: r for r in read_table(capsys.readouterr().out, "request")}
    assert rows["r0002"]["power"] in ("0/1", "1/1")


def test_init_overwrite_refuses_the_weights_of_a_version_that_held_forgotten_users(
        store, served_model, store_data, tmp_path, capsys):
    from tests.deploy.test_store import TINY_SETS, TRAIN_SETS

    assert main(["--threads", "1", "forget", "--store", str(store), "--users", "2",
                 "--method", "retrain", "--mia-margin", "0.6"]) == 0
    capsys.readouterr()
    # The store's own data (no forgotten user in it) and the Original that held user 2.
    data = Path(shutil.copytree(store / "data", tmp_path / "data"))
    fails(["deploy", "init", "--original", str(served_model), "--data", str(data),
           "--store", str(store), "--overwrite", *TINY_SETS, *TRAIN_SETS], capsys,
          "has the weights of version v0000", "held user(s) ['2']", unchanged=(store,))
    assert main(["deploy", "status", "--store", str(store)]) == 0


def test_forgetting_audit_users_never_jams_later_requests(store, capsys):
    manifest = json.loads((store / "data" / "manifest.json").read_text())
    audit = manifest["holdout_user_ids"]["audit"]
    needed = Verification().min_audit_users
    assert len(audit) >= needed
    # Forget audit users until fewer than verification needs are left.
    assert main(["forget", "--store", str(store), "--users",
                 *audit[:len(audit) - needed + 1]]) == 0
    err = capsys.readouterr().err
    assert f"{needed - 1} never-trained (audit) user(s) left to verify against" in err
    assert main(["deploy", "status", "--store", str(store)]) == 0
    assert f"audit) users left to verify against: {needed - 1}" in capsys.readouterr().out
    # An approximate request cannot be verified: it ends done on the exact path.
    assert main(["--threads", "1", "forget", "--store", str(store), "--users", "2",
                 *TINY_STEP]) == 0
    out = capsys.readouterr().out
    assert "too few held-out users left to verify an approximate deletion" in out
    assert "retried on the exact path as request r0003" in out and "r0003: done" in out
    assert "2" not in users_in(store / "data")


def test_a_method_error_after_recording_leaves_no_rows_and_the_exact_path_finishes(
        store, capsys):
    manifest = json.loads((store / "data" / "manifest.json").read_text())
    probe = manifest["holdout_user_ids"]["probe"]
    assert main(["forget", "--store", str(store), "--users", *probe]) == 0  # no model held them
    capsys.readouterr()
    # The stop rule reads probe users; none are left, so the method stops with an error.
    # The power rule is off: on this tiny store it would stop the request before the
    # method runs, and the error under test comes after.
    with open_store(store) as handle:
        outcome = forget(handle, ["2"], "neggrad", verification=Verification(
            power=False, mia_margin=0.6), log=lambda _: None)
    assert outcome.status == "done" and "the method stopped: " in outcome.message, outcome
    ledger = open_store(store).ledger
    assert ledger.request("r0002")["status"] == "failed"
    assert ledger.request("r0003")["status"] == "done"
    assert not any((store / "work").iterdir()) if (store / "work").exists() else True


def kill_then_rerun(store: Path, request_id: str, extra: list[str], *lines: str
                    ) -> tuple[str, str]:
    """Send a one-user request, kill -9 it once its log has shown ``lines`` (in order),
    then send the same request id again; the rerun's output and log."""
    first = cli("--threads", "1", "forget", "--store", str(store), "--users", "2",
                "--request-id", request_id, *extra)
    for line in lines:
        wait_for_line(first, line)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    rerun = cli("--threads", "1", "forget", "--store", str(store), "--users", "2",
                "--request-id", request_id)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    return out, err


def test_a_killed_request_rerun_takes_the_same_path_as_an_uninterrupted_one(store):
    # Killed once recorded: the rerun measures, finds no power on this tiny store, fails
    # the approximate attempt and retries on the exact path, as an uninterrupted run does.
    out, _ = kill_then_rerun(store, "k1", [*TINY_STEP, "--mia-margin", "0.6"],
                             "recorded as pending")
    assert "retried on the exact path as request r0002" in out and "r0002: done" in out
    ledger = open_store(store).ledger
    assert ledger.request("k1")["status"] == "failed"
    assert ledger.forgotten() == {"2": "r0002"}


def test_the_callers_id_of_a_retried_request_finishes_the_retry(store):
    _, err = kill_then_rerun(store, "mine", ["--method", "neggrad", "--option",
                                             "schedule.lr=1e-30", "--mia-margin", "0.6"],
                             "retrying on the exact path", "unlearning")
    assert "retried as request r0002, which is unfinished; finishing it" in err
    assert open_store(store).ledger.forgotten() == {"2": "r0002"}


def test_a_killed_rebuild_leaves_no_model_behind(tmp_path, ensemble_store, capsys):
    process = cli("--threads", "1", "deploy", "verify", "--store", str(ensemble_store),
                  "--rebuild")
    rebuild = ensemble_store / "work" / ".rebuild"
    deadline = time.monotonic() + 120
    while not any(rebuild.rglob("*.safetensors")) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert rebuild.exists()
    assert main(["deploy", "status", "--store", str(ensemble_store)]) == 0
    out = capsys.readouterr().out
    assert "purged now: work/.rebuild (stale scratch)" in out, out
    assert not rebuild.exists()


def test_an_emptied_shard_leaves_a_valid_ensemble_and_rebuild(ensemble_store, store_data,
                                                              capsys):
    shards = json.loads((store_data / "shards.json").read_text())["user_balanced"]
    held = sorted(u for u, s in shards.items() if s == 0)
    other = next(u for u, s in sorted(shards.items()) if s == 1)
    assert main(["--threads", "1", "forget", "--store", str(ensemble_store), "--users",
                 *held]) == 0
    capsys.readouterr()
    current = open_store(ensemble_store).current_dir()
    assert read_meta(current)["members"] == ["shard_1"]
    assert main(["--threads", "1", "deploy", "verify", "--store", str(ensemble_store),
                 "--rebuild"]) == 0
    assert capsys.readouterr().out.startswith("exact: version v0001's 1 shard models")
    assert main(["--threads", "1", "forget", "--store", str(ensemble_store), "--users",
                 other]) == 0
    assert "r0002: done" in capsys.readouterr().out
    assert not (ensemble_store / "work").exists() or not any((ensemble_store / "work").iterdir())


def test_small_things_are_one_clear_line(store, tmp_path, served_model, store_data, capsys):
    from tests.deploy.test_store import TINY_SETS, TRAIN_SETS

    fails(["forget", "--store", str(store), "--users", "2", "--min-audit-users", "1"], capsys,
          "min_audit_users 1", unchanged=(store,))
    for where in (".", ".."):
        fails(["deploy", "init", "--original", str(served_model), "--data", str(store_data),
               "--store", where, "--overwrite", *TINY_SETS, *TRAIN_SETS], capsys,
              "does not name a folder of its own")
    link = tmp_path / "link"
    os.symlink(store, link)
    fails(["deploy", "init", "--original", str(served_model), "--data", str(store_data),
           "--store", str(link), "--overwrite", *TINY_SETS, *TRAIN_SETS], capsys,
          "is a symbolic link", unchanged=(store,))
    # An abandoned request's id again: it stays abandoned, the user not forgotten.
    with open_store(store) as handle:
        handle.ledger.record_request("ab", ["2"], "retrain", {}, {}, None)
    assert main(["deploy", "abandon", "--store", str(store), "--request-id", "ab",
                 "--reason", "asked to stop"]) == 0
    assert main(["forget", "--store", str(store), "--users", "2", "--request-id", "ab"]) == 0
    assert "ab: already abandoned" in capsys.readouterr().out
    assert open_store(store).ledger.forgotten() == {}


def test_status_into_a_closed_pipe_is_quiet(store):
    shell = subprocess.run(f"{sys.executable} -m e2urec.cli deploy history --store {store} "
                           f"--json | head -c 1", shell=True, capture_output=True, text=True,
                           env=ENV)
    assert "Traceback" not in shell.stderr and "BrokenPipe" not in shell.stderr


def test_a_rebuild_takes_the_stores_lock(ensemble_store):
    holder = cli("--threads", "1", "forget", "--store", str(ensemble_store), "--users", "2",
                 *LENIENT)
    wait_for_line(holder, "unlearning")
    holder.send_signal(signal.SIGSTOP)
    try:
        clash = subprocess.run([sys.executable, "-m", "e2urec.cli", "deploy", "verify",
                                "--store", str(ensemble_store), "--rebuild"],
                               capture_output=True, text=True, env=ENV, timeout=120)
        assert clash.returncode == 2 and "is in use by another request" in clash.stderr
    finally:
        holder.send_signal(signal.SIGCONT)
    assert holder.wait(timeout=300) == 0

