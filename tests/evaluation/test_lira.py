"""The per-user likelihood-ratio test against reference models, on scores drawn to order."""

import numpy as np
import pytest

from e2urec.evaluation.lira import (
    ReferenceLevels,
    log_odds,
    per_user_test,
    pooled_test,
    user_scores,
)
from e2urec.training.references import assign_users


def test_log_odds_of_the_true_answer_from_the_binary_loss():
    p = np.array([0.5, 0.9, 0.01, 1 - 1e-12])
    assert log_odds(-np.log(p))[:3] == pytest.approx(np.log(p / (1 - p))[:3])
    assert np.isfinite(log_odds(-np.log(p))).all()  # a saturated answer stays finite


def test_each_user_is_in_exactly_half_of_the_references():
    drawn = assign_users([str(u) for u in range(200)], 6, seed=3)
    assert all(len(set(ks)) == 3 and set(ks) <= set(range(6)) for ks in drawn.values())
    counts = np.bincount([k for ks in drawn.values() for k in ks], minlength=6)
    assert counts.min() > 70  # each reference holds about half the users
    assert drawn == assign_users([str(u) for u in range(200)], 6, seed=3)
    with pytest.raises(ValueError, match="even number, at least 4"):
        assign_users(["1"], 3, seed=0)


def test_fewer_references_may_hold_each_user_but_two_stay_out():
    drawn = assign_users([str(u) for u in range(400)], 4, seed=1, holding=1)
    assert {len(ks) for ks in drawn.values()} == {1}
    counts = np.bincount([k for ks in drawn.values() for k in ks], minlength=4)
    assert counts.min() > 70  # each reference holds about a quarter of the users
    for holding in (0, 3):
        with pytest.raises(ValueError, match="out of at least 2"):
            assign_users(["1"], 4, seed=0, holding=holding)


def world(seed: int, members: int, never: int, rows: int, memorised: float, refs: int = 4):
    """Per-row statistics: a row's own difficulty, reference noise, and for users a model
    trained on, a lift of ``memorised`` in log-odds (on the model and on in-references)."""
    rng = np.random.default_rng(seed)
    users = [f"m{i}" for i in range(members)] + [f"a{i}" for i in range(never)]
    drawn = assign_users(users, refs, seed)
    row_users = np.repeat(users, rows)
    difficulty = rng.normal(0.5, 1.0, len(row_users))
    member = np.char.startswith(row_users.astype(str), "m")
    held = np.array([[k in drawn[u] and u.startswith("m") for u in row_users]
                     for k in range(refs)])
    stat_refs = difficulty + memorised * held + rng.normal(0, 0.3, held.shape)

    def loss_of(stat: np.ndarray) -> np.ndarray:
        return np.log1p(np.exp(-stat))  # -log sigmoid(stat)

    out = np.array([[k not in drawn[u] for u in row_users] for k in range(refs)])
    levels = ReferenceLevels.of(row_users, loss_of(stat_refs), out)

    def model(lift: float) -> dict[str, float]:
        stat = difficulty + lift * member + rng.normal(0, 0.3, len(row_users))
        return user_scores(levels, loss_of(stat))
    return model, users


def split(scores: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    return ({u: s for u, s in scores.items() if u.startswith("m")},
            {u: s for u, s in scores.items() if u.startswith("a")})


def test_the_original_is_flagged_user_by_user_and_a_retrain_at_the_false_alarm_rate():
    model, _ = world(0, members=96, never=60, rows=8, memorised=0.8)
    original = per_user_test(*split(model(0.8)))
    assert original["flagged"] / original["forgotten_users"] > 0.6
    assert original["remembered"] == original["flagged"]
    retrain = per_user_test(*split(model(0.0)))
    assert retrain["flagged"] / retrain["forgotten_users"] <= 0.12
    assert retrain["false_alarm_rate"] <= 0.12
    pushed = per_user_test(*split(model(-0.8)))
    assert pushed["pushed_past"] / pushed["forgotten_users"] > 0.6


def test_five_users_together_are_told_apart_on_the_original_not_on_a_retrain():
    model, _ = world(1, members=96, never=60, rows=8, memorised=0.8)
    original, retrain = split(model(0.8)), split(model(0.0))
    rng = np.random.default_rng(2)
    told = {"original": 0, "retrain": 0}
    for _ in range(100):
        five = rng.choice(sorted(original[0]), size=5, replace=False)
        for name, (forget, audit) in (("original", original), ("retrain", retrain)):
            told[name] += pooled_test({u: forget[u] for u in five}, audit)["fails"] is not None
    assert told["original"] >= 90 and told["retrain"] <= 12
