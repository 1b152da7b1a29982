"""The store's clean teacher: user-sharded models for E2URec's shards path, kept free of
every forgotten user across requests in sequence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from e2urec.cli import main
from e2urec.deploy.status import status
from e2urec.deploy.store import init_store, open_store, read_info
from e2urec.deploy.teacher import TEACHER_DIR, TEACHER_FILE, holding
from e2urec.fileio import folder_sha256
from e2urec.training.shards import member_name
from tests.deploy.conftest import STORE_TRAIN
from tests.helpers import fails, tiny_backbone

FIRST, SECOND = "2", "3"  # forgotten pilots of store_data with training rows
SHARDS_PATH = ["--method", "e2urec", "--option", "forget_teacher=shards",
               "--option", "student=full", "--option", "stop.kind=plateau"]
# Tiny data: this file tests the teacher's upkeep, not the verdict.
PASS_ANYWAY = ["--mia-margin", "1", "--canary-margin", "2"]


@pytest.fixture(scope="module")
def taught_template(tmp_path_factory, served_model, store_data) -> Path:
    root = tmp_path_factory.mktemp("taught") / "store"
    init_store(served_model, store_data, root, tiny_backbone(), STORE_TRAIN, references=0,
               teacher=True).close()
    return root


@pytest.fixture
def taught(tmp_path, taught_template) -> Path:
    return Path(shutil.copytree(taught_template, tmp_path / "taught"))


def record(root: Path) -> dict:
    return json.loads((root / TEACHER_DIR / TEACHER_FILE).read_text())


def member_hashes(root: Path) -> dict[int, dict[str, str]]:
    return {k: folder_sha256(root / TEACHER_DIR / member_name(k)) for k in range(2)}


def test_two_requests_in_a_row_each_leave_a_teacher_that_holds_no_forgotten_user(
        taught, capsys):
    assert read_info(taught)["teacher"]["members"] == 2
    first_holder = record(taught)["assignment"][FIRST]
    hashes = member_hashes(taught)
    # The first request forgets a user by the exact path; its purge trains again the member
    # that held them, and only that one.
    assert main(["--threads", "1", "forget", "--store", str(taught), "--users", FIRST,
                 "--method", "retrain", "--request-id", "r1", *PASS_ANYWAY]) == 0
    assert "teacher member" in capsys.readouterr().err
    after_first = member_hashes(taught)
    assert [after_first[k] != hashes[k] for k in range(2)] == [k == first_holder
                                                                for k in range(2)]
    taught_now = record(taught)
    assert FIRST not in taught_now["assignment"] and not holding(taught_now, {FIRST})
    assert [u["member"] for u in taught_now["upkeep"]] == [first_holder]
    purged = open_store(taught).ledger.request("r1")["purged"]
    assert [p for p in purged if p.startswith(f"teacher member {first_holder}: trained again "
                                              "without 1 forgotten user")]
    # The second request distils toward the store's teacher, which holds neither user now;
    # whichever path forgets the user (E2URec, or the exact retry), its purge cleans it too.
    second_holder = taught_now["assignment"][SECOND]
    assert main(["--threads", "1", "forget", "--store", str(taught), "--users", SECOND,
                 *SHARDS_PATH, "--request-id", "r2", *PASS_ANYWAY]) == 0
    capsys.readouterr()
    ledger = open_store(taught).ledger
    assert set(ledger.forgotten()) >= {FIRST, SECOND}
    final = record(taught)
    assert not holding(final, {FIRST, SECOND})
    assert [u["member"] for u in final["upkeep"]] == [first_holder, second_holder]
    assert all(u["seconds"] > 0 for u in final["upkeep"])
    assert status(open_store(taught))["consistent"]


def test_a_teacher_member_still_holding_a_forgotten_user_is_a_problem(taught, tmp_path,
                                                                      capsys):
    kept = Path(shutil.copytree(taught / TEACHER_DIR, tmp_path / "kept"))
    assert main(["--threads", "1", "forget", "--store", str(taught), "--users", FIRST,
                 "--method", "retrain", "--request-id", "r1", *PASS_ANYWAY]) == 0
    capsys.readouterr()
    shutil.rmtree(taught / TEACHER_DIR)
    shutil.copytree(kept, taught / TEACHER_DIR)  # as if the purge had not reached it
    report = status(open_store(taught))
    assert not report["consistent"]
    assert [p for p in report["problems"] if f"holds forgotten user(s) ['{FIRST}']" in p]


def test_the_shards_path_takes_the_stores_teacher_only(taught, tmp_path, store, capsys):
    fails(["forget", "--store", str(taught), "--users", FIRST, *SHARDS_PATH,
           "--option", f"shards={tmp_path}"], capsys, "the store's teacher is its own",
          unchanged=(taught,))
    fails(["forget", "--store", str(store), "--users", FIRST, *SHARDS_PATH], capsys,
          "has no teacher", "deploy init --teacher", unchanged=(store,))


def test_init_refuses_a_teacher_without_user_shards_or_for_an_ensemble(
        tmp_path, served_model, store_data, capsys):
    bare = Path(shutil.copytree(store_data, tmp_path / "bare"))
    (bare / "shards.json").unlink()
    fails(["deploy", "init", "--original", str(served_model), "--data", str(bare),
           "--store", str(tmp_path / "store"), "--references", "0", "--teacher"], capsys,
          "--teacher needs user shards")
    fails(["deploy", "init", "--method", "sisa", "--shards", "2", "--data", str(store_data),
           "--store", str(tmp_path / "ensemble"), "--teacher"], capsys,
          "--teacher goes with --original")
    assert not (tmp_path / "store").exists() and not (tmp_path / "ensemble").exists()
