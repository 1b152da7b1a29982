"""The one verdict: forgotten users against never-trained ones, with user-level intervals."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from e2urec.evaluation.audit import auc
from e2urec.evaluation.verdict import (
    CanaryLift,
    GroupScores,
    ModelScores,
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
    answered = [CanaryLift(np.ones(3), np.zeros(12)) for _ in range(10)]
    result = verdict(forget, audit, answered)
    assert result["measures"]["canary"]["value"] == 1.0 and not result["pass"]
    assert "canary (remembered)" in result["failed"]
    rng = np.random.default_rng(0)
    unseen = [CanaryLift(rng.integers(0, 2, 3) * 0.0, rng.integers(0, 2, 12) * 0.0)
              for _ in range(10)]
    assert verdict(forget, audit, unseen)["measures"]["canary"]["fails"] is None


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
