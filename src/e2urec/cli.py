"""The ``e2urec`` command: prepare, train, unlearn, evaluate, bench."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from e2urec.config import (
    BackboneConfig,
    ConfigError,
    PrepareConfig,
    TrainConfig,
    from_dict,
    parse_overrides,
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with backbone:/train:/method: sections")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. train.lr=5e-4 (repeatable)")
    parser.add_argument("--seed", type=int, help="random seed (train.seed)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even with a GPU")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2urec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prepare", help="MovieLens -> prompt samples, splits, forget set")
    prep.add_argument("--dataset", choices=["ml-100k", "ml-1m"], default="ml-100k")
    prep.add_argument("--data-dir", help="folder with the MovieLens files")
    prep.add_argument("--window", type=int, default=PrepareConfig.window)
    prep.add_argument("--history", type=int, default=PrepareConfig.history)
    group = prep.add_mutually_exclusive_group()
    group.add_argument("--forget-fraction", type=float, default=PrepareConfig.forget_fraction)
    group.add_argument("--forget-users", help="file of user ids to forget (one a line, or JSON)")
    prep.add_argument("--shards", type=int, default=PrepareConfig.shards)
    prep.add_argument("--seed", type=int, default=PrepareConfig.seed)
    prep.add_argument("--out", required=True)

    train = sub.add_parser("train", help="fine-tune a backbone on train (Original) or retain")
    train.add_argument("--data", required=True, help="a folder written by `e2urec prepare`")
    train.add_argument("--split", choices=["train", "retain"], default="train")
    train.add_argument("--model", default="tiny-llama",
                       help="tiny-llama, tiny-t5, smollm2-135m, a hub id or a local folder")
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lora", action="store_true", help="train LoRA adapters only")
    train.add_argument("--out", required=True)
    _add_common(train)

    unlearn = sub.add_parser("unlearn", help="make a trained model forget the forget set")
    unlearn.add_argument("--method", required=True)
    unlearn.add_argument("--data", required=True)
    unlearn.add_argument("--original", help="the Original model folder (methods that need it)")
    unlearn.add_argument("--model", default="tiny-llama",
                         help="the backbone for methods that train from scratch")
    unlearn.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="a method option, e.g. alpha=2 (repeatable)")
    unlearn.add_argument("--out", required=True)
    _add_common(unlearn)

    evaluate = sub.add_parser("evaluate", help="AUC/ACC/LogLoss, and distances to a reference")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--model", required=True, help="a model, adapter or ensemble folder")
    evaluate.add_argument("--reference", help="the retrained model, for forgetting metrics")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--out", required=True, help="results JSON file")

    bench = sub.add_parser("bench", help="the whole comparison from one YAML study")
    bench.add_argument("--config", required=True)
    bench.add_argument("--out", required=True)
    bench.add_argument("--stages-from", metavar="DIR",
                       help="keep and reuse stages in another study's output folder "
                            "(default: --out)")
    return parser


def load_sections(args: argparse.Namespace) -> dict[str, Any]:
    """Config layers, lowest first: defaults < --config file < --set overrides < flags."""
    sections: dict[str, Any] = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
        sections.update(loaded)
    for key, value in parse_overrides(getattr(args, "set", [])).items():
        if isinstance(value, dict) and isinstance(sections.get(key), dict):
            sections[key] = {**sections[key], **value}
        else:
            sections[key] = value
    return sections


def train_configs(args: argparse.Namespace) -> tuple[BackboneConfig, TrainConfig]:
    sections = load_sections(args)
    unknown = set(sections) - {"backbone", "train", "method"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; "
                          "use backbone, train, method")
    backbone = {**sections.get("backbone", {}), "name": args.model}
    train = dict(sections.get("train", {}))
    flags = {"epochs": getattr(args, "epochs", None), "lr": getattr(args, "lr", None),
             "batch_size": getattr(args, "batch_size", None), "seed": args.seed}
    train.update({k: v for k, v in flags.items() if v is not None})
    if getattr(args, "lora", False):
        train["use_lora"] = True
    return (from_dict(BackboneConfig, backbone, "backbone"),
            from_dict(TrainConfig, train, "train"))


def cmd_prepare(args: argparse.Namespace) -> int:
    from e2urec.data.movielens import read_movielens
    from e2urec.data.protocol import prepare, write_prepared
    from e2urec.data.sources import locate_dataset

    forget_users = _read_user_list(args.forget_users) if args.forget_users else None
    config = from_dict(PrepareConfig, {
        "dataset": args.dataset, "data_dir": args.data_dir, "window": args.window,
        "history": args.history, "forget_fraction": args.forget_fraction,
        "forget_users": forget_users, "shards": args.shards, "seed": args.seed,
    }, "prepare")
    folder = locate_dataset(config.dataset, config.data_dir)
    prepared = prepare(read_movielens(folder), config, source=str(folder))
    out = write_prepared(prepared, args.out)
    counts = prepared.manifest["counts"]
    print(f"prepared {config.dataset} from {folder} -> {out}")
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
        return [str(u) for u in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip()]


def cmd_train(args: argparse.Namespace) -> int:
    from e2urec.training.finetune import train_split
    from e2urec.training.loop import make_accelerator

    backbone, train = train_configs(args)
    record = train_split(args.data, args.split, backbone, train, args.out,
                         make_accelerator(cpu=args.cpu))
    history = record["history"]
    valid = history["best_valid_loss"]
    valid = f", best valid loss {valid:.4f}" if valid is not None else ""
    print(f"trained {backbone.name} on {args.split} ({record['samples']} samples, "
          f"{history['epochs_run']} epochs{valid}, {history['seconds']:.1f}s) -> {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from e2urec.checkpoints.scorers import load_scorer
    from e2urec.evaluation.evaluate import evaluate, format_table
    from e2urec.fileio import atomic_write_text

    scorer = load_scorer(args.model)
    reference = load_scorer(args.reference) if args.reference else None
    results, _ = evaluate(scorer, args.data, reference, args.batch_size)
    atomic_write_text(Path(args.out), json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    return 0


def cmd_unlearn(args: argparse.Namespace) -> int:
    from e2urec.methods import run_method

    backbone, train = train_configs(args)
    sections = load_sections(args)
    options = {**sections.get("method", {}), **parse_overrides(args.option)}
    record = run_method(args.method, data_dir=args.data, original=args.original,
                        backbone=backbone, train=train, options=options, out_dir=args.out,
                        cpu=args.cpu)
    print(f"{args.method}: unlearned in {record['unlearn_seconds']:.1f}s, "
          f"{record['trainable_params']:,} of {record['total_params']:,} parameters trained "
          f"-> {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from e2urec.bench.study import run_study

    table = run_study(args.config, args.out, stages_from=args.stages_from)
    print(table)
    return 0


COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "evaluate": cmd_evaluate,
            "unlearn": cmd_unlearn, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"e2urec {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
