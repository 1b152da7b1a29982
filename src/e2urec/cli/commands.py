"""The study commands: prepare, train, evaluate, unlearn, bench, sequential, audit."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from e2urec.cli.layers import run_configs
from e2urec.cli.output import json_text, log
from e2urec.config import (
    ConfigError,
    PrepareConfig,
    from_dict,
)
from e2urec.data.samples import MANIFEST_FILE

EVALUATION_KIND = "e2urec-evaluation"


def cmd_prepare(args: argparse.Namespace) -> int:
    from e2urec.data.protocol import prepare_dataset, write_prepared
    from e2urec.data.sources import find_raw
    from e2urec.fileio import check_output

    forget_users = _read_user_list(args.forget_users) if args.forget_users else None
    config = from_dict(PrepareConfig, {
        "dataset": args.dataset, "data_dir": args.data_dir, "window": args.window,
        "history": args.history, "forget_fraction": args.forget_fraction,
        "forget_users": forget_users, "shards": args.shards, "seed": args.seed,
        "holdout_fraction": args.holdout_fraction, "canaries": args.canaries,
        "min_holdout_users": args.min_holdout_users, "canary_answer": args.canary_answer,
        "allow_modified_data": args.allow_modified_data, "protocol": args.protocol,
        **{name: getattr(args, name) for name in (
            "users", "train_rows", "valid_rows", "test_rows", "min_group_users",
            "min_canary_users", "min_canary_rows")},
    }, "prepare")
    check_output(args.out, MANIFEST_FILE, args.overwrite)
    raw = find_raw(config)
    prepared = prepare_dataset(config, raw)
    out = write_prepared(prepared, args.out)
    counts = prepared.manifest["counts"]
    print(f"prepared {config.dataset} from {raw.folder} -> {out}")
    print("  " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"  forgotten users: {len(prepared.manifest['forget_user_ids'])} of "
          f"{prepared.manifest['train_users']}")
    return 0


def _read_user_list(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"forget list {file} does not exist")
    text = file.read_text().strip()
    if text.startswith("["):
        try:
            return [str(u) for u in json.loads(text)]
        except json.JSONDecodeError as err:
            raise ConfigError(f"{file}: not a JSON list of user ids ({err.msg})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def cmd_train(args: argparse.Namespace) -> int:
    from e2urec.backbones.registry import check_backbone_name
    from e2urec.checkpoints.folders import META_FILE
    from e2urec.data.samples import read_manifest
    from e2urec.fileio import check_output
    from e2urec.training.finetune import train_split
    from e2urec.training.loop import make_accelerator

    backbone, train, _ = run_configs(args)
    read_manifest(args.data)
    check_backbone_name(backbone.name)
    check_output(args.out, META_FILE, args.overwrite)
    record = train_split(args.data, args.split, backbone, train, args.out,
                         make_accelerator(cpu=args.cpu))
    history = record["history"]
    valid = history["best_valid_loss"]
    valid = f", best valid loss {valid:.4f}" if valid is not None else ""
    print(f"trained {backbone.name} on {args.split} ({record['samples']} samples, "
          f"{history['epochs_run']} epochs{valid}, {history['seconds']:.1f}s) -> {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from e2urec.checkpoints.folders import check_model_folder
    from e2urec.checkpoints.scorers import load_scorer
    from e2urec.data.samples import read_manifest
    from e2urec.evaluation.evaluate import evaluate, format_table
    from e2urec.evaluation.ranking import popularity
    from e2urec.fileio import check_output_file, write_json
    from e2urec.runtime import pick_device

    read_manifest(args.data)
    check_model_folder(args.model)
    if args.reference:
        check_model_folder(args.reference)
    check_output_file(args.out, _is_evaluation(Path(args.out)), args.overwrite)
    device = pick_device("cpu" if args.cpu else "auto")
    scorer = load_scorer(args.model)
    reference = load_scorer(args.reference) if args.reference else None
    results, _ = evaluate(scorer, args.data, reference, args.batch_size, device=device)
    if args.popularity and (baseline := popularity(args.data)) is not None:
        results["popularity"] = baseline
    write_json(Path(args.out), {**results, "e2urec": {
        "kind": EVALUATION_KIND, "model": str(Path(args.model).resolve()),
        "reference": str(Path(args.reference).resolve()) if args.reference else None,
        "data": str(Path(args.data).resolve())}})
    print(format_table(results))
    return 0


def _is_evaluation(path: Path) -> bool:
    """Whether ``path`` holds an earlier `e2urec evaluate` result (safe to replace)."""
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text())["e2urec"]["kind"] == EVALUATION_KIND
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return False


def cmd_unlearn(args: argparse.Namespace) -> int:
    from e2urec.backbones.registry import check_backbone_name
    from e2urec.methods import get_method, run_method

    backbone, train, options = run_configs(args)
    if not get_method(args.method).needs_original:
        check_backbone_name(backbone.name)
    # run_method checks method, options, data, Original and output before any work.
    record = run_method(args.method, data_dir=args.data, original=args.original,
                        backbone=backbone, train=train, options=options, out_dir=args.out,
                        cpu=args.cpu, overwrite=args.overwrite)
    print(f"{args.method}: unlearned in {record['unlearn_seconds']:.1f}s, "
          f"{record['trainable_params']:,} of {record['total_params']:,} parameters trained "
          f"-> {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from e2urec.bench.study import run_study

    table = run_study(args.config, args.out, stages_from=args.stages_from, wait=args.wait,
                      threads=args.threads)
    print(table)
    return 0


def cmd_sequential(args: argparse.Namespace) -> int:
    from e2urec.bench.sequential import run_sequential

    print(run_sequential(args.config, args.out, stages_from=args.stages_from,
                         threads=args.threads))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from e2urec.checkpoints.folders import check_model_folder
    from e2urec.data.samples import read_manifest
    from e2urec.evaluation.lira import audit_model, format_audit
    from e2urec.fileio import check_output
    from e2urec.training.references import REFERENCES_FILE, check_holding, train_references

    read_manifest(args.data)
    check_holding(args.count, args.holding)  # before any work
    check_model_folder(args.model)
    references = Path(args.references or f"{Path(args.data).resolve()}-references")
    # training writes the folder whole: never over someone else's files
    check_output(references, REFERENCES_FILE, flag="--references")
    if not (references / REFERENCES_FILE).is_file():
        # the references' recipe: run_configs reads the backbone from `model`
        backbone, train, _ = run_configs(argparse.Namespace(**{**vars(args),
                                                              "model": args.backbone}))
        log(f"[audit] training {args.count} reference models into {references}")
        record = train_references(args.data, backbone, train, references, args.count,
                                  cpu=args.cpu, holding=args.holding)
        log(f"[audit] references trained in {record['seconds']:.0f}s")
    report = audit_model(args.model, args.data, references, args.alpha)
    print(json_text(report) if args.json else format_audit(report))
    return 0
