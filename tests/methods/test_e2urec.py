import hashlib
import json

import numpy as np
import pytest
import torch

from e2urec.checkpoints.folders import load_model, read_meta
from e2urec.checkpoints.scorers import load_scorer
from e2urec.data.samples import read_split
from e2urec.evaluation.evaluate import evaluate
from e2urec.evaluation.predict import predict
from e2urec.training.losses import forgetting_teacher
from tests.methods.conftest import family_name

FAST = {"schedule": {"epochs": 2, "forget_only_epochs": 1}, "augment_epochs": 2,
        "stop": {"kind": "none", "probe_size": 32}, "calibrate_alpha": False,
        "lora": {"r": 4, "alpha": 8}}
STOP = {"kind": "membership", "probe_size": 32, "check_every": 2}


def fast(**schedule) -> dict:
    """FAST with some schedule fields changed."""
    return {**FAST, "schedule": {**FAST["schedule"], **schedule}}


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def test_forgetting_teacher_matches_a_hand_computation():
    z_orig = torch.tensor([[1.0, 2.0, 3.0]])
    z_aug = torch.tensor([[2.0, 1.0, 3.5]])
    # relu(z_aug - z_orig) = [1, 0, 0.5]; alpha 2 -> z_orig - [2, 0, 1].
    assert torch.equal(forgetting_teacher(z_orig, z_aug, 2.0), torch.tensor([[-1.0, 2.0, 2.0]]))
    lp_orig, lp_aug = z_orig.log_softmax(-1), z_aug.log_softmax(-1)
    expected = lp_orig - 2.0 * torch.relu(lp_aug - lp_orig)
    torch.testing.assert_close(forgetting_teacher(z_orig, z_aug, 2.0, "logprobs"), expected)


def test_answer_scoped_teacher_keeps_the_tail_and_moves_the_decision():
    from e2urec.training.losses import answer_scoped_teacher

    z_orig = torch.tensor([[[2.0, 1.0, 0.5, -1.0], [0.0, 3.0, 0.0, 0.0]]])
    z_fgt = torch.tensor([[[0.0, 0.0, 9.0, 9.0], [5.0, 5.0, 5.0, 5.0]]])
    log_p = answer_scoped_teacher(z_orig, z_fgt, yes_id=0, no_id=1)
    p, p_orig = log_p.exp(), z_orig.softmax(-1)
    torch.testing.assert_close(p[0, 0, 2:], p_orig[0, 0, 2:])  # the tail is untouched
    torch.testing.assert_close(p[0, 0, :2].sum(), p_orig[0, 0, :2].sum())
    torch.testing.assert_close(p[0, 0, 0], p[0, 0, 1])  # z_fgt splits Yes/No evenly
    torch.testing.assert_close(p[0, 1], p_orig[0, 1])  # later slots keep the Original


def test_only_adapters_train_and_the_original_is_untouched(unlearn, original_dir):
    before = digest(original_dir)
    record, out = unlearn("e2urec", FAST)
    assert digest(original_dir) == before
    assert read_meta(out)["kind"] == "adapter"
    assert (out / "adapter_model.safetensors").is_file()
    student = load_model(out, trainable_adapter=True)
    trainable = [n for n, p in student.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert record["trainable_params"] == sum(
        p.numel() for p in student.model.parameters() if p.requires_grad)
    assert 0 < record["trainable_share"] < 0.5
    for key in ("unlearn_seconds", "total_params", "peak_memory_mb", "history", "options",
                "versions"):
        assert key in record
    assert record["unlearn_seconds"] > 0 and record["history"]["total_steps"] > 0


def test_teacher_logits_are_computed_once_per_sample(unlearn, prepared_dir):
    record, _ = unlearn("e2urec", fast(epochs=3))
    n_forget = len(read_split(prepared_dir, "forget"))
    n_retain = len(read_split(prepared_dir, "retain"))
    steps_per_epoch = -(-n_forget // 16)
    assert record["history"]["total_steps"] == 3 * steps_per_epoch
    assert record["teacher_forwards"]["forget"] == n_forget
    # Two joint epochs draw this many retain samples; each is sent to the teacher once.
    drawn = 2 * steps_per_epoch * 16
    assert record["teacher_forwards"]["retain"] == min(drawn, n_retain) > 0


@pytest.mark.slow
def test_e2urec_moves_the_forget_set_towards_the_retrained_model(
        unlearn, prepared_dir, original_dir):
    if family_name(original_dir) == "tiny-t5":
        # Known defect (open issue "E2URec that forgets"): on a T5 Original trained on the
        # Yes/No decision, E2URec leaves the forgotten users' P(yes) at ~0.99 (Retrain ~0.23).
        pytest.xfail("E2URec does not move a decision-trained tiny T5 (open issue)")
    _, retrain_dir = unlearn("retrain")
    rows = read_split(prepared_dir, "forget")
    target = predict(load_scorer(retrain_dir), rows).p_yes
    before = predict(load_scorer(original_dir), rows).p_yes
    # The paper's formula and adapter (r 16 on q and v), its Yes/No split only. The
    # Original was trained on the Yes/No decision, so that is where forgetting shows.
    _, out = unlearn("e2urec", {**fast(epochs=4, batch_size=4), "teacher_scope": "answer"})
    after_preds = predict(load_scorer(out), rows)
    assert np.abs(after_preds.p_yes - target).mean() < np.abs(before - target).mean()
    after, _ = evaluate(load_scorer(out), prepared_dir, splits=("forget",))
    assert np.isfinite(after["forget"]["logloss"])


def test_the_calibrated_teacher_is_as_unsure_of_the_forget_set_as_of_unseen_users(unlearn):
    record, _ = unlearn("e2urec", {**FAST, "stop": STOP, "calibrate_alpha": True,
                                   "alpha": 64.0})
    teacher, start = record["teacher"], record["history"]["evaluations"][0]
    assert teacher["scope"] == "answer" and teacher["calibrated"] is True
    # Its target is the probe users' loss at the first check, nothing else.
    assert teacher["target_loss"] == start["holdout_loss"]
    assert teacher["original_loss"] < teacher["target_loss"]
    assert 0 < teacher["alpha"] <= 64.0
    # The smallest strength that reaches the target, or the most allowed.
    assert teacher["teacher_loss"] >= teacher["target_loss"] or teacher["alpha"] == 64.0


def test_two_seeded_runs_give_byte_identical_adapters_and_decisions(unlearn, tmp_path):
    options = {**FAST, "stop": STOP, "calibrate_alpha": True}
    first, out_a = unlearn("e2urec", options)
    second, out_b = unlearn("e2urec", options, out=tmp_path / "again")
    assert digest(out_a)["adapter_model.safetensors"] == \
        digest(out_b)["adapter_model.safetensors"]
    assert first["history"]["stopped"] == second["history"]["stopped"]
    # As text: NaN (the fixture's forgotten users like every film: no forget AUC) is
    # not equal to itself.
    assert json.dumps(first["history"]["evaluations"]) == \
        json.dumps(second["history"]["evaluations"])
    phases = first["phases"]
    assert set(phases) >= {"first check"} and all(v >= 0 for v in phases.values())


def test_a_full_student_trains_every_weight_and_saves_a_plain_model(unlearn, prepared_dir,
                                                                     original_dir):
    record, out = unlearn("e2urec", {**fast(lr=3e-3), "student": "full"})
    assert read_meta(out)["kind"] == "model"
    assert record["trainable_params"] == record["total_params"]
    rows = read_split(prepared_dir, "forget")
    assert np.abs(predict(load_scorer(out), rows).p_yes
                  - predict(load_scorer(original_dir), rows).p_yes).max() > 1e-3
