"""A study's results on disk: results.json, results.csv, results.md (the summary table,
the cost at closure, the verdict seed by seed) and the plots."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from e2urec.bench.config import SECOND_RETRAIN, StudyConfig
from e2urec.bench.tables import (
    BASELINES,
    CLOSURE_BAND,
    DISTANCE_KEYS,
    GAP_KEYS,
    REFERENCE_MODELS,
    is_number,
)
from e2urec.checkpoints.folders import library_versions
from e2urec.config import (
    to_dict,
)
from e2urec.fileio import atomic_write_text


def write_results(out: Path, study: StudyConfig, rows: list[dict[str, Any]],
                   log: Callable[[str], None]) -> str:
    from e2urec.bench.plots import plot_results

    warnings = [r["warning"] for r in rows if r.get("warning")]
    payload = {"study": study.name, "rows": rows, "warnings": warnings,
               "config": to_dict(study), "torch_threads": torch.get_num_threads(),
               "versions": library_versions()}
    atomic_write_text(out / "results.json",
                      json.dumps(payload, indent=2, default=_json_default) + "\n")
    per_seed = pd.DataFrame([r for r in rows if r["seed"] is not None])
    per_seed.to_csv(out / "results.csv", index=False)
    summary = pd.DataFrame([r for r in rows if r["seed"] is None])
    seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    table = markdown_table(summary)
    note = (f"Mean ± standard deviation over seeds {seeds}. " if len(seeds) > 1 else
            f"Seed {seeds[0]}. ")
    ranking = cost_at_closure([r for r in rows if r["seed"] is None])
    verdicts = verdict_table([r for r in rows if r["seed"] is not None])
    atomic_write_text(out / "results.md", f"# {study.name}\n\n{note}{LEGEND}\n\n{table}\n"
                      f"\n{ranking}\n\n## The verdict, seed by seed\n\n{VERDICT_LEGEND}\n\n"
                      f"{verdicts}\n" + "".join(f"\nWARNING: {w}\n" for w in warnings))
    plot_results(summary[~summary["method"].isin(BASELINES)], out)
    for warning in warnings:
        log(f"[bench] WARNING: {warning}")
    return table


def cost_at_closure(summary: list[dict[str, Any]]) -> str:
    """The methods that land (every mean closure inside the band), cheapest first, in
    seconds as a multiple of Retrain's; then those that do not."""
    retrain = next((r.get("unlearn_seconds_mean") for r in summary
                    if r["method"] == "retrain"), None)
    methods = [r for r in summary
               if r["method"] not in (*REFERENCE_MODELS, *BASELINES, SECOND_RETRAIN)]
    landed = sorted((r for r in methods if all(
        is_number(v := r.get(f"{key}_mean")) and CLOSURE_BAND[0] <= v <= CLOSURE_BAND[1]
        for key in GAP_KEYS.values())), key=lambda r: r.get("unlearn_seconds_mean", math.inf))
    if not is_number(retrain) or not retrain:
        return ""

    def cost(row: dict[str, Any]) -> str:
        return f"{row['method']} ({row.get('unlearn_seconds_mean', math.nan) / retrain:.2f}x)"

    others = [r for r in methods if r not in landed]
    return (f"Landed inside {CLOSURE_BAND[0]}-{CLOSURE_BAND[1]} on every closure, cheapest "
            f"first (seconds x Retrain's): {', '.join(map(cost, landed)) or 'none'}. "
            f"Not landed: {', '.join(map(cost, others)) or 'none'}.")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


LEGEND = ("Forgetting columns are on the forgotten users' unplanted rows (planted canary "
          "rows are the canary's); probe AUC is the stop rule's never-trained level; sym-KL, "
          "JSD and L2 are distances to Retrain (lower is closer); MIA AUC attacks forget rows "
          "against audit users' rows on the binary Yes/No log-loss; "
          "canary is the planted answer's rate with the trigger (without it in brackets); "
          "closed is the share of the Original-to-Retrain gap a method closed on forget AUC / "
          "MIA AUC / canary lift (1 = Retrain; ! marks a value outside 0.7-1.3, above it the "
          "method forgot past Retrain, as visible to an auditor as remembering; a seed whose "
          "gap is under 0.05, inside the measure's noise, has none and is left out of the "
          "mean); HR@10 and "
          "NDCG@10 rank a liked test movie among 99 movies its user never rated; the "
          "popularity row ranks the same candidates by how often each was rated in the "
          "training rows (no model); |Δ| is the distance to Retrain, the retrain-2 row's "
          "is Retrain's own spread; verdict is per seed (next section).")


COLUMNS = [("test_auc", "test AUC"), ("hr10", "HR@10"), ("ndcg10", "NDCG@10"),
           ("forget_auc", "forget AUC"), ("probe_auc", "probe AUC"),
           ("forget_sym_kl", "sym-KL"), ("forget_jsd", "JSD"), ("forget_l2", "L2"),
           ("mia_auc", "MIA AUC"), ("flagged", "flagged users"),
           ("flagged_5", "flagged 5-user requests"), ("canary_success", "canary"),
           ("gap_closed_forget_auc", "closed AUC"), ("gap_closed_mia_auc", "closed MIA"),
           ("gap_closed_canary", "closed canary"),
           ("dist_forget_auc", "|Δ| forget AUC"), ("dist_mia_auc", "|Δ| MIA"),
           ("unlearn_seconds", "unlearn s"), ("trainable_share", "trainable")]


VERDICT_LEGEND = (
    "Forgotten means the forgotten users cannot be told from never-trained (audit) users "
    "under the same model: ranking = their AUC minus the audit users' AUC; membership = "
    "the per-user likelihood-ratio test against the auditor's reference models: the "
    "forgotten users' mean score calibrated on the audit users' (0: like them; without "
    "references, a loss-threshold attack's AUC minus 0.5); canary = the trigger's lift of "
    "the planted answer minus decoy triggers' lift. Ranking and membership carry a "
    "user-level bootstrap interval: "
    "wholly above 0 fails (+, remembered), wholly below fails too (-, forgotten past "
    "never-trained users). The canary's brackets are the band a never-trained model's "
    "measure falls in (per-user randomisation: each user's trigger swapped with their "
    "decoys), with its p-value; outside the band fails, either way. All Bonferroni over the "
    "measures, two-sided. Closures (1 = Retrain) carry a "
    "user-level bootstrap 95% interval; |Δ| is the distance to Retrain, and the "
    f"{SECOND_RETRAIN} row (Retrain with another training seed) gives Retrain's own.")


CANARY_COLUMN = [key for key, _ in COLUMNS].index("canary_success")


def verdict_table(per_seed: list[dict[str, Any]]) -> str:
    """Per model and seed: the verdict, each measure and closure with its interval, and
    the distances to Retrain."""
    head = ["method", "seed", "verdict", "stopped by", "ranking", "membership", "canary",
            "closed AUC", "closed MIA", "closed canary", "|Δ| forget AUC / MIA / canary lift"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted((r for r in per_seed if r["method"] not in BASELINES),
                      key=lambda r: (r["seed"], _order(r["method"]))):
        cells = [row["method"], str(row["seed"]), short_verdict(row.get("verdict")),
                 row.get("stopped_by") or "-"]
        cells += [_interval(row, f"{name}_gap") for name in ("ranking", "membership", "canary")]
        cells += [_interval(row, closed) for closed in GAP_KEYS.values()]
        cells.append(" / ".join(_cell("", row.get(f"dist_{k}")) for k in DISTANCE_KEYS))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _order(method: str) -> int:
    return {"original": 0, "retrain": 1, SECOND_RETRAIN: 2}.get(method, 3)


def short_verdict(text: str | None) -> str:
    """``pass``, or ``fail`` with each failed measure and its way (+ remembered, - past)."""
    if not text or text == "pass":
        return text or "-"
    parts = text.removeprefix("fail: ").split(", ")
    return "fail " + " ".join(
        part.split(" ")[0] + ("+" if "remembered" in part else
                              "-" if "past" in part else "?") for part in parts)


def _interval(row: dict[str, Any], key: str) -> str:
    value, low, high = row.get(key), row.get(f"{key}_low"), row.get(f"{key}_high")
    if not is_number(value) or math.isnan(value):
        return "-"
    text = f"{value:+.3f}" if key.endswith("_gap") else f"{value:.2f}"
    if is_number(low) and is_number(high) and not math.isnan(low):
        text += f" [{low:+.3f}, {high:+.3f}]" if key.endswith("_gap") else \
            f" [{low:.2f}, {high:.2f}]"
    if is_number(row.get(f"{key}_p")):
        text += f" p={row[f'{key}_p']:.3f}"
    return text


def markdown_table(summary: pd.DataFrame) -> str:
    """The headline columns of the per-method summary rows, mean ± std over seeds."""
    lines = ["| method | " + " | ".join(title for _, title in COLUMNS)
             + " | stopped by | verdict |",
             "|---|" + "|".join("---" for _ in COLUMNS) + "|---|---|"]
    for _, row in summary.iterrows():
        cells = [_summary_cell(key, row) for key, _ in COLUMNS]
        base = row.get("canary_base_rate_mean")
        if is_number(base) and not math.isnan(base):
            cells[CANARY_COLUMN] += f" ({_cell('canary_base_rate', base)})"
        stopped = row.get("stopped_by")
        cells.append(", ".join(stopped) if isinstance(stopped, list) else "-")
        verdicts = row.get("verdicts")
        cells.append(", ".join(map(short_verdict, verdicts))
                     if isinstance(verdicts, list) else "-")
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summary_cell(key: str, row: pd.Series) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    text = _cell(key, mean)
    if row.get("seeds", 1) > 1 and text != "-" and std is not None and not math.isnan(std):
        text += f" ± {_cell(key, std)}"
    if key in GAP_KEYS.values() and is_number(mean) and not math.isnan(mean) \
            and not CLOSURE_BAND[0] <= mean <= CLOSURE_BAND[1]:
        text += " !"
    return text


def _cell(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key == "trainable_share":
        return f"{100 * value:.2f}%"
    if key in ("flagged", "flagged_5"):
        return f"{100 * value:.0f}%"
    if key == "unlearn_seconds":
        return f"{value:.1f}"
    if key == "ks_pvalue":
        return f"{value:.3g}"
    return f"{value:.4f}"
