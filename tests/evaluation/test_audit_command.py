"""`e2urec audit`: references trained once into a folder, then any model audited against them."""

from __future__ import annotations

import json

from e2urec.cli import main
from e2urec.training.references import read_references
from tests.deploy.test_store import TINY_SETS, TRAIN_SETS
from tests.helpers import fails


def test_audit_trains_its_references_once_and_ends_with_the_flagged_line(
        served_model, store_data, tmp_path, capsys):
    references = tmp_path / "refs"
    assert main(["--threads", "1", "audit", "--data", str(store_data), "--model",
                 str(served_model), "--references", str(references), *TINY_SETS,
                 *TRAIN_SETS]) == 0
    captured = capsys.readouterr()
    assert "training 4 reference models" in captured.err
    last = captured.out.strip().splitlines()[-1]
    assert last.startswith("flagged ") and "forgotten users (false-alarm rate " in last
    record = read_references(references)
    users = json.loads((store_data / "manifest.json").read_text())["holdout_user_ids"]
    # Every user, never-trained ones included, is in exactly half of the references.
    assert set(users["audit"]) <= set(record["assignment"])
    assert all(len(ks) == 2 for ks in record["assignment"].values())

    # A second audit reuses them, and --json carries the per-user flags.
    assert main(["--threads", "1", "audit", "--data", str(store_data), "--model",
                 str(served_model), "--references", str(references), "--json"]) == 0
    captured = capsys.readouterr()
    assert "training" not in captured.err
    report = json.loads(captured.out)
    per_user = report["per_user"]
    assert per_user["forgotten_users"] == len(per_user["users"]) > 0
    assert set(per_user["users"].values()) <= {-1, 0, 1}
    assert 0 <= per_user["false_alarm_rate"] <= 1 and report["pooled"]["p"] <= 1

    fails(["audit", "--data", str(store_data), "--model", str(tmp_path / "nothing")], capsys,
          "nothing")
    fails(["audit", "--data", str(store_data), "--model", str(served_model), "--references",
           str(tmp_path / "refs3"), "--count", "3"], capsys, "even number, at least 4")
    assert not (tmp_path / "refs3").exists()
    # A --references folder that holds someone's files is refused; nothing is deleted.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("someone's")
    fails(["audit", "--data", str(store_data), "--model", str(served_model), "--references",
           str(theirs)], capsys, "--references", "not this command's output",
          unchanged=(theirs,))
    assert (theirs / "notes.txt").read_text() == "someone's"
