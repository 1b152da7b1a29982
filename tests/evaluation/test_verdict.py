"""The one verdict: forgotten users against never-trained ones, with user-level intervals."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from e2urec.evaluation.audit import auc
from e2urec.evaluation.verdict import (
    CanaryLift,
    GroupScores,
    ModelScores,
    canary_test,
    closure_intervals,
    summary,
    verdict,
)
from tests.helpers import scored_group


def test_rank_auc_is_scikit_learns_with_ties():
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 300), rng.integers(0, 5, 300).astype(float)
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(auc(np.ones(4), np.arange(4.0)))


def test_never_trained_users_pass_and_remembered_or_pushed_past_users_fail():
    audit = scored_group(60, 6, 0.0, seed=1)
    alike = verdict(scored_group(96, 6, 0.0, seed=2), audit)
    assert alike["pass"] and summary(alike) == "pass"
    for m in alike["measures"].values():
        assert m["low"] <= m["value"] <= m["high"] and m["fails"] is None
    remembered = verdict(scored_group(96, 6, 1.5, seed=2), audit)
    assert not remembered["pass"]
    assert remembered["measures"]["membership"]["fails"] == "remembered"
    assert "membership (remembered)" in summary(remembered)
    pushed = verdict(scored_group(96, 6, -1.5, seed=2), audit)
    assert pushed["measures"]["membership"]["fails"] == "forgotten past never-trained users"
    assert pushed["measures"]["ranking"]["fails"] == "forgotten past never-trained users"


def test_the_canary_measure_reads_the_trigger_against_decoys():
    forget, audit = scored_group(96, 6, 0.0, seed=2), scored_group(60, 6, 0.0, seed=1)
    answered = [CanaryLift(np.ones(3), np.zeros(24)) for _ in range(10)]
    result = verdict(forget, audit, answered)
    canary = result["measures"]["canary"]
    assert canary["value"] == 1.0 and canary["p"] < 0.01 and not result["pass"]
    assert canary["low"] <= 0.0 <= canary["high"] < 1.0  # the never-trained band
    assert "canary (remembered)" in result["failed"]
    refused = [CanaryLift(-np.ones(3), np.zeros(24)) for _ in range(10)]
    assert verdict(forget, audit, refused)["measures"]["canary"]["fails"] == (
        "forgotten past never-trained users")
    unseen = [CanaryLift(np.zeros(3), np.zeros(24)) for _ in range(10)]
    result = verdict(forget, audit, unseen)
    assert result["measures"]["canary"]["p"] == 1.0 and result["pass"]


def coarse_lifts(rng: np.random.Generator, users: int, rows: int, decoys: int
                 ) -> list[CanaryLift]:
    """A never-trained model's lifts: mostly exactly 0, now and then one answer flips either
    way, the trigger drawn like every decoy."""
    def draw(n: int) -> np.ndarray:
        return rng.choice([-1.0, 0.0, 1.0], p=[0.08, 0.84, 0.08], size=n)
    return [CanaryLift(draw(rows), draw(rows * decoys)) for _ in range(users)]


def test_the_canary_test_holds_its_false_alarm_rate_on_coarse_lifts():
    rng = np.random.default_rng(7)
    alpha = 0.05 / 3
    tests = [canary_test(coarse_lifts(rng, 14, 4, 8), 400, rng, alpha) for _ in range(300)]
    alarms = np.mean([t["p"] < alpha for t in tests])
    assert alarms <= 0.04  # nominal 0.017; 300 replicas
    inside = np.mean([t["low"] <= t["value"] <= t["high"] for t in tests])
    assert inside >= 0.95


def test_closure_intervals_hold_one_for_retrain_and_zero_for_the_original(tmp_path):
    audit = scored_group(60, 6, 0.0, seed=1)
    rng = np.random.default_rng(3)
    base = scored_group(96, 6, 0.0, seed=2)

    def model(memorised: float) -> ModelScores:
        shift = memorised * (base.labels * 2 - 1) + rng.normal(0, 0.05, len(base.labels))
        p = 1 / (1 + np.exp(-(np.log(base.p_yes / (1 - base.p_yes)) + shift)))
        loss = -np.log(np.where(base.labels == 1, p, 1 - p))
        lift = [CanaryLift(np.full(3, memorised), np.zeros(12)) for _ in range(8)]
        return ModelScores(GroupScores(base.users, base.labels, p, loss), audit, lift)

    original, retrain = model(1.5), model(0.0)
    path = tmp_path / "scores.npz"
    retrain.save(path)
    again = ModelScores.load(path)
    assert np.array_equal(again.forget.loss, retrain.forget.loss) and len(again.canary) == 8
    to_retrain = closure_intervals(original, again, model(0.0), draws=200)
    for figure in ("forget_auc", "mia_auc", "canary_lift"):
        low, high = to_retrain[figure]
        assert low <= 1.0 <= high, figure
    low, high = closure_intervals(original, retrain, model(1.5), draws=200)["forget_auc"]
    assert low <= 0.0 <= high and high < 0.5


def test_with_references_the_membership_measure_is_the_per_user_tests():
    forget, audit = scored_group(96, 6, 0.0, seed=2), scored_group(60, 6, 0.0, seed=1)
    rng = np.random.default_rng(4)
    never = {f"a{i}": float(v) for i, v in enumerate(rng.normal(0.3, 1.0, 60))}
    held = {f"f{i}": float(v) for i, v in enumerate(rng.normal(1.3, 1.0, 96))}
    alike = {f"f{i}": float(v) for i, v in enumerate(rng.normal(0.3, 1.0, 96))}
    remembered = verdict(forget, audit, lira=(held, never))
    assert remembered["membership_test"] == "reference models (LiRA)"
    m = remembered["measures"]["membership"]
    assert m["fails"] == "remembered" and m["low"] > 0.5
    assert m["value"] == pytest.approx(1.0, abs=0.35)
    passed = verdict(forget, audit, lira=(alike, never))
    assert passed["pass"] and passed["measures"]["membership"]["low"] < 0 < \
        passed["measures"]["membership"]["high"]
    assert verdict(forget, audit)["membership_test"] == "loss threshold"
