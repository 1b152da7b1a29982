"""A study's rows: closures of the Original-to-Retrain gap, distances, aggregates."""

from __future__ import annotations

import math

import pytest

from e2urec.bench.tables import (
    MIN_GAP,
    add_distances,
    add_gap_closed,
    aggregate,
    over_forgot,
    verdict_fields,
)


def rows(**method_values):
    """One row a model, forget AUC / MIA AUC / canary lift given in that order."""
    out = []
    for method, (forget_auc, mia_auc, lift) in method_values.items():
        out.append({"method": method, "forget_auc": forget_auc, "mia_auc": mia_auc,
                    "canary_lift": lift, "canary_success": lift})
    return out


def test_a_closure_is_the_share_of_the_gap_closed_and_past_the_band_is_named():
    table = rows(original=(0.9, 0.8, 0.6), retrain=(0.7, 0.5, 0.0),
                 half=(0.8, 0.65, 0.3), past=(0.6, 0.5, -0.3))
    add_gap_closed(table)
    half, past = table[2], table[3]
    assert half["gap_closed_forget_auc"] == pytest.approx(0.5)
    assert half["gap_closed_mia_auc"] == pytest.approx(0.5)
    assert half["gap_closed_mean"] == pytest.approx(0.5) and half["over_forgot"] == []
    # forget AUC 0.6 is 1.5 of the gap: past Retrain, as visible as remembering
    assert past["gap_closed_forget_auc"] == pytest.approx(1.5)
    assert past["over_forgot"] == ["forget_auc", "canary_lift"]
    assert (table[0]["gap_closed_mean"], table[1]["gap_closed_mean"]) == (0.0, 1.0)


def test_a_gap_inside_the_noise_gives_no_closure_and_stays_out_of_the_mean():
    table = rows(original=(0.9, 0.52, 0.6), retrain=(0.7, 0.52 - MIN_GAP / 2, 0.0),
                 method=(0.8, 0.5, 0.3))
    add_gap_closed(table)
    method = table[2]
    assert math.isnan(method["gap_closed_mia_auc"])
    assert method["gap_closed_mean"] == pytest.approx(0.5)  # the other two closures


def test_distances_are_to_retrain_and_the_second_retrain_measures_its_noise():
    table = rows(retrain=(0.7, 0.5, 0.0), **{"retrain-2": (0.72, 0.49, 0.05)})
    add_distances(table)
    assert table[1]["dist_forget_auc"] == pytest.approx(0.02)
    assert table[1]["dist_canary_lift"] == pytest.approx(0.05)
    assert table[0]["dist_mia_auc"] == 0


def test_aggregate_gives_mean_and_spread_over_seeds_and_keeps_each_verdict():
    per_seed = [{"method": "npo", "seed": s, "test_auc": auc, "verdict": v,
                 "stopped_by": by, "gap_closed_forget_auc": closed}
                for s, auc, v, by, closed in ((42, 0.70, "pass", "rule", 1.4),
                                              (43, 0.72, "fail: ranking (remembered)",
                                               "ceiling", float("nan")),
                                              (44, 0.74, "pass", "rule", 1.6))]
    [row] = aggregate(per_seed)
    assert row["seeds"] == 3 and row["seed"] is None
    assert row["test_auc_mean"] == pytest.approx(0.72)
    assert row["test_auc_std"] == pytest.approx(0.02)
    assert row["verdicts"] == ["pass", "fail: ranking (remembered)", "pass"]
    assert row["stopped_by"] == ["rule", "ceiling", "rule"]
    # the seed without a closure is left out: the mean of 1.4 and 1.6, past the band
    assert row["gap_closed_forget_auc_mean"] == pytest.approx(1.5)
    assert row["over_forgot"] == ["forget_auc"] == over_forgot(row, "_mean")


def test_a_verdict_becomes_one_field_a_measure_with_its_interval():
    result = {"pass": False, "failed": ["ranking (remembered)"],
              "measures": {"ranking": {"value": 0.2, "low": 0.1, "high": 0.3},
                           "canary": {"value": 0.0, "low": -0.1, "high": 0.1, "p": 0.5}}}
    fields = verdict_fields(result)
    assert fields["verdict"] == "fail: ranking (remembered)"
    assert (fields["ranking_gap"], fields["ranking_gap_low"], fields["ranking_gap_high"]) == \
        (0.2, 0.1, 0.3)
    assert fields["canary_gap_p"] == 0.5 and "ranking_gap_p" not in fields
    assert verdict_fields(None) == {}
