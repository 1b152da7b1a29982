"""A study's rows: one per model and seed from its evaluation, then the closures of the
Original-to-Retrain gap with their intervals, the distances to Retrain, and the
means and spreads over seeds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from e2urec.evaluation.audit import forget_quality
from e2urec.evaluation.verdict import ModelScores, closure_intervals
from e2urec.evaluation.verdict import summary as verdict_summary


def result_row(name: str, metrics: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    distance = metrics.get("forget_vs_reference", {})
    unlearn = record.get("unlearn_seconds")
    return {
        "method": name,
        "test_auc": metrics["test"]["auc"], "test_acc": metrics["test"]["acc"],
        "test_logloss": metrics["test"]["logloss"],
        "hr10": metrics.get("ranking", {}).get("hr@10"),
        "ndcg10": metrics.get("ranking", {}).get("ndcg@10"),
        "forget_auc": metrics["forget"]["auc"], "forget_acc": metrics["forget"]["acc"],
        "retain_auc": metrics["retain"]["auc"],
        "forget_sym_kl": distance.get("sym_kl"), "forget_jsd": distance.get("jsd"),
        "forget_l2": distance.get("l2"), "mia_auc": metrics.get("mia_auc"),
        "mia_nonmembers": metrics.get("mia_nonmembers"),
        "canary_success": metrics.get("canary", {}).get("success"),
        "canary_base_rate": metrics.get("canary", {}).get("base_rate"),
        "canary_lift": canary_lift(metrics.get("canary")),
        "probe_auc": metrics.get("probe", {}).get("auc"),
        # the per-user test against the auditor's references: share flagged one by one,
        # the audit users' false alarms, requests of 5 forgotten users told apart
        "flagged": metrics.get("lira", {}).get("flagged"),
        "false_alarms": metrics.get("lira", {}).get("false_alarm_rate"),
        "flagged_5": metrics.get("lira", {}).get("pooled_5"),
        **verdict_fields(metrics.get("verdict")),
        "_scores_file": metrics.get("scores_file"),
        "test_p_yes_std": metrics["test_p_yes_std"],
        "unlearn_seconds": unlearn if unlearn is not None else float("nan"),
        "train_seconds": record.get("train_seconds"),
        "trainable_params": record["trainable_params"], "total_params": record["total_params"],
        "trainable_share": record["trainable_params"] / max(record["total_params"], 1),
        "peak_memory_mb": record.get("peak_memory_mb"),
        "retrained_shards": record.get("retrained_shards"),
        "stopped_by": record.get("stopped_by"),
        "_p_true_file": metrics["p_true_file"],
    }


def verdict_fields(result: dict[str, Any] | None) -> dict[str, Any]:
    """A row's verdict: ``pass`` or what failed, and each measure with its interval."""
    if result is None:
        return {}
    out: dict[str, Any] = {"verdict": verdict_summary(result)}
    for name, m in result["measures"].items():
        out.update({f"{name}_gap": m["value"], f"{name}_gap_low": m["low"],
                    f"{name}_gap_high": m["high"]})
        if "p" in m:
            out[f"{name}_gap_p"] = m["p"]
    return out


def add_closure_intervals(rows: list[dict[str, Any]]) -> None:
    """Each closure's user-level bootstrap interval (the same users drawn for the Original,
    Retrain and the method)."""
    by_name = {row["method"]: row for row in rows}
    files = {name: row.get("_scores_file") for name, row in by_name.items()}
    if not (files.get("original") and files.get("retrain")):
        return
    original, retrain = ModelScores.load(files["original"]), ModelScores.load(files["retrain"])
    for row in rows:
        if row["method"] in REFERENCE_MODELS or not files.get(row["method"]):
            continue
        intervals = closure_intervals(original, retrain, ModelScores.load(files[row["method"]]))
        for figure, closed in GAP_KEYS.items():
            if figure in intervals and is_number(row.get(closed)) \
                    and not math.isnan(row[closed]):
                row[f"{closed}_low"], row[f"{closed}_high"] = intervals[figure]


def add_distances(rows: list[dict[str, Any]]) -> None:
    """Each model's distance to Retrain on the verdict's figures; the second Retrain's row
    holds Retrain-to-Retrain: the noise of one Retrain draw."""
    retrain = next(row for row in rows if row["method"] == "retrain")
    for row in rows:
        for key in DISTANCE_KEYS:
            if is_number(row.get(key)) and is_number(retrain.get(key)):
                row[f"dist_{key}"] = abs(row[key] - retrain[key])


DISTANCE_KEYS = ("forget_auc", "mia_auc", "canary_lift")


REFERENCE_MODELS = ("original", "retrain")


# Rows that are no model: the most-rated list on the ranking task's candidates.
BASELINES = ("popularity",)


MIN_SPREAD = 0.05  # a reference model whose P(yes) varies less than this says little


# The headline closures: how much of the Original-to-Retrain gap a method closed on each.
# Canary closure is on the lift (success minus the same model's rate without the trigger):
# a model answering "No." to everything has success 1 and lift 0, exactly Retrain's case.
GAP_KEYS = {"forget_auc": "gap_closed_forget_auc", "mia_auc": "gap_closed_mia_auc",
            "canary_lift": "gap_closed_canary"}


EXTRA_GAP_KEYS = {"canary_success": "gap_closed_canary_success"}  # the earlier canary figure


CLOSURE_BAND = (0.7, 1.3)  # where a method lands close to Retrain; above it, it forgot past


# An Original-to-Retrain gap smaller than this is inside the noise of the measure (about
# two standard errors of an AUC over some 400 rows a side, the demo's): no share of it can be
# read, so that closure is NaN (and left out of the means) rather than a ratio of noise.
MIN_GAP = 0.05


def canary_lift(canary: dict[str, float] | None) -> float | None:
    """The trigger's lift: success minus the same model's rate without it."""
    return canary["success"] - canary["base_rate"] if canary else None


def add_gap_closed(rows: list[dict[str, Any]]) -> None:
    """The share of the Original-to-Retrain gap each approximate method closed (1: Retrain).

    Also ``gap_closed_mean`` (the headline closures' mean; 0 for the Original, 1 for
    Retrain) and ``over_forgot``: the headline metrics a method closed past the band.
    """
    by_name = {row["method"]: row for row in rows}
    for row in rows:
        if row["method"] in REFERENCE_MODELS:
            row["gap_closed_mean"] = float(row["method"] == "retrain")
            continue
        for key, closed in {**GAP_KEYS, **EXTRA_GAP_KEYS}.items():
            start, goal, value = (by_name["original"].get(key), by_name["retrain"].get(key),
                                  row.get(key))
            usable = None not in (start, goal, value) and abs(start - goal) >= MIN_GAP
            row[closed] = (start - value) / (start - goal) if usable else float("nan")
        row["gap_closed_mean"] = nanmean([row[k] for k in GAP_KEYS.values()])
        row["over_forgot"] = over_forgot(row)


def over_forgot(row: dict[str, Any], suffix: str = "") -> list[str]:
    """The headline metrics whose closure lies above the band (forgot past Retrain)."""
    return [key for key, closed in GAP_KEYS.items()
            if is_number(value := row.get(closed + suffix)) and value > CLOSURE_BAND[1]]


def nanmean(values: list[Any]) -> float:
    numbers = [v for v in values if is_number(v) and not math.isnan(v)]
    return float(np.mean(numbers)) if numbers else float("nan")


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method with ``<key>_mean`` and ``<key>_std`` over seeds (``seed: None``)."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        row: dict[str, Any] = {"method": method, "seed": None, "seeds": len(group)}
        if any("verdict" in r for r in group):  # per seed, in seed order
            row["verdicts"] = [r.get("verdict", "-") for r in group]
        if any(r.get("stopped_by") for r in group):  # the rule or the budget's ceiling
            row["stopped_by"] = [r.get("stopped_by") or "-" for r in group]
        for key in group[0]:
            values = [r.get(key) for r in group]
            if key == "seed" or not all(is_number(v) for v in values):
                continue
            # A seed without a value (NaN: e.g. a closure of a gap inside the noise) is
            # left out of its mean and spread.
            array = np.array([v for v in values if not math.isnan(v)], dtype=float)
            row[f"{key}_mean"] = float(np.mean(array)) if len(array) else float("nan")
            row[f"{key}_std"] = float(np.std(array, ddof=1)) if len(array) > 1 else 0.0
        if method not in (*REFERENCE_MODELS, *BASELINES):
            row["over_forgot"] = over_forgot(row, "_mean")
        out.append(row)
    return out


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def add_ks(rows: list[dict[str, Any]]) -> None:
    reference = np.load(next(r for r in rows if r["method"] == "retrain")["_p_true_file"])
    for row in rows:
        quality = forget_quality(np.load(row.pop("_p_true_file")), reference)
        row["ks_statistic"], row["ks_pvalue"] = quality["ks_statistic"], quality["ks_pvalue"]
