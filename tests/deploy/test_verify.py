"""Verification's decisions on measurements: the per-user reference test, pooled, power."""

from __future__ import annotations

import numpy as np

from e2urec.deploy.verify import POOLED, Verification, no_power, power, verdict

VALID = (np.array([0, 1, 0, 1] * 25), np.linspace(0.1, 0.9, 100))


def measured(scores: dict[str, float], pooled: float | None = None) -> dict:
    """What measure_request() records for users with these calibrated reference-model scores."""
    out = {"valid_auc": 0.7, "_valid": VALID, "audit_users": 20,
           "users": {u: {"rows": 6, "lira": s, "lira_audit_users": 20, "mia_auc": 0.5,
                         "null_mean": 0.5, "null_sd": 0.3} for u, s in scores.items()}}
    if pooled is not None:
        way = None if abs(pooled) < 2 else ("remembered" if pooled > 0 else "forgotten past "
                                            "never-trained users")
        out["pooled"] = {"value": pooled, "low": pooled - 1, "high": pooled + 1, "p": 0.01,
                         "fails": way}
    return out


def test_a_user_is_flagged_by_their_calibrated_score_either_way():
    # one user: bound z(0.975) * sqrt(1 + 1/20) = 2.01
    assert verdict(measured({"u": 0.0}), measured({"u": 1.9}), Verification(),
                   exact=True) is None
    remembered = verdict(measured({"u": 0.0}), measured({"u": 2.2}), Verification(), exact=True)
    assert "user u: reference-model score +2.20" in remembered and "(remembered)" in remembered
    past = verdict(measured({"u": 0.0}), measured({"u": -2.2}), Verification(), exact=True)
    assert "forgotten past never-trained users" in past
    # the loss-threshold AUC is recorded but does not decide when references score the user
    wide = measured({"u": 0.0})
    wide["users"]["u"]["mia_auc"] = 0.99
    assert verdict(measured({"u": 0.0}), wide, Verification(), exact=True) is None


def test_each_users_bound_is_bonferroni_over_the_request():
    two = {"u": 2.2, "v": 0.0}  # at alpha / 2 each, 2.2 is within z(0.9875) * 1.025 = 2.30
    assert verdict(measured(two), measured(two), Verification(), exact=True) is None


def test_a_small_request_fails_when_its_users_together_are_told_apart():
    after = measured({"u": 1.5, "v": 1.6}, pooled=2.5)
    reason = verdict(measured({"u": 0.0, "v": 0.0}), after, Verification(), exact=True)
    assert reason.startswith("the 2 users together: mean calibrated score +2.50")


def test_power_comes_from_each_user_or_from_the_pooled_test():
    seen = power(measured({"u": 3.0, "v": 2.5}), Verification())
    assert seen["powered"] and seen["users"] == {"u": ["membership"], "v": ["membership"]}
    half = power(measured({"u": 3.0, "v": 0.1}), Verification())
    assert not half["powered"]  # v cannot be shown forgotten alone
    pooled = power(measured({"u": 3.0, "v": 0.1}, pooled=2.5), Verification())
    assert pooled["powered"] and pooled["group"] == [POOLED]


def test_no_power_names_the_blind_users_and_the_stated_power():
    reason = no_power(measured({"u": 0.3}), Verification(), stated=0.12)
    assert reason.startswith("no power") and "['u']" in reason and "12% of the time" in reason
    assert no_power(measured({"u": 3.0}), Verification()) is None


def test_an_approximate_candidate_must_move_what_was_told_apart():
    before = measured({"u": 3.0, "v": 2.5})
    assert verdict(before, measured({"u": 1.0, "v": 1.2}), Verification()) is None
    stuck = verdict(before, measured({"u": 3.1, "v": 1.2}), Verification())
    assert "user u: the membership measure did not move toward never-trained users" in stuck
    pooled = measured({"u": 1.0, "v": 1.0}, pooled=2.5)
    assert verdict(pooled, measured({"u": 1.0, "v": 1.0}, pooled=1.5), Verification()) is None
    stuck = verdict(pooled, measured({"u": 1.0, "v": 1.0}, pooled=2.6), Verification())
    assert f"the {POOLED} measure did not move toward never-trained users" in stuck
    # an exact candidate is not asked to show power
    assert verdict(measured({"u": 0.1}), measured({"u": 0.2}), Verification(),
                   exact=True) is None
