"""Where each stepping method forgets as Retrain does, and at what cost.

Sweeps every method's learning rate (as a multiple of the Original's, the
`schedule.lr_scale` option) and step budget (epochs of the forget set) on one
Original, scores each point against the Original and Retrain, and plots the
share of the Original-to-Retrain gap closed (forget AUC, MIA, canary lift)
against cost: rows passed through forward and backward, and seconds, each as
a multiple of Retrain's. The last lines name, per method, the cheapest point
inside 0.7-1.3 on all three metrics with test AUC within 0.01 of the
Original's, or say there is none:

    python -m benchmarks.forgetting_frontier --data runs/refs/data-42 \\
        --original runs/refs/C-original-42 --methods neggrad,graddiff,npo,bad-teacher-labels

Retrain is trained once in the work folder (its seconds are the cost unit).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.common import print_table
from e2urec.bench.config import method_of
from e2urec.bench.tables import CLOSURE_BAND, GAP_KEYS, add_gap_closed, canary_lift
from e2urec.checkpoints.folders import read_meta
from e2urec.checkpoints.scorers import load_scorer
from e2urec.config import BackboneConfig, TrainConfig, from_dict, merge_dicts
from e2urec.data.samples import read_split
from e2urec.evaluation.evaluate import evaluate
from e2urec.methods import run_method

TEST_AUC_ALLOWANCE = 0.01


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a prepared data folder")
    parser.add_argument("--original", required=True, help="the Original trained on it")
    parser.add_argument("--methods", default="neggrad,graddiff,npo,bad-teacher-labels",
                        help="entries NAME or NAME/LABEL (a variant with its own --options)")
    parser.add_argument("--options", default="{}",
                        help='JSON: each entry\'s own options, e.g. \'{"e2urec/full": '
                        '{"student": "full"}}\'')
    parser.add_argument("--lr-scales", default="0.05,0.3,1",
                        help="learning rates as multiples of the Original's")
    parser.add_argument("--epochs", default="1,2", help="step budgets, epochs of forget")
    parser.add_argument("--stop", choices=("membership", "none"), default="membership",
                        help="the shared stop rule inside each budget, or none (the budget "
                        "runs out)")
    parser.add_argument("--max-samples", type=int, default=400,
                        help="rows scored of each split but test and forget")
    parser.add_argument("--workdir", default="runs/benchmarks/frontier")
    return parser


def score(model: Path, data: Path, max_samples: int) -> dict[str, Any]:
    metrics, _ = evaluate(load_scorer(model), data, splits=("test", "forget"),
                          max_samples=max_samples, ranking_positives=0)
    return {"test_auc": metrics["test"]["auc"], "forget_auc": metrics["forget"]["auc"],
            "mia_auc": metrics.get("mia_auc"), "canary_lift": canary_lift(metrics.get("canary"))}


def rows_passed(record: dict[str, Any]) -> int:
    """Rows through forward and backward: a step's forget batch, and its retain batch."""
    batch = record["options"]["schedule"]["batch_size"]
    return sum(batch * (2 if "retain_ce" in step or "retain" in step else 1)
               for step in record["history"]["steps"])


def in_band(point: dict[str, Any], original_test_auc: float) -> bool:
    closed = [point.get(key) for key in GAP_KEYS.values()]
    return (all(v is not None and not math.isnan(v) and CLOSURE_BAND[0] <= v <= CLOSURE_BAND[1]
                for v in closed)
            and point["test_auc"] >= original_test_auc - TEST_AUC_ALLOWANCE)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    data, original, work = Path(args.data), Path(args.original), Path(args.workdir)
    trained = read_meta(original)["train_record"]
    backbone = from_dict(BackboneConfig, trained["backbone"], "backbone")
    train = from_dict(TrainConfig, trained["train"], "train")
    retrain_dir = work / "retrain"
    record_file = retrain_dir / "unlearn_record.json"
    retrain = (json.loads(record_file.read_text()) if record_file.is_file() else
               run_method("retrain", data, None, backbone, train, {}, retrain_dir,
                          overwrite=True))
    retrain_rows = train.epochs * len(read_split(data, "retain"))
    points = [{"method": "original", **score(original, data, args.max_samples)},
              {"method": "retrain", **score(retrain_dir, data, args.max_samples)}]
    extra = json.loads(args.options)
    for entry in args.methods.split(","):
        method = method_of(entry)
        for scale in [float(s) for s in args.lr_scales.split(",")]:
            for epochs in [float(e) for e in args.epochs.split(",")]:
                out = work / f"{entry.replace('/', '-')}-lr{scale:g}-ep{epochs:g}"
                options = merge_dicts(extra.get(entry, {}), {
                    "schedule": {"lr_scale": scale, "epochs": epochs, "forget_only_epochs": 0},
                    "stop": {"kind": args.stop}})
                record = run_method(method, data, original, backbone, train, options, out,
                                    overwrite=True)
                points.append({"method": entry, "lr_scale": scale, "epochs": epochs,
                               "steps": record["history"]["total_steps"],
                               "kept": record["history"].get("kept_step", "-"),
                               "rows_x": rows_passed(record) / retrain_rows,
                               "seconds_x": record["unlearn_seconds"]
                               / retrain["unlearn_seconds"],
                               **score(out, data, args.max_samples)})
    add_gap_closed(points)
    return points


def report(points: list[dict[str, Any]], out: Path) -> None:
    fmt = {float: lambda v: "-" if math.isnan(v) else f"{v:.3f}"}
    keys = ["method", "lr_scale", "epochs", "steps", "kept", "rows_x", "seconds_x", "test_auc",
            *GAP_KEYS.values(), "over_forgot"]
    table = [[fmt.get(type(p.get(k)), str)(p.get(k)) if p.get(k) is not None else "-"
              for k in keys] for p in points]
    print_table(keys, table)
    plot(points, out / "forgetting_frontier.png")
    reference = next(p for p in points if p["method"] == "original")["test_auc"]
    for method in dict.fromkeys(p["method"] for p in points if "lr_scale" in p):
        landed = sorted((p for p in points if p["method"] == method
                         and in_band(p, reference)), key=lambda p: p["rows_x"])
        if landed:
            best = landed[0]
            print(f"{method}: cheapest inside {CLOSURE_BAND[0]}-{CLOSURE_BAND[1]}: lr_scale "
                  f"{best['lr_scale']:g}, {best['steps']} steps, {best['rows_x']:.3f}x "
                  f"Retrain's rows, {best['seconds_x']:.3f}x its seconds")
        else:
            print(f"{method}: none inside {CLOSURE_BAND[0]}-{CLOSURE_BAND[1]} on all three "
                  f"with test AUC within {TEST_AUC_ALLOWANCE}")


def plot(points: list[dict[str, Any]], path: Path) -> None:
    panels = [("gap_closed_mean", "mean share closed"), *[(v, v) for v in GAP_KEYS.values()]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        ax.axhspan(*CLOSURE_BAND, color="#2a9d8f", alpha=0.1)
        for method in dict.fromkeys(p["method"] for p in points if "lr_scale" in p):
            mine = sorted((p for p in points if p["method"] == method),
                          key=lambda p: p["rows_x"])
            ax.plot([p["rows_x"] for p in mine], [p.get(key) for p in mine], marker="o",
                    label=method)
        ax.set_xlabel("rows passed, x Retrain's")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    report(run(args), Path(args.workdir))


if __name__ == "__main__":
    main()
