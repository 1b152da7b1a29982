"""Shared machinery of the shard-ensemble methods (SISA, RecEraser).

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
from typing import Any, ClassVar

from e2urec.backbones.ensemble import AttentionAggregator, save_ensemble
from e2urec.methods.base import UnlearnContext, Unlearner
from e2urec.training.checkpoints import META_FILE, load_model, read_meta, save_model
from e2urec.training.finetune import finetune, starting_point

Assign = Callable[[dict[str, Any]], int]


def shard_assignment(data_dir: Path, scheme: str) -> tuple[int, Assign]:
    """(K, sample -> shard) from the prepared ``shards.json``."""
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


@dataclass
class ShardTrainer:
    """Trains shard models for one context, sharing one backbone folder for LoRA shards."""

    ctx: UnlearnContext
    root: Path

    def backbone_dir(self) -> Path | None:
        if not self.ctx.train.use_lora:
            return None
        folder = self.root / "backbone"
        if not (folder / META_FILE).is_file():
            save_model(starting_point(self.ctx.backbone, self.ctx.data_dir, self.ctx.train.seed),
                       folder, {"role": "shared shard backbone"})
        return folder

    def train(self, index: int, rows: list[dict], out_dir: Path) -> dict[str, Any]:
        if not rows:
            raise ValueError(f"shard {index} has no samples; use fewer shards")
        base = self.backbone_dir()
        start = load_model(base) if base else None
        return finetune(self.ctx.data_dir, rows, self.ctx.backbone, self.ctx.train, out_dir,
                        self.ctx.accelerator, start=start, base_dir=base,
                        meta={"shard": index}, desc=f"shard {index}")


def initial_ensemble(trainer: ShardTrainer, scheme: str, folder: Path) -> list[Path]:
    """Shard models trained on all of train (reused where already complete)."""
    k, assign = shard_assignment(trainer.ctx.data_dir, scheme)
    parts = split_by_shard(trainer.ctx.rows("train"), k, assign)
    members = []
    for index, rows in enumerate(parts):
        member = folder / f"shard_{index}"
        if not (member / META_FILE).is_file():
            trainer.train(index, rows, member)
        members.append(member)
    return members


def affected_shards(ctx: UnlearnContext, scheme: str) -> list[int]:
    k, assign = shard_assignment(ctx.data_dir, scheme)
    return sorted({assign(row) for row in ctx.rows("forget")})


def retrain_affected(trainer: ShardTrainer, scheme: str, initial: list[Path],
                     out_dir: Path) -> tuple[list[Path], list[int], int]:
    """Retrain the shards that hold forgotten samples on what they retain.

    A shard left with no samples (every one of its users forgotten) is
    dropped. Returns the new member list, the retrained (or dropped) shard
    indices and the number of parameters trained.
    """
    ctx = trainer.ctx
    k, assign = shard_assignment(ctx.data_dir, scheme)
    if len(initial) != k:
        raise ValueError(f"the initial ensemble has {len(initial)} shards, the data {k}")
    retain_parts = split_by_shard(ctx.rows("retain"), k, assign)
    retrained = affected_shards(ctx, scheme)
    members: list[Path | None] = list(initial)
    trained = 0
    for index in retrained:
        if not retain_parts[index]:
            members[index] = None
            continue
        member = out_dir / f"shard_{index}"
        trained += trainer.train(index, retain_parts[index], member)["trainable_params"]
        members[index] = member
    kept = [m for m in members if m is not None]
    if not kept:
        raise ValueError("every shard lost all its samples: nothing is left to predict with")
    return kept, retrained, trained


def ensemble_params(members: list[Path], aggregator: AttentionAggregator | None = None) -> int:
    """Parameters of the whole ensemble: each member's own, a shared LoRA backbone once."""
    records = [read_meta(m)["train_record"] for m in members]
    own = sum(r["trainable_params"] for r in records)
    shared = max(r["total_params"] - r["trainable_params"] for r in records)
    extra = sum(p.numel() for p in aggregator.parameters()) if aggregator is not None else 0
    return own + shared + extra


def resolve_initial(option: str | None, ctx: UnlearnContext) -> Path:
    """Where the initial ensemble lives: given by the option, else inside the output."""
    if option:
        folder = Path(option)
        if not folder.is_dir():
            raise FileNotFoundError(f"initial ensemble folder {folder} does not exist")
        return folder
    return ctx.out_dir / "initial"


class ShardEnsembleMethod(Unlearner):
    """SISA-style unlearning; subclasses pick the shard ``scheme`` and may learn an aggregator."""

    scheme: ClassVar[str]
    needs_original = False

    def aggregate(self, members: list[Path], rows: list[dict]) -> AttentionAggregator | None:
        """The aggregator over ``members`` fitted on ``rows``; None averages logits."""
        return None

    def unlearn(self) -> dict[str, Any]:
        ctx = self.ctx
        initial_dir = resolve_initial(self.options.initial, ctx)
        trainer = ShardTrainer(ctx, initial_dir)
        initial = initial_ensemble(trainer, self.scheme, initial_dir)
        if not (initial_dir / META_FILE).is_file():
            save_ensemble(initial_dir, initial, self.aggregate(initial, ctx.rows("train")),
                          meta={"method": self.name, "role": "initial"})
        with self.timed():
            members, retrained, trained = retrain_affected(trainer, self.scheme, initial,
                                                           ctx.out_dir)
            aggregator = self.aggregate(members, ctx.rows("retain"))
        save_ensemble(ctx.out_dir, members, aggregator,
                      meta={"method": self.name, "retrained_shards": retrained})
        extra = sum(p.numel() for p in aggregator.parameters()) if aggregator else 0
        return {"trainable_params": trained + extra,
                "total_params": ensemble_params(members, aggregator),
                "retrained_shards": retrained, "shards": len(members),
                "shard_models": "lora" if ctx.train.use_lora else "full",
                "initial": str(initial_dir)}


__all__ = ["ShardEnsembleMethod", "ShardTrainer", "affected_shards", "ensemble_params",
           "initial_ensemble", "resolve_initial", "retrain_affected", "save_ensemble"]
