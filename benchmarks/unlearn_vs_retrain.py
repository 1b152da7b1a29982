"""Unlearning time of every method against Retrain, for a 20% request and a one-user request.

The paper's efficiency claim, as ratios measured in one run on one Original:

    python -m benchmarks.unlearn_vs_retrain --model tiny-llama --users 600
    python -m benchmarks.unlearn_vs_retrain --model smollm2-135m --epochs 1

Every method's time runs from "the Original is loaded" to "the result is
saved". The one-user request forgets one user of the 20% request from the
same Original (the same train split, a one-user forget set). E2URec runs its
defaults unless ``--e2urec-option`` says otherwise, SISA (the exact path) unless
``--sisa-option`` does (e.g. ``slices=4``). The last lines are the ratios
``e2urec/retrain 20%: X`` and ``e2urec/retrain one user: Y``, then
``sisa/retrain one user: X`` and ``sisa/retrain 20%: Y`` (with ``--seeds``, their
means over the seeds, each seed side by side in one run):

    python -m benchmarks.unlearn_vs_retrain --methods e2urec --seeds 42,43,44 \
        --data runs/demo-seeds/stages/data-A/data --data ... (one a seed)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from benchmarks.common import add_common_args, pick_device, prepared_data, print_table
from e2urec.bench.config import load_study
from e2urec.bench.tables import canary_lift
from e2urec.checkpoints.scorers import load_scorer
from e2urec.config import BackboneConfig, TrainConfig, parse_overrides
from e2urec.data.samples import read_manifest, read_split, write_jsonl
from e2urec.evaluation.evaluate import evaluate
from e2urec.methods import run_method
from e2urec.training.finetune import train_split

METHODS = ["e2urec", "sisa", "receraser", "neggrad", "graddiff", "npo", "bad-teacher-labels",
           "bad-teacher"]


def one_user_request(data: Path, out: Path) -> Path:
    """A copy of ``data`` whose forget set is one forgotten user's alone: the most active
    canary user where the data has canaries (their trigger shows whether they are
    remembered), else the most active forgotten user."""
    if (out / "manifest.json").is_file():
        return out
    forget = read_split(data, "forget")
    manifest = read_manifest(data)
    canary_users = set((manifest.get("canaries") or {}).get("users") or {})
    counts: dict[str, int] = {}
    for row in forget:
        if row["user_id"] in canary_users or not canary_users:
            counts[row["user_id"]] = counts.get(row["user_id"], 0) + 1
    user = max(sorted(counts), key=counts.get)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(data, tmp)
    write_jsonl(tmp / "forget.jsonl", [r for r in forget if r["user_id"] == user])
    write_jsonl(tmp / "retain.jsonl", [r for r in read_split(data, "train")
                                       if r["user_id"] != user])
    if canary_users:  # the request's own canary only
        manifest["canaries"]["users"] = {user: manifest["canaries"]["users"][user]}
        write_jsonl(tmp / "canary.jsonl", [r for r in read_split(data, "canary")
                                           if r["user_id"] == user])
    manifest.update(forget_user_ids=[user])
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.rename(out)
    return out


def canary_closure(folder: Path, original: Path, work: Path, methods: list[str]
                   ) -> dict[str, float]:
    """Each method's share of the Original-to-Retrain gap in the request's canary lift."""
    if not read_split(folder, "canary"):
        return {}
    lifts = {}
    for name, model in [("original", original), ("retrain", work / "retrain"),
                        *[(m, work / m) for m in methods]]:
        metrics, _ = evaluate(load_scorer(model), folder, splits=("forget",),
                              ranking_positives=0)
        lifts[name] = canary_lift(metrics.get("canary"))
    gap = lifts["original"] - lifts["retrain"]
    return {m: (lifts["original"] - lifts[m]) / gap if gap else float("nan")
            for m in ["retrain", *methods]} | {"lift original": lifts["original"],
                                                "lift retrain": lifts["retrain"]}


def time_methods(data: Path, original: Path, backbone: BackboneConfig, train: TrainConfig,
                 methods: list[str], options: dict[str, dict], work: Path, cpu: bool) -> dict:
    seconds = {}
    for method in ["retrain", *methods]:
        record = run_method(method, data, original, backbone, train, options.get(method, {}),
                            work / method, cpu=cpu, overwrite=True)
        seconds[method] = (record["unlearn_seconds"], record["trainable_share"],
                           record.get("phases"))
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of Original/Retrain")
    parser.add_argument("--e2urec-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an E2URec option (repeatable), e.g. preset=paper")
    parser.add_argument("--sisa-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a SISA option (repeatable), e.g. slices=4")
    parser.add_argument("--config", help="a study YAML whose backbone and train sections "
                        "(the demo's recipe) replace --model, --epochs and --lora")
    parser.add_argument("--lora", action="store_true",
                        help="Original, Retrain and shards as LoRA adapters (for large models)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", help="comma-separated seeds, each its own data split, "
                        "Original and requests (with --data: one --data a seed, in order); "
                        "the last two lines are the means over seeds")
    add_common_args(parser, data_help="a prepared folder (repeat it, one a seed, with "
                    "--seeds); made from ML-100K when absent", data_repeats=True)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    datas = args.data or [None] * len(seeds)
    if len(datas) != len(seeds):
        parser.error(f"{len(datas)} --data folder(s) for {len(seeds)} seed(s): give one a seed")
    options = {"e2urec": parse_overrides(args.e2urec_option),
               "sisa": parse_overrides(args.sisa_option)}
    methods = [m for m in args.methods.split(",") if m]
    ratios: dict[str, list[float]] = {}
    for seed, data in zip(seeds, datas, strict=True):
        for request, ratio in run_seed(args, seed, data, methods, options).items():
            ratios.setdefault(request, []).append(ratio)
    # E2URec's two lines, then the exact path's (one user first): the README quotes them.
    order = ["e2urec/retrain 20%", "e2urec/retrain one user", "sisa/retrain one user",
             "sisa/retrain 20%"]
    if len(seeds) > 1:
        for name in (n for n in order if n in ratios):
            print(f"{name}, per seed {seeds}: " + ", ".join(f"{v:.2f}" for v in ratios[name]))
    for name in (n for n in order if n in ratios):
        print(f"{name}: {sum(ratios[name]) / len(ratios[name]):.2f}")


def run_seed(args: argparse.Namespace, seed: int, data: str | None, methods: list[str],
             options: dict[str, dict]) -> dict[str, float]:
    """One seed: its Original, both requests, the table; E2URec's and SISA's ratios to
    Retrain."""
    cpu = pick_device(args.device).type == "cpu"
    args = argparse.Namespace(**{**vars(args), "seed": seed, "data": data})
    data = prepared_data(args)
    work = Path(args.workdir) / f"vs-retrain-{args.model}" / (f"seed-{seed}" if args.seeds
                                                              else "")
    backbone = BackboneConfig(name=args.model)
    train = TrainConfig(epochs=args.epochs, seed=seed, use_lora=args.lora,
                        lr=1e-3 if args.model.startswith("tiny-") else 2e-4)
    if args.config:  # the study's recipe, so the Original is the one its bench trains
        study = load_study(args.config)
        backbone, train = study.backbone, dataclasses.replace(study.train, seed=seed)
    original = work / "original"
    if not (original / "e2urec_model.json").is_file():
        train_split(data, "train", backbone, train, original)
    requests = {"20%": data, "one user": one_user_request(data, work / "data-one-user")}
    results = {name: time_methods(folder, original, backbone, train, methods, options,
                                  work / name.replace(" ", "-"), cpu)
               for name, folder in requests.items()}
    print(f"model {backbone.name}, seed {seed}, data {data}, Original/Retrain {train.epochs} "
          f"epoch(s){' with LoRA' if train.use_lora else ''}, options "
          + ", ".join(f"{m} {o or 'defaults'}" for m, o in options.items()))
    rows = []
    for request, seconds in results.items():
        base = seconds["retrain"][0]
        rows += [[request, m, f"{s:.1f}", f"{s / base:.2f}", f"{100 * share:.2f}%"]
                 for m, (s, share, _) in seconds.items()]
    print_table(["request", "method", "unlearn s", "vs retrain", "trainable"], rows)
    closed = canary_closure(requests["one user"], original, work / "one-user", methods)
    if closed:
        print(f"one user's canary lift: Original {closed.pop('lift original'):.3f}, Retrain "
              f"{closed.pop('lift retrain'):.3f}; share of the gap closed: "
              + ", ".join(f"{m} {v:.2f}" for m, v in closed.items()))
    for request, seconds in results.items():
        phases = seconds.get("e2urec", (0, 0, None))[2] or {}
        print(f"e2urec phases, {request}: " + ", ".join(f"{k} {v:.1f}s"
                                                       for k, v in phases.items()))
    return {f"{method}/retrain {request}": seconds[method][0] / seconds["retrain"][0]
            for request, seconds in results.items() for method in ("e2urec", "sisa")
            if method in seconds}


if __name__ == "__main__":
    main()
