"""The shared stop rule's decisions, on hand-made checks (the methods' runs are tested in
tests/methods/test_stop_rule_runs.py)."""

import math

import numpy as np
import pytest

from e2urec.training.stop_rule import (
    StopRule,
    auc_floor,
    auc_standard_error,
    nothing_to_unlearn,
    open_measures,
    stop_at,
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
    assert stop_at(half, small, small, StopRule()) is None  # half closed: go on


def test_only_a_start_with_no_open_measure_takes_no_step():
    at_level = check(0, -0.01, 0.0, math.nan)
    assert open_measures(at_level) == []
    assert "nothing to unlearn" in nothing_to_unlearn(at_level, StopRule())
    assert nothing_to_unlearn(at_level, StopRule(kind="none")) is None
    assert open_measures(check(0, -0.01, 0.02, math.nan)) == ["ranking"]


def test_it_goes_on_until_every_measure_reaches_the_aim():
    rule = StopRule(noise_z=100)
    before = check(4, 0.2, 0.1, 0.05)  # half of each gap closed
    assert stop_at(before, START, START, rule) is None
    assert before["mean_share"] == pytest.approx(0.5)
    # The loss is past the probe users' level and the mean is past 1, but the ranking lags.
    lagging = check(8, -0.2, 0.04, 0.0)
    assert stop_at(lagging, before, START, rule) is None and lagging["mean_share"] > 1
    reached = check(12, 0.0, 0.0, 0.0)
    why, keep_previous = stop_at(reached, lagging, START, rule)
    assert not keep_previous and "every measure's share closed reached 1" in why
    assert stop_at(check(12, 0.0, 0.0, 0.0), lagging, START, StopRule(aim=1.2)) is None


@pytest.mark.parametrize("previous_share,current_share,keeps_previous", [
    (0.9, 1.4, True),    # the step before lies closer to the aim
    (0.6, 1.05, False),  # the check that reached it lies closer
])
def test_it_keeps_whichever_of_the_last_two_checks_lies_closer_to_the_aim(
        previous_share, current_share, keeps_previous):
    def at(step, share):
        return check(step, *(g * (1 - share) for g in (0.4, 0.2, 0.1)), se=1.0)

    previous = at(4, previous_share)
    stop_at(previous, START, START, StopRule(noise_z=100))
    why, keep = stop_at(at(8, current_share), previous, START, StopRule(noise_z=100))
    assert keep is keeps_previous
    assert f"kept step {4 if keeps_previous else 8}" in why


def test_one_measure_past_its_target_beyond_noise_stops_the_run_before_the_mean_arrives():
    rule = StopRule(noise_z=2.0)
    # The membership attack is past the probe users' level by 2.4 standard errors; the
    # other two have closed a tenth.
    point = check(4, 0.36, 0.18, -0.12)
    why, _ = stop_at(point, START, START, rule)
    assert point["mean_share"] < 1 and "membership past the probe users' level" in why
    # Past by less than its noise: not yet an overshoot.
    assert stop_at(check(4, 0.36, 0.18, -0.05), START, START, rule) is None


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
