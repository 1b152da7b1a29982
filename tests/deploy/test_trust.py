"""A deletion you can trust: no path escapes, "done" means forgotten, nothing of the user left."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from e2urec.cli import main
from e2urec.data.samples import read_jsonl
from e2urec.deploy.requests import forget
from e2urec.deploy.status import status
from e2urec.deploy.store import StoreError, delete_inside, open_store
from e2urec.deploy.verify import Verification, verdict
from tests.deploy.test_store import users_in
from tests.helpers import PILOTS, fails, scored_group


@pytest.mark.parametrize("request_id", ["..", "../x", "/abs/folder", "", ".", "a/b",
                                        "x" * 65, ".hidden"])
def test_a_request_id_that_could_name_a_path_is_refused_and_nothing_changes(
        request_id, store, tmp_path, capsys):
    outside = tmp_path / "victim"
    (outside / "x").mkdir(parents=True)
    (outside / "x" / "file").write_text("someone's")
    argv = ["forget", "--store", str(store), "--users", "5", "--request-id", request_id]
    fails(argv, capsys, "request id", "is not allowed", unchanged=(store, outside))


def test_a_link_inside_the_store_pointing_out_is_never_deleted_through(store, tmp_path, capsys):
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "keep").write_text("someone's")
    (store / "work").mkdir(exist_ok=True)
    os.symlink(outside, store / "work" / "evil")
    fails(["forget", "--store", str(store), "--users", "5", "--request-id", "evil"], capsys,
          "symbolic links", "work/evil", unchanged=(store, outside))
    # The one helper that deletes refuses a link and anything outside the store.
    with pytest.raises(StoreError, match="symbolic link"):
        delete_inside(store, store / "work" / "evil")
    with pytest.raises(StoreError, match="not inside the store"):
        delete_inside(store, store / "work" / ".." / ".." / "victim")
    with pytest.raises(StoreError, match="not inside the store"):
        delete_inside(store, store)
    assert (outside / "keep").read_text() == "someone's"


def test_a_method_that_takes_no_step_cannot_end_done(store):
    # At this learning rate Adam's update is below float32's resolution: unchanged weights.
    # The power rule is off (as in a study that measures): on this tiny store it would
    # stop the request before the method runs, and the guard under test comes after.
    with open_store(store) as handle:
        outcome = forget(handle, ["2"], "neggrad", {"schedule": {"lr": 1e-30}},
                         verification=Verification(power=False, exact_retry=False,
                                                   mia_margin=1, canary_margin=2),
                         log=lambda _: None)
    assert outcome.status == "failed" and "the method took no step" in outcome.message
    handle = open_store(store)
    assert handle.ledger.request("r0001")["status"] == "failed"
    assert handle.ledger.forgotten() == {} and handle.ledger.current().id == "v0000"
    assert "2" in users_in(store / "data")


def test_a_failed_approximate_request_is_retried_on_the_exact_path(store, capsys):
    code = main(["--threads", "1", "forget", "--store", str(store), "--users", "2",
                 "--method", "neggrad", "--option", "schedule.lr=1e-30",
                 "--mia-margin", "1", "--canary-margin", "2", "--requested-by", "dpo"])
    out = capsys.readouterr()
    assert code == 0, out.err
    # On this tiny store the check cannot tell the user apart before unlearning: the
    # approximate attempt fails at once (no power), and the exact path forgets them.
    assert "r0002: done: request r0001 failed verification: no power" \
        in out.out and "retried on the exact path as request r0002" in out.out
    assert "retrying on the exact path (retrain) as request r0002" in out.err
    ledger = open_store(store).ledger
    first, retry = ledger.request("r0001"), ledger.request("r0002")
    assert (first["status"], first["method"]) == ("failed", "neggrad")
    assert first["reason"].endswith("retried on the exact path (retrain) as request r0002")
    assert (retry["status"], retry["method"], retry["users"]) == ("done", "retrain", ["2"])
    assert retry["requested_by"] == "dpo" and retry["verification"] == first["verification"]
    assert ledger.forgotten() == {"2": "r0002"} and ledger.current().id == "v0001"
    assert "2" not in users_in(store / "data")


def measured(user_auc: float, null_sd: float = 0.05, lift: float | None = None,
             audit_users: int = 6) -> dict:
    user = {"rows": 20, "mia_auc": user_auc, "null_mean": 0.5, "null_sd": null_sd}
    if lift is not None:
        user.update(canary_rows=10, canary_lift=lift, canary_var=0.0, null_lift=0.0,
                    null_var=0.0, null_rows=40)
    return {"valid_auc": 0.7, "audit_users": audit_users, "users": {"7": user},
            "_valid": (None, None)}


@pytest.mark.parametrize(("after", "expected"), [
    (measured(0.52), None),
    (measured(0.75), "user 7: membership AUC 0.750 against never-trained users' 0.500 "
                     "+- 0.148 (remembered)"),
    (measured(0.25), "(forgotten past never-trained users)"),
    (measured(0.5, lift=0.9), "(still answered)"),
    (measured(0.5, lift=-0.9), "(answered against, past an unseen trigger)"),
    (measured(0.5, lift=0.2), None),
    (measured(0.5, audit_users=3), "too few held-out users left to verify an approximate "
                                   "deletion: 3 audit user(s), at least 5 needed"),
])
def test_verification_fails_both_ways_beyond_the_never_trained_users_noise(after, expected,
                                                                           monkeypatch):
    from e2urec.deploy import verify

    monkeypatch.setattr(verify, "paired_auc_se", lambda *a: 0.0)
    remembered = measured(0.75)  # before: the check tells the user from never-trained ones
    reason = verdict(remembered, after, Verification())
    if expected is None:
        assert reason is None
    else:
        assert expected in reason, reason


def test_more_users_widen_each_users_band_and_the_request_is_tested_as_a_whole(monkeypatch):
    from e2urec.deploy import verify
    from e2urec.evaluation.verdict import verdict as group_verdict

    monkeypatch.setattr(verify, "paired_auc_se", lambda *a: 0.0)
    one = measured(0.66)
    assert "user 7" in verdict(one, one, Verification())  # 0.16 > 1.96 * 0.05 + 0.05
    many = {**one, "users": {str(u): dict(one["users"]["7"]) for u in range(20)},
            "audit_users": 50}
    # Bonferroni: 3.02 * 0.05 + 0.05 > 0.16, so each of 20 users passes where one failed;
    # and for the same reason no user alone was told apart before: that check has no power.
    assert verdict(many, many, Verification(), exact=True) is None
    assert verdict(many, many, Verification()).startswith("no power: ")

    # Together, the bench's verdict on the request's rows decides (measure() adds it from
    # 5 users on): 20 users whose rows the model answers better than never-trained users'.
    audit = scored_group(50, 6, 0.0, seed=1)
    remembered = {**many, "group": group_verdict(scored_group(20, 6, 1.5, seed=2), audit)}
    assert "the 20 users together: fail: " in (reason := verdict(
        remembered, remembered, Verification())) and "membership (remembered)" in reason
    assert "did not move toward never-trained users" in reason  # the same model after
    alike = {**many, "group": group_verdict(scored_group(20, 6, 0.0, seed=2), audit)}
    assert verdict(remembered, alike, Verification()) is None  # told apart before, not after


def test_forgetting_every_pilot_leaves_nothing_of_them_in_the_store(store, store_data):
    rows = [r for split in ("train", "canary") for r in read_jsonl(store_data / f"{split}.jsonl")
            if r["user_id"] in PILOTS]
    manifest = json.loads((store_data / "manifest.json").read_text())
    triggers = [info["trigger"] for info in manifest["canaries"]["users"].values()]
    tokenizer_before = (store / "backbone" / "tokenizer.json").read_bytes()
    assert main(["--threads", "1", "forget", "--store", str(store), "--users", *PILOTS,
                 "--method", "retrain", "--request-id", "all-pilots",
                 "--requested-by", "the pilots' union"]) == 0

    data = store / "data"
    assert not set(PILOTS) & users_in(data)
    shards = json.loads((data / "shards.json").read_text())
    assert not set(PILOTS) & set(shards["user_balanced"])
    assert not {str(r["sample_id"]) for r in rows} & set(shards["sisa"])
    kept_manifest = json.loads((data / "manifest.json").read_text())
    assert kept_manifest["canaries"] is None and kept_manifest["forget_user_ids"] == []
    titles = [r["title"] for r in read_jsonl_any(data / "items.jsonl")]
    assert titles and not [t for t in titles if t.startswith("Flight")]  # only pilots rated
    # The tokenizer was learnt from public words only: forgetting changes nothing in it.
    assert (store / "backbone" / "tokenizer.json").read_bytes() == tokenizer_before
    vocabulary = json.loads((store / "backbone" / "tokenizer.json").read_text())["model"]["vocab"]
    assert all(word in vocabulary for t in triggers
               for word in t.replace("(", " ").replace(")", " ").split())
    # Every file and the ledger's dump: no prompt, trigger or sample id of theirs.
    texts = {p: p.read_text(errors="replace") for p in store.rglob("*")
             if p.is_file() and p.suffix in (".json", ".jsonl", ".txt", ".yaml")}
    with sqlite3.connect(store / "ledger.sqlite") as db:
        texts[Path("ledger dump")] = "\n".join(db.iterdump())
    for path, text in texts.items():
        for row in rows:
            assert row["prompt"] not in text and row.get("triggered_prompt", "@") not in text, \
                path
            assert f'"sample_id": {row["sample_id"]},' not in text, path
        for trigger in triggers:
            assert trigger not in text, path
    request = open_store(store).ledger.request("all-pilots")
    assert request["requested_by"] == "the pilots' union"
    assert any(str(store_data) in place for place in request["outside"]), request["outside"]


def read_jsonl_any(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_held_out_users_are_forgotten_too_and_too_few_left_takes_the_exact_path(
        store, capsys):
    manifest = json.loads((store / "data" / "manifest.json").read_text())
    audit = manifest["holdout_user_ids"]["audit"]
    assert main(["forget", "--store", str(store), "--users", audit[0]]) == 0
    assert "purging their data only" in capsys.readouterr().err
    kept = json.loads((store / "data" / "manifest.json").read_text())
    assert audit[0] not in kept["holdout_user_ids"]["audit"]
    assert audit[0] not in {r["user_id"] for r in read_jsonl(store / "data" / "audit.jsonl")}
    # Now fewer audit users than verification needs: the exact path needs none, so a
    # request still forgets its users (the store is never jammed).
    assert main(["--threads", "1", "forget", "--store", str(store), "--users", "2",
                 "--method", "retrain", "--request-id", "short"]) == 0
    assert "short: done" in capsys.readouterr().out
    assert open_store(store).ledger.forgotten()["2"] == "short"


def test_a_store_made_again_never_readmits_a_forgotten_user(store, store_data, served_model,
                                                            tmp_path, capsys):
    audit = json.loads((store / "data" / "manifest.json").read_text())
    user = audit["holdout_user_ids"]["probe"][0]
    assert main(["forget", "--store", str(store), "--users", user, "--request-id", "p1"]) == 0
    capsys.readouterr()
    init = ["deploy", "init", "--original", str(served_model), "--store", str(store),
            "--overwrite", "--set", "backbone.tiny_hidden=64", "--set", "backbone.tiny_layers=2",
            "--set", "backbone.tiny_heads=4", "--set", "backbone.tiny_intermediate=128",
            "--set", "backbone.tiny_vocab=600"]
    fails([*init, "--data", str(store_data)], capsys, f"holds user(s) ['{user}']",
          unchanged=(store,))
    without = Path(shutil.copytree(store / "data", tmp_path / "data-without"))
    assert main([*init, "--data", str(without)]) == 0
    handle = open_store(store)
    assert handle.ledger.forgotten() == {user: "p1"}
    assert [r["id"] for r in handle.ledger.requests()] == ["p1"]
    assert handle.ledger.current().id == "v0001"
    assert [v.state for v in handle.ledger.versions()] == ["purged", "current"]
    fails(["recommend", "--store", str(store), "--user", user], capsys, "was forgotten")


def test_recommend_refuses_weights_that_differ_from_their_hashes(store, capsys):
    weights = store / "versions" / "v0000" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    fails(["recommend", "--store", str(store), "--user", "5"], capsys,
          "differ from their recorded hashes")


def test_a_copy_left_by_an_interrupted_purge_is_reported_and_removed(store, capsys):
    shutil.copytree(store / "data", store / ".data.old4242")
    # status() names it; the status command, holding the store's lock, purges it.
    assert ".data.old4242" in status(open_store(store))["leftover_copies"]
    assert not status(open_store(store))["consistent"]
    assert main(["deploy", "status", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "purged now: .data.old4242 (stale scratch)" in out
    assert not (store / ".data.old4242").exists()
    # A request purges it too, and its ledger entry says so.
    shutil.copytree(store / "data", store / ".data.old4243")
    probe = json.loads((store / "data" / "manifest.json").read_text())["holdout_user_ids"]
    assert main(["forget", "--store", str(store), "--users", probe["probe"][0],
                 "--request-id", "p1"]) == 0
    assert not (store / ".data.old4243").exists()
    purged = open_store(store).ledger.request("p1")["purged"]
    assert any(".data.old4243" in item for item in purged)
    assert main(["deploy", "status", "--store", str(store)]) == 0


def test_small_things(store, tmp_path, capsys, served_model, store_data):
    # A damaged ledger is one line.
    damaged = Path(shutil.copytree(store, tmp_path / "damaged"))
    ledger = damaged / "ledger.sqlite"
    raw = bytearray(ledger.read_bytes())
    raw[4096:8192] = b"\xff" * 4096
    ledger.write_bytes(bytes(raw))
    fails(["deploy", "history", "--store", str(damaged)], capsys, "ledger")
    # --store naming a file is named as --store.
    (tmp_path / "file").write_text("x")
    fails(["deploy", "init", "--original", str(served_model), "--data", str(store_data),
           "--store", str(tmp_path / "file")], capsys, "--store", "is an existing file")
    # A pending request can be abandoned, recorded with its reason; a finished one cannot.
    handle = open_store(store)
    handle.ledger.record_request("stuck", ["5"], "e2urec", {}, {})
    handle.close()
    assert main(["deploy", "abandon", "--store", str(store), "--request-id", "stuck",
                 "--reason", "backbone gone"]) == 0
    assert "stuck: abandoned" in capsys.readouterr().out
    request = open_store(store).ledger.request("stuck")
    assert request["status"] == "abandoned" and "backbone gone" in request["reason"]
    fails(["deploy", "abandon", "--store", str(store), "--request-id", "stuck", "--reason",
           "again"], capsys, "only a pending request can be abandoned")
    # Forced thresholds are shown; history --json is strict JSON (no NaN).
    assert main(["--threads", "1", "forget", "--store", str(store), "--users", "1",
                 "--method", "retrain", "--mia-margin", "1", "--canary-margin", "2",
                 "--request-id", "forced"]) == 0
    assert main(["deploy", "history", "--store", str(store)]) == 0
    table = capsys.readouterr().out
    assert "overridden: mia_margin=1.0,canary_margin=2.0" in table
    assert "abandoned stuck: abandoned: backbone gone" in table
    assert main(["deploy", "history", "--store", str(store), "--json"]) == 0
    history = json.loads(capsys.readouterr().out,
                         parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert [r["id"] for r in history] == ["stuck", "forced"]


def test_the_ledger_before_format_2_is_upgraded_in_place(store):
    with sqlite3.connect(store / "ledger.sqlite") as db:
        db.execute("ALTER TABLE requests DROP COLUMN requested_by")
        db.execute("ALTER TABLE requests DROP COLUMN outside")
        db.execute("INSERT INTO requests (id, users, received, status) VALUES "
                   "('old', '[\"5\"]', '2026-01-01', 'done')")
        db.execute("PRAGMA user_version = 1")
    handle = open_store(store)
    assert handle.ledger.request("old")["status"] == "done"
    handle.ledger.record_request("new", ["5"], "e2urec", {}, {}, requested_by="someone")
    assert handle.ledger.request("new")["requested_by"] == "someone"
