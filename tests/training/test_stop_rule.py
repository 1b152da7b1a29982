"""The shared stop rule's decisions, on hand-made checks (the methods' runs are tested in
tests/methods/test_stop_rule_runs.py)."""

import math

import numpy as np
import pytest
import torch

from e2urec.training.stop_rule import (
    Closest,
    StopRule,
    auc_floor,
    auc_standard_error,
    decide,
    nothing_to_unlearn,
    open_measures,
)


def check(step, loss, ranking, membership, se=0.05):
    """A check whose three gaps are given (positive: the forget rows still look remembered)."""
    return {"step": step, "forget_loss": 0.5, "holdout_loss": 0.5 + loss, "forget_auc": 0.6,
            "probe_auc": 0.6 - ranking, "membership_auc": 0.5 + membership,
            "gap": {"loss": loss, "ranking": ranking, "membership": membership},
            "se": {"loss": se, "ranking": se, "membership": se}}


START = check(0, 0.4, 0.2, 0.1)


def test_a_gap_inside_its_noise_is_unlearned_all_the_same():
    # One user's rows: every gap is smaller than its standard error, yet real.
    small = check(0, 0.02, 0.01, 0.01, se=0.2)
    assert nothing_to_unlearn(small, StopRule()) is None
    half = check(4, 0.01, 0.005, 0.005, se=0.2)
    assert decide(half, small, StopRule()) is None  # half closed: go on


def test_only_a_start_with_no_open_measure_takes_no_step():
    at_level = check(0, -0.01, 0.0, math.nan)
    assert open_measures(at_level) == []
    assert "nothing to unlearn" in nothing_to_unlearn(at_level, StopRule())
    assert nothing_to_unlearn(at_level, StopRule(kind="none")) is None
    assert open_measures(check(0, -0.01, 0.02, math.nan)) == ["ranking"]


def test_it_goes_on_until_every_measure_reaches_the_aim():
    rule = StopRule(noise_z=100)
    before = check(4, 0.2, 0.1, 0.05)  # half of each gap closed
    assert decide(before, START, rule) is None
    assert before["mean_share"] == pytest.approx(0.5)
    assert before["distance"] == pytest.approx(0.5)
    # The loss is past the probe users' level and the mean is past 1, but the ranking lags.
    lagging = check(8, -0.2, 0.04, 0.0)
    assert decide(lagging, START, rule) is None and lagging["mean_share"] > 1
    assert "every measure's share closed reached 1" in decide(check(12, 0.0, 0.0, 0.0),
                                                              START, rule)
    assert decide(check(12, 0.0, 0.0, 0.0), START, StopRule(aim=1.2)) is None


def test_the_run_keeps_the_check_closest_to_the_aim_not_the_last_one():
    def at(step, share):
        point = check(step, *(g * (1 - share) for g in (0.4, 0.2, 0.1)), se=1.0)
        decide(point, START, StopRule(noise_z=100))
        return point

    model = torch.nn.Linear(2, 1)
    closest = Closest(START, model, StopRule())
    assert closest.point is START and closest.distance == pytest.approx(1.0)
    for step, share in [(4, 0.6), (8, 0.95), (12, 1.4), (16, 0.7)]:
        with torch.no_grad():
            model.weight.fill_(step)
        closest.offer(at(step, share), model)
    # Step 8 (0.05 from the aim) beats the later overshoot (0.4) and the fall back (0.3).
    assert closest.point["step"] == 8
    # Its state was copied when offered: later steps did not change it.
    assert torch.equal(closest.state["weight"], torch.full((1, 2), 8.0))
    assert closest.distance == pytest.approx(0.05)


def test_one_measure_past_its_target_beyond_noise_stops_the_run_before_the_mean_arrives():
    rule = StopRule(noise_z=2.0)
    # The membership attack is past the probe users' level by 2.4 standard errors; the
    # other two have closed a tenth.
    point = check(4, 0.36, 0.18, -0.12)
    why = decide(point, START, rule)
    assert point["mean_share"] < 1 and "membership past the probe users' level" in why
    # Past by less than its noise: not yet an overshoot.
    assert decide(check(4, 0.36, 0.18, -0.05), START, rule) is None


def test_the_probe_auc_guard_allows_the_aucs_own_noise_and_no_less_than_the_tolerance():
    labels = np.array([1] * 100 + [0] * 100)
    # Hanley and McNeil at AUC 0.5 with 100 + 100: (0.25 + 2 * 99 / 12) / 10^4.
    assert auc_standard_error(0.5, labels) == pytest.approx((0.25 + 16.5) ** 0.5 / 100)
    assert auc_standard_error(0.9, labels) < auc_standard_error(0.7, labels)
    assert np.isnan(auc_standard_error(0.7, np.ones(10)))
    start = {"probe_auc": 0.7, "probe_auc_se": 0.04}
    assert auc_floor(start, StopRule(noise_z=2, auc_tolerance=0.01)) == pytest.approx(0.62)
    assert auc_floor(start, StopRule(noise_z=2, auc_tolerance=0.1)) == pytest.approx(0.6)
    assert auc_floor({"probe_auc": 0.7}, StopRule(auc_tolerance=0.01)) == pytest.approx(0.69)
