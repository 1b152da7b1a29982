"""The shared stop rule's decisions, on hand-made checks (the methods' runs are tested in
tests/methods/test_stop_rule_runs.py)."""

import math

import numpy as np
import pytest
import torch

from e2urec.training.plateau import PLATEAU_CHECKS, PlateauGuard, binary_kl
from e2urec.training.stop_rule import (
    Guard,
    StopRule,
    auc_floor,
    auc_standard_error,
    ceiling_reason,
    nothing_to_unlearn,
    open_measures,
    stop_at,
    stopped_by,
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


def plateau_point(step, rows):
    rows = np.asarray(rows, dtype=float)
    return {"step": step, "distance": float(rows.mean()), "rows": rows}


def test_binary_kl_is_zero_on_the_teacher_and_grows_with_the_students_distance():
    teacher = torch.tensor([2.0, -1.0, 0.0])
    assert torch.allclose(binary_kl(teacher, teacher), torch.zeros(3), atol=1e-7)
    # KL(Bernoulli(p) || Bernoulli(q)) written out for the first row.
    p, q = torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(0.5))
    expected = p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))
    got = binary_kl(teacher, torch.tensor([0.5, -1.0, 0.0]))
    assert got[0] == pytest.approx(float(expected), rel=1e-5) and got[1:].abs().max() < 1e-7
    assert (binary_kl(teacher, teacher + 3) > binary_kl(teacher, teacher + 1)).all()


def test_the_plateau_rule_goes_on_while_the_rows_near_their_teacher_and_keeps_the_closer():
    model = torch.nn.Linear(2, 1)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, size=64)
    start = plateau_point(0, 0.30 + noise)
    guard = Guard.begin(StopRule(kind="plateau", noise_z=2.0), start, model)
    assert isinstance(guard, PlateauGuard)
    # Every row 0.05 closer: a significant step, the run goes on and this is the best.
    assert guard.check(plateau_point(4, 0.25 + noise), model) is None
    with torch.no_grad():
        model.weight.fill_(7.0)  # the weights of the best check, to be restored or kept
    assert guard.check(plateau_point(8, 0.20 + noise), model) is None
    best = model.weight.detach().clone()
    # Then changes within the rows' noise: PLATEAU_CHECKS of them stop the run.
    drift = [plateau_point(12 + 4 * i, 0.20 + noise + rng.normal(0, 0.02, size=64))
             for i in range(PLATEAU_CHECKS)]
    for point in drift[:-1]:
        assert guard.check(point, model) is None
    with torch.no_grad():
        model.weight.fill_(-1.0)
    last = drift[-1]
    last["rows"] = last["rows"] + 0.01  # the last check lies farther than the best
    last["distance"] = float(last["rows"].mean())
    why, kept = guard.check(last, model)
    assert kept == 8 and "stopped falling" in why and "kept step 8" in why
    torch.testing.assert_close(model.weight, best)


def test_what_stopped_a_run_is_the_rule_the_ceiling_or_the_schedule():
    ran = {"total_steps": 12}
    assert stopped_by({**ran, "stopped": "the distance ... kept step 8"}, "plateau") == "rule"
    assert stopped_by({**ran, "stopped": ceiling_reason(12)}, "membership") == "ceiling"
    assert stopped_by({**ran, "stopped": "schedule"}, "membership") == "ceiling"  # older records
    assert stopped_by({**ran, "stopped": "schedule"}, "none") == "schedule"
    assert stopped_by({"total_steps": 0, "stopped": "nothing to unlearn"}, "membership") \
        == "no step"
