"""Helpers shared by the benchmark scripts: data, device, memory sampling, tables."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from e2urec.backbones.registry import SMOLLM2, load_pretrained, smollm2_folder
from e2urec.checkpoints.folders import CheckpointError
from e2urec.checkpoints.scorers import ModelScorer, Scorer, load_scorer
from e2urec.config import PrepareConfig
from e2urec.data.protocol import prepare_dataset, write_prepared
from e2urec.data.samples import read_manifest
from e2urec.runtime import pick_device


def add_common_args(parser: argparse.ArgumentParser,
                    data_help: str = "a prepared folder; made from ML-100K when absent",
                    data_repeats: bool = False) -> None:
    parser.add_argument("--data", help=data_help, action="append" if data_repeats else "store")
    parser.add_argument("--users", type=int, default=PrepareConfig.users,
                        help="users drawn (the users protocol) when the data is prepared here")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="runs/benchmarks")


def scorer_of(name: str) -> Scorer:
    """A trained model folder, or a pretrained backbone untouched (smollm2-135m, a local
    or hub folder); one clear line when it is neither."""
    try:
        return load_scorer(name)
    except CheckpointError as err:
        try:
            return ModelScorer(load_pretrained(smollm2_folder() if name == SMOLLM2
                                               else name))
        except (OSError, ValueError):  # not found offline; not a valid hub id
            raise SystemExit(f"error: {err}; nor is it a pretrained model that loads "
                             "here") from None


def scorers_of(names: str) -> list[tuple[str, Scorer]]:
    """Every model of a comma-separated ``--models``, loaded before any work starts, so
    that a mistyped one stops the run at once."""
    return [(name, scorer_of(name)) for name in names.split(",")]


def device_of(args: argparse.Namespace) -> torch.device:
    """``--device`` as a torch device; one clear line when it cannot be had."""
    try:
        return pick_device(args.device)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def prepared_data(args: argparse.Namespace) -> Path:
    if args.data:
        read_manifest(args.data)
        return Path(args.data)
    out = Path(args.workdir) / f"data-ml100k-users{args.users}-{args.seed}"
    if not (out / "manifest.json").is_file():
        config = PrepareConfig(users=args.users, seed=args.seed, holdout_fraction=0.2)
        write_prepared(prepare_dataset(config), out)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
