"""The shared stop rule inside every stepping method's run, on the tiny Originals."""

import dataclasses
import shutil

import pytest

from e2urec.checkpoints.scorers import load_scorer
from e2urec.data.samples import read_split
from e2urec.methods.registry import REGISTRY
from e2urec.training.stop_rule import make_probe, measure

STEPPING = sorted(name for name, cls in REGISTRY.items()
                  if "stop" in {f.name for f in dataclasses.fields(cls.Options)})
STOP = {"check_every": 2, "probe_size": 32}
OWN = {"e2urec": {"augment_epochs": 1, "calibrate_alpha": False, "alpha": 8.0,
                  "lora": {"r": 4, "alpha": 8}}}


def test_every_method_that_takes_steps_has_the_stop_rule():
    for name, cls in REGISTRY.items():
        options = {f.name for f in dataclasses.fields(cls.Options)}
        assert ("schedule" in options) == ("stop" in options), name
    assert len(STEPPING) >= 2  # the parametrised test below runs on real methods


@pytest.mark.parametrize("method", STEPPING)
def test_no_unlearning_decision_reads_valid_test_or_audit_rows_and_the_kept_check_is_saved(
        method, unlearn, prepared_dir, tmp_path):
    # Every row a method may not read is made unreadable: a read would fail the run.
    blind = tmp_path / "blind"
    shutil.copytree(prepared_dir, blind)
    for split in ("valid", "test", "audit", "canary"):
        (blind / f"{split}.jsonl").write_text("this line is not JSON\n")
    options = {"schedule": {"lr": 3e-3, "epochs": 3, "batch_size": 8}, "stop": STOP,
               **OWN.get(method, {})}
    record, out = unlearn(method, options, data_dir=blind)
    history = record["history"]
    checks = history["evaluations"]
    assert checks[0]["step"] == 0 and history["total_steps"] > 0, history["stopped"]
    last = history["total_steps"]
    assert [c["step"] for c in checks[1:]] == [s for s in range(1, last + 1)
                                             if s % 2 == 0 or s == last]
    # The saved model is the state of the check the rule kept, to the last digit it shows.
    kept = history.get("kept_step", last)
    expected = next(c for c in checks if c["step"] == kept)
    backbone = load_scorer(out).backbone
    probe = make_probe(backbone, read_split(prepared_dir, "forget"),
                       read_split(prepared_dir, "probe"), 32, 42)
    got = measure(backbone.model, probe, backbone.model.device, backbone.encoder().tokens)
    assert got["forget_loss"] == pytest.approx(expected["forget_loss"], abs=1e-4)
    assert got["gap"]["ranking"] == pytest.approx(expected["gap"]["ranking"], abs=1e-4,
                                                   nan_ok=True)
