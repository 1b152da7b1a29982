"""Unlearning time against Retrain, for a 20% request and a one-user request, each with the
verdict a deployment would give it.

    python -m benchmarks.unlearn_vs_retrain            # the recommended settings of both paths
    python -m benchmarks.unlearn_vs_retrain --seeds 42,43,44

Every method's time runs from "the Original is loaded" to "the result is saved". The
one-user request forgets one user of the 20% request from the same Original (the same
train split, a one-user forget set). By default the data, Original and Retrain follow the
demo's recipe (``--config``, configs/demo-seeds.yaml) with ``--shards`` user shards, and
both paths run their recommended settings: E2URec is that file's ``e2urec/shards`` (a
teacher of user-sharded models that never held the user, trained once before any request:
its seconds are printed beside, untimed), SISA keeps user shards cut in 4 slices in time
(``shard_by=user``, ``slices=4``); ``--e2urec-option`` and ``--sisa-option`` change them.

Each request gets its verdict, untimed, from the auditor's 4 reference models: the 20%
request the bench's (forgotten users against never-trained users, evaluation/verdict.py),
the one-user request the store's (deploy/verify.py: the user's own test before and after).
An approximate one-user request the check cannot see (no power on the Original) is
reported with the measured power (the share of training users the per-user test flags),
followed by its cost as part of a queued batch (the 20% request's seconds a user). The
last lines are::

    e2urec/retrain one user: X (pass | fail: ... | no power: P)
    e2urec/retrain batched, a user: X (the batch's verdict)      # after "no power"
    sisa/retrain one user: Y (verdict)
    e2urec/retrain 20%: Z (verdict)
    sisa/retrain 20%: W (verdict)

with ``--seeds``, the ratios' means over seeds and every seed's verdicts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from benchmarks.common import add_common_args, device_of, prepared_data, print_table
from e2urec.bench.config import StudyConfig, load_study
from e2urec.bench.tables import canary_lift
from e2urec.checkpoints.scorers import load_scorer
from e2urec.config import BackboneConfig, TrainConfig, merge_dicts, parse_overrides
from e2urec.data.protocol import prepare_dataset, write_prepared
from e2urec.data.samples import read_manifest, read_split, subsample, unplanted, write_jsonl
from e2urec.deploy.auditor import stated_power
from e2urec.deploy.measurements import measure_request, verification_rows
from e2urec.deploy.verify import Verification, cannot_show
from e2urec.deploy.verify import verdict as store_verdict
from e2urec.evaluation.evaluate import evaluate
from e2urec.evaluation.lira import reference_levels
from e2urec.evaluation.verdict import summary as verdict_summary
from e2urec.methods import run_method
from e2urec.training.finetune import train_split
from e2urec.training.loop import make_accelerator
from e2urec.training.references import REFERENCES_FILE, train_references
from e2urec.training.shards import ShardTrainer, save_initial_ensemble

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


def recommended_options(study: StudyConfig | None, e2urec: list[str], sisa: list[str]
                        ) -> dict[str, dict]:
    """Both paths' settings: the study's ``e2urec/shards`` (else E2URec's defaults) and SISA
    on user shards in 4 slices, each with the command line's options on top."""
    e2urec_base = dict((study.methods.get("e2urec/shards") if study else None) or {})
    return {"e2urec": merge_dicts(e2urec_base, parse_overrides(e2urec)),
            "sisa": merge_dicts({"shard_by": "user", "slices": 4}, parse_overrides(sisa))}


def before_any_request(data: Path, backbone: BackboneConfig, train: TrainConfig,
                       options: dict[str, dict], work: Path, cpu: bool) -> dict[str, float]:
    """What exists before a request, untimed: the shards teacher (where E2URec asks for one)
    and the auditor's references; their seconds."""
    seconds = {}
    e2urec = options.get("e2urec", {})
    if e2urec.get("forget_teacher") == "shards" and not e2urec.get("shards"):
        teacher = work / "teacher"
        began = time.perf_counter()
        if not (teacher / "e2urec_model.json").is_file():
            save_initial_ensemble(ShardTrainer(data, backbone, train,
                                               make_accelerator(cpu=cpu), teacher),
                                  "user_balanced", teacher)
        seconds["shards teacher"] = time.perf_counter() - began
        e2urec["shards"] = str(teacher)
    references = work / "references"
    began = time.perf_counter()
    if not (references / REFERENCES_FILE).is_file():
        train_references(data, backbone, train, references, AUDITOR_REFERENCES,
                         seed=train.seed, cpu=cpu)
    seconds["references"] = time.perf_counter() - began
    return seconds


def audit_users(data: Path) -> int:
    return len({r["user_id"] for r in read_split(data, "audit")})


def group_verdict(model: Path, data: Path, references: Path) -> str:
    """The bench's verdict on a request's users (forgotten against never-trained; "-": too
    few never-trained users to calibrate against)."""
    if audit_users(data) < MIN_AUDIT_USERS:
        return "-"
    levels = tuple(reference_levels(references, unplanted(read_split(data, "forget")),
                                    subsample(read_split(data, "audit"), EVAL_ROWS)))
    metrics, _ = evaluate(load_scorer(model), data, splits=("forget",), max_samples=EVAL_ROWS,
                          ranking_positives=0, references=levels)
    return short_verdict(metrics.get("verdict"))


def short_verdict(result: dict | None) -> str:
    return "-" if result is None else verdict_summary(result)


def user_verdict(original: Path, model: Path, data: Path, references: Path,
                 exact: bool) -> str:
    """The store's verdict on a one-user request: its check on the Original, then on the
    model (deploy/verify.py); ``no power`` where no approximate deletion could be shown."""
    verification = Verification()
    if audit_users(data) < MIN_AUDIT_USERS:
        return "-"
    levels = tuple(reference_levels(references, *verification_rows(data, verification)))
    before = measure_request(original, data, verification, levels)
    if not exact and (reason := cannot_show(before, verification)):
        return reason.split(":")[0]
    after = measure_request(model, data, verification, levels)
    reason = store_verdict(before, after, verification, exact)
    return "pass" if reason is None else f"fail: {reason}"


def one_user_power(original: Path, data: Path, references: Path, seed: int) -> float:
    """The share of training users the per-user test flags on the Original."""
    return stated_power(original, data, references, seed=seed)["by_size"].get("1", 0.0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="a study YAML: its data, backbone and train sections (the demo's "
                        "recipe) and its e2urec/shards settings ('' for none)")
    parser.add_argument("--model", help="the backbone instead of the study's (backbone.name)")
    parser.add_argument("--epochs", type=int, help="epochs of Original/Retrain instead of the "
                        "study's")
    parser.add_argument("--shards", type=int, default=8,
                        help="user shards of the data prepared here (teacher and SISA)")
    parser.add_argument("--e2urec-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an E2URec option on top of the recommended (repeatable)")
    parser.add_argument("--sisa-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a SISA option on top of shard_by=user, slices=4 (repeatable)")
    parser.add_argument("--lora", action="store_true",
                        help="Original, Retrain and shards as LoRA adapters (for large models)")
    parser.add_argument("--methods", default="e2urec,sisa",
                        help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--seeds", help="comma-separated seeds, each its own data split, "
                        "Original and requests (with --data: one --data a seed, in order); "
                        "the last lines are the means over seeds")
    add_common_args(parser, data_help="a prepared folder (repeat it, one a seed, with "
                    "--seeds); made from ML-100K when absent", data_repeats=True)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    datas = args.data or [None] * len(seeds)
    if len(datas) != len(seeds):
        parser.error(f"{len(datas)} --data folder(s) for {len(seeds)} seed(s): give one a seed")
    methods = [m for m in args.methods.split(",") if m]
    results: dict[str, list[tuple[float, str]]] = {}
    for seed, data in zip(seeds, datas, strict=True):
        for line, value in run_seed(args, seed, data, methods).items():
            results.setdefault(line, []).append(value)
    print_last_lines(results, seeds)


def print_last_lines(results: dict[str, list[tuple[float, str]]], seeds: list[int]) -> None:
    """The ratios, each with its verdicts (seed by seed), one user first."""
    for name in (n for n in LAST_LINES if n in results):
        ratios = [r for r, _ in results[name]]
        verdicts = "; ".join(v for _, v in results[name])
        each = f" per seed {seeds}: " + ", ".join(f"{r:.2f}" for r in ratios) + ";" \
            if len(seeds) > 1 else ""
        print(f"{name}:{each} {sum(ratios) / len(ratios):.2f} ({verdicts})")


def run_seed(args: argparse.Namespace, seed: int, data: str | None, methods: list[str]
             ) -> dict[str, tuple[float, str]]:
    """One seed: its Original, both requests, the table; the last lines' ratios and
    verdicts."""
    cpu = device_of(args).type == "cpu"
    study = load_study(args.config) if args.config else None
    args = argparse.Namespace(**{**vars(args), "seed": seed, "data": data})
    work = Path(args.workdir) / f"vs-retrain-{args.model or 'study'}" / (
        f"seed-{seed}" if args.seeds else "")
    data = Path(data) if data else prepare_here(study, args, work)
    read_manifest(data)
    backbone, train = recipe(study, args, seed)
    original = work / "original"
    if not (original / "e2urec_model.json").is_file():
        train_split(data, "train", backbone, train, original)
    options = recommended_options(study, args.e2urec_option, args.sisa_option)
    setup = before_any_request(data, backbone, train, options, work, cpu)
    requests = {"20%": data, "one user": one_user_request(data, work / "data-one-user")}
    results = {}
    for name, folder in requests.items():
        results[name] = time_methods(folder, original, backbone, train, methods, options,
                                     work / name.replace(" ", "-"), cpu)
        if "sisa" in methods:  # the one-user request starts from the same initial ensemble
            options["sisa"].setdefault("initial", str(work / "20%" / "sisa" / "initial"))
    print(f"model {backbone.name}, seed {seed}, data {data}, Original/Retrain {train.epochs} "
          f"epoch(s){' with LoRA' if train.use_lora else ''}; before any request (untimed): "
          + ", ".join(f"{k} {v:.1f}s" for k, v in setup.items()) + "; options "
          + ", ".join(f"{m} {o or 'defaults'}" for m, o in options.items()))
    print_request_table(results)
    closed = canary_closure(requests["one user"], original, work / "one-user", methods)
    if closed:
        print(f"one user's canary lift: Original {closed.pop('lift original'):.3f}, Retrain "
              f"{closed.pop('lift retrain'):.3f}; share of the gap closed: "
              + ", ".join(f"{m} {v:.2f}" for m, v in closed.items()))
    return verdict_lines(results, requests, original, work, seed,
                         [m for m in ("e2urec", "sisa") if m in methods])


def prepare_here(study: StudyConfig | None, args: argparse.Namespace, work: Path) -> Path:
    """The study's data recipe with ``--shards`` user shards and this seed (made once)."""
    if study is None:
        return prepared_data(args)
    out = work.parent / f"data-{args.shards}-shards-{args.seed}"
    if not (out / "manifest.json").is_file():
        config = dataclasses.replace(study.data, seed=args.seed, shards=args.shards)
        write_prepared(prepare_dataset(config), out)
    return out


def recipe(study: StudyConfig | None, args: argparse.Namespace, seed: int
           ) -> tuple[BackboneConfig, TrainConfig]:
    """The study's backbone and training (or the plain defaults), then the flags."""
    backbone = study.backbone if study else BackboneConfig(name="tiny-llama")
    train = study.train if study else TrainConfig(lr=1e-3)
    if args.model:
        backbone = BackboneConfig(name=args.model)
        train = dataclasses.replace(train, lr=1e-3 if args.model.startswith("tiny-") else 2e-4)
    if args.epochs:
        train = dataclasses.replace(train, epochs=args.epochs)
    return backbone, dataclasses.replace(train, seed=seed, use_lora=args.lora)


def print_request_table(results: dict[str, dict]) -> None:
    rows = []
    for request, seconds in results.items():
        base = seconds["retrain"][0]
        rows += [[request, m, f"{s:.1f}", f"{s / base:.2f}", f"{100 * share:.2f}%"]
                 for m, (s, share, _) in seconds.items()]
    print_table(["request", "method", "unlearn s", "vs retrain", "trainable"], rows)
    for request, seconds in results.items():
        phases = seconds.get("e2urec", (0, 0, None))[2] or {}
        if phases:
            print(f"e2urec phases, {request}: " + ", ".join(f"{k} {v:.1f}s"
                                                           for k, v in phases.items()))


def verdict_lines(results: dict[str, dict], requests: dict[str, Path], original: Path,
                  work: Path, seed: int, paths: list[str]) -> dict[str, tuple[float, str]]:
    """Each path's ratio to Retrain on each request, with the request's verdict."""
    references, lines = work / "references", {}
    batch_users = len({r["user_id"] for r in read_split(requests["20%"], "forget")})
    for method in paths:
        exact = method == "sisa"
        one = results["one user"]
        ratio = one[method][0] / one["retrain"][0]
        told = user_verdict(original, work / "one-user" / method, requests["one user"],
                            references, exact)
        if told == "no power":
            told = f"no power: {one_user_power(original, requests['20%'], references, seed):.2f}"
        lines[f"{method}/retrain one user"] = (ratio, told)
        batch = results["20%"]
        lines[f"{method}/retrain 20%"] = (
            batch[method][0] / batch["retrain"][0],
            group_verdict(work / "20%" / method, requests["20%"], references))
        if told.startswith("no power"):  # queued with others, unlearned as one batch
            lines[f"{method}/retrain batched, a user"] = (
                batch[method][0] / batch_users / one["retrain"][0],
                lines[f"{method}/retrain 20%"][1])
    return lines


DEFAULT_CONFIG = "configs/demo-seeds.yaml"
AUDITOR_REFERENCES = 4
EVAL_ROWS = 400  # audit rows the verdict reads, as the demo's eval_max_samples
MIN_AUDIT_USERS = 4  # fewer never-trained users cannot calibrate the per-user test
LAST_LINES = ["e2urec/retrain one user", "e2urec/retrain batched, a user",
              "sisa/retrain one user", "e2urec/retrain 20%", "sisa/retrain 20%"]


if __name__ == "__main__":
    main()
