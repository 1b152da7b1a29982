"""Shard models for the ensemble methods (SISA, RecEraser): assignment and (re)training.

A shard model is fine-tuned from the backbone on its shard's samples, fully or
as a LoRA adapter on one shared backbone folder. An initial ensemble is
trained on all of train; unlearning retrains only the shards that hold
forgotten samples and points at the untouched shards' folders as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from e2urec.checkpoints.folders import META_FILE, load_model, read_meta, save_ensemble
from e2urec.config import BackboneConfig, TrainConfig
from e2urec.data.samples import read_split
from e2urec.training.finetune import finetune_and_save, initial_backbone, save_base

Assign = Callable[[dict[str, Any]], int]
SCHEMES = ("sisa", "user_balanced")


def shard_assignment(data_dir: Path, scheme: str) -> tuple[int, Assign]:
    """(K, sample -> shard) from the prepared ``shards.json``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown shard scheme {scheme!r}; choose one of {SCHEMES}")
    path = Path(data_dir) / "shards.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `e2urec prepare` again")
    shards = json.loads(path.read_text())
    if scheme == "sisa":
        table = shards["sisa"]
        return shards["k"], lambda row: table[str(row["sample_id"])]
    table = shards["user_balanced"]
    return shards["k"], lambda row: table[str(row["user_id"])]


def split_by_shard(rows: list[dict], k: int, assign: Assign) -> list[list[dict]]:
    parts: list[list[dict]] = [[] for _ in range(k)]
    for row in rows:
        parts[assign(row)].append(row)
    return parts


def affected_shards(data_dir: Path, scheme: str) -> list[int]:
    """The shards that hold at least one forget sample."""
    _, assign = shard_assignment(data_dir, scheme)
    return sorted({assign(row) for row in read_split(data_dir, "forget")})


@dataclass
class ShardTrainer:
    """Trains shard models on one prepared data folder, sharing one backbone folder for LoRA."""

    data_dir: Path
    backbone: BackboneConfig
    train: TrainConfig
    accelerator: Accelerator
    root: Path

    def backbone_dir(self) -> Path | None:
        if not self.train.use_lora:
            return None
        folder = self.root / "backbone"
        if (folder / META_FILE).is_file():  # built once, not once a shard
            return folder
        start = initial_backbone(self.backbone, self.data_dir, self.train.seed)
        return save_base(start, folder, self.accelerator, "shared shard backbone")

    def fit(self, index: int, rows: list[dict], out_dir: Path) -> dict[str, Any]:
        if not rows:
            raise ValueError(f"shard {index} has no samples; use fewer shards")
        base = self.backbone_dir()
        start = load_model(base) if base else initial_backbone(self.backbone, self.data_dir,
                                                               self.train.seed)
        return finetune_and_save(self.data_dir, rows, self.backbone, self.train, out_dir,
                                 self.accelerator, start, base, meta={"shard": index},
                                 desc=f"shard {index}")


def initial_ensemble(trainer: ShardTrainer, scheme: str, folder: Path) -> list[Path]:
    """Shard models trained on all of train (reused where already complete)."""
    k, assign = shard_assignment(trainer.data_dir, scheme)
    parts = split_by_shard(read_split(trainer.data_dir, "train"), k, assign)
    members = []
    for index, rows in enumerate(parts):
        member = folder / f"shard_{index}"
        if not (member / META_FILE).is_file():
            trainer.fit(index, rows, member)
        members.append(member)
    return members


def save_initial_ensemble(trainer: ShardTrainer, scheme: str, folder: Path,
                          aggregate: Callable[[list[Path]], torch.nn.Module | None] | None = None,
                          meta: dict[str, Any] | None = None) -> list[Path]:
    """Train (or resume) the initial ensemble and write its folder, before any request."""
    members = initial_ensemble(trainer, scheme, folder)
    aggregator = aggregate(members) if aggregate else None
    if trainer.accelerator.is_main_process:
        save_ensemble(folder, members, aggregator,
                      meta={**(meta or {}), "role": "initial", "scheme": scheme})
    trainer.accelerator.wait_for_everyone()
    return members


def retrain_affected(trainer: ShardTrainer, scheme: str, initial: list[Path],
                     out_dir: Path) -> tuple[list[Path], list[int], int]:
    """Retrain the shards that hold forgotten samples on what they retain.

    A shard left with no samples (every one of its users forgotten) is
    dropped. Returns the new member list, the retrained (or dropped) shard
    indices and the number of parameters trained.
    """
    k, assign = shard_assignment(trainer.data_dir, scheme)
    if len(initial) != k:
        raise ValueError(f"the initial ensemble has {len(initial)} shards, the data {k}")
    retain_parts = split_by_shard(read_split(trainer.data_dir, "retain"), k, assign)
    retrained = affected_shards(trainer.data_dir, scheme)
    members: list[Path | None] = list(initial)
    trained = 0
    for index in retrained:
        if not retain_parts[index]:
            members[index] = None
            continue
        member = out_dir / f"shard_{index}"
        trained += trainer.fit(index, retain_parts[index], member)["trainable_params"]
        members[index] = member
    kept = [m for m in members if m is not None]
    if not kept:
        raise ValueError("every shard lost all its samples: nothing is left to predict with")
    return kept, retrained, trained


def ensemble_params(members: list[Path], aggregator: torch.nn.Module | None = None) -> int:
    """Parameters of the whole ensemble: each member's own, a shared LoRA backbone once."""
    records = [read_meta(m)["train_record"] for m in members]
    own = sum(r["trainable_params"] for r in records)
    shared = max(r["total_params"] - r["trainable_params"] for r in records)
    extra = sum(p.numel() for p in aggregator.parameters()) if aggregator is not None else 0
    return own + shared + extra
