"""The store's auditor: its reference models, their stated power, their upkeep."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from e2urec.cli import main
from e2urec.deploy.auditor import AUDITOR_DIR, holding, power_for
from e2urec.deploy.requests import RETRIED
from e2urec.deploy.status import status
from e2urec.deploy.store import init_store, open_store, read_info
from e2urec.fileio import folder_sha256
from e2urec.training.references import REFERENCES_FILE
from tests.deploy.conftest import STORE_TRAIN
from tests.helpers import fails, tiny_backbone

PILOT = "2"  # a forgotten pilot of store_data with training rows
# The exact path on tiny data: this file tests the references' upkeep, not the verdict.
PASS_ANYWAY = ["--lira-margin", "100", "--mia-margin", "1", "--canary-margin", "2"]


@pytest.fixture(scope="module")
def audited_template(tmp_path_factory, served_model, store_data) -> Path:
    root = tmp_path_factory.mktemp("audited") / "store"
    init_store(served_model, store_data, root, tiny_backbone(), STORE_TRAIN).close()
    return root


@pytest.fixture
def audited(tmp_path, audited_template) -> Path:
    return Path(shutil.copytree(audited_template, tmp_path / "store"))


def references(root: Path) -> dict:
    return json.loads((root / AUDITOR_DIR / REFERENCES_FILE).read_text())


def test_init_trains_references_of_the_stores_own_and_states_their_power(audited, capsys):
    record = references(audited)
    assert record["count"] == 4 and sorted(p.name for p in (audited / AUDITOR_DIR).iterdir()
                                           if p.is_dir()) == ["ref_0", "ref_1", "ref_2", "ref_3"]
    # every user, trained or never trained, is in exactly half of them
    assert {len(ks) for ks in record["assignment"].values()} == {2}
    assert PILOT in record["trained_users"]
    power = read_info(audited)["auditor"]["power"]
    assert set(power["by_size"]) == {"1", "2", "3", "4", "5"}
    assert all(0 <= p <= 1 for p in power["by_size"].values())
    assert power["users"] == len(record["trained_users"])
    assert main(["deploy", "status", "--store", str(audited)]) == 0
    assert "auditor: 4 reference models" in capsys.readouterr().out


def test_stated_power_by_request_size():
    stated = {"by_size": {"1": 0.1, "2": 0.3, "5": 0.9}}
    assert power_for(stated, 1) == 0.1
    assert power_for(stated, 40) == 0.9  # larger requests: the largest size stated
    assert power_for(stated, 3) == 0.9  # a size not stated: the largest's
    assert power_for(None, 1) is None and power_for({"by_size": {}}, 1) is None


def test_a_request_is_verified_user_by_user_against_the_references(audited, capsys):
    assert main(["--threads", "1", "forget", "--store", str(audited), "--users", PILOT,
                 "--method", "retrain", "--request-id", "r1", *PASS_ANYWAY]) == 0
    capsys.readouterr()
    request = open_store(audited).ledger.request("r1")
    for measured in (request["metrics_before"], request["metrics_after"]):
        user = measured["users"][PILOT]
        # the reference-model score decides; the loss-threshold AUC stays as a column
        assert {"lira", "lira_audit_users", "mia_auc"} <= set(user)
        assert user["lira_audit_users"] >= 4


def test_a_purge_trains_again_every_reference_that_held_the_user(audited, capsys):
    before = references(audited)
    held = before["assignment"][PILOT]
    hashes = {k: folder_sha256(audited / AUDITOR_DIR / f"ref_{k}") for k in range(4)}
    assert main(["--threads", "1", "forget", "--store", str(audited), "--users", PILOT,
                 "--method", "retrain", "--request-id", "r1", *PASS_ANYWAY]) == 0
    log = capsys.readouterr().err
    after = references(audited)
    for k in range(4):
        changed = folder_sha256(audited / AUDITOR_DIR / f"ref_{k}") != hashes[k]
        assert changed == (k in held), k
    # no trace of the user in the auditor's record; the upkeep's cost stated
    assert PILOT not in after["assignment"] and PILOT not in after["trained_users"]
    assert sorted(u["reference"] for u in after["upkeep"]) == held
    assert all(u["seconds"] > 0 for u in after["upkeep"])
    purged = open_store(audited).ledger.request("r1")["purged"]
    assert sum("trained again without 1 forgotten user" in p for p in purged) == len(held)
    assert f"reference {held[0]}: trained again" in log
    assert status(open_store(audited))["consistent"]


def test_a_reference_still_holding_a_forgotten_user_is_a_problem(audited, tmp_path, capsys):
    kept = Path(shutil.copytree(audited / AUDITOR_DIR, tmp_path / "kept"))
    assert main(["--threads", "1", "forget", "--store", str(audited), "--users", PILOT,
                 "--method", "retrain", "--request-id", "r1", *PASS_ANYWAY]) == 0
    capsys.readouterr()
    shutil.rmtree(audited / AUDITOR_DIR)
    shutil.copytree(kept, audited / AUDITOR_DIR)  # as if the purge had not reached them
    report = status(open_store(audited))
    held = holding(references(audited), {PILOT})
    assert held and not report["consistent"]
    assert [p for p in report["problems"] if "holds forgotten user(s) ['2']" in p]
    fails(["forget", "--store", str(audited), "--users", "5", "--request-id", "r2"], capsys,
          "not consistent", "reference")


def test_an_approximate_request_without_power_is_not_run_and_takes_the_exact_path(
        audited, capsys):
    # alpha this small: no test can tell anyone apart, so nothing can show a deletion
    assert main(["--threads", "1", "forget", "--store", str(audited), "--users", PILOT,
                 "--method", "neggrad", "--request-id", "a1", "--alpha", "1e-12",
                 *PASS_ANYWAY]) == 0
    capsys.readouterr()
    ledger = open_store(audited).ledger
    first = ledger.request("a1")
    assert first["status"] == "failed" and first["reason"].startswith("no power")
    assert "the auditor tells a request of this size apart" in first["reason"]
    assert first["metrics_after"] == {} and first["unlearn_seconds"] is None  # never run
    retry = ledger.request(RETRIED.search(first["reason"]).group(1))
    assert retry["method"] == "retrain" and retry["status"] == "done"


def test_init_refuses_a_reference_count_it_cannot_split_in_halves(tmp_path, served_model,
                                                                  store_data, capsys):
    root = tmp_path / "store"
    fails(["deploy", "init", "--original", str(served_model), "--data", str(store_data),
           "--store", str(root), "--references", "3"], capsys, "references 3", "even")
    assert not root.exists()


def test_an_ensemble_store_takes_no_references(tmp_path, store_data, capsys):
    root = tmp_path / "store"
    fails(["deploy", "init", "--method", "sisa", "--shards", "2", "--data", str(store_data),
           "--store", str(root), "--references", "4"], capsys, "--references goes with "
          "--original")
    assert not root.exists()
