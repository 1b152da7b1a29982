"""Shard models for the ensemble methods (SISA, RecEraser): assignment and (re)training.

A shard model is fine-tuned from the backbone on its shard's samples, fully or
as a LoRA adapter on one shared backbone folder; with slices (training/slices.py)
it trains slice by slice and keeps a checkpoint after each. An initial ensemble
is trained on all of train; unlearning retrains only the shards that hold
forgotten samples (from the checkpoint before the first slice that held them)
and points at the untouched shards' folders as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from e2urec.checkpoints.folders import META_FILE, load_model, read_meta, save_ensemble, save_model
from e2urec.config import BackboneConfig, ConfigError, TrainConfig, to_dict
from e2urec.data.samples import SHARDS_FILE, read_split
from e2urec.fileio import atomic_dir
from e2urec.training.finetune import (
    initial_backbone,
    save_base,
    train_and_save,
    train_model,
    with_lora,
)
from e2urec.training.slices import (
    checkpoint_dir,
    copy_checkpoints,
    first_slice_of,
    split_by_slice,
)

Assign = Callable[[dict[str, Any]], int]
SCHEMES = ("sisa", "user_balanced")
SLICE_DATA = ("own", "cumulative")


def shard_assignment(data_dir: Path, scheme: str) -> tuple[int, Assign]:
    """(K, sample -> shard) from the prepared ``shards.json``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown shard scheme {scheme!r}; choose one of {SCHEMES}")
    path = Path(data_dir) / SHARDS_FILE
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


def check_slice_training(train: TrainConfig, slices: int, exact: bool = False) -> None:
    """Refuse a training recipe that sliced shards (or, with ``exact``, a store's shards,
    which must equal a rebuild) cannot keep exact (one clear line)."""
    if (slices > 1 or exact) and train.early_stopping:
        # Early stopping reads every user's valid rows: a shard would then depend on
        # users it never held, and a retrained shard would not equal a rebuild.
        who = "slices" if slices > 1 else "an ensemble store's shards"
        raise ConfigError(f"{who} need train.early_stopping: false (a fixed number of "
                          "epochs), so that a shard depends on its own users only")


@dataclass
class ShardTrainer:
    """Trains shard models on one prepared data folder, sharing one backbone folder for LoRA.

    With ``slice_bounds`` (training/slices.py) each shard trains slice by slice and
    keeps every slice's checkpoint; :meth:`train_slices` then resumes from one of them. With LoRA
    every shard (and every slice checkpoint) is an adapter on one frozen base: ``base``
    when given (a model folder used where it lies, as a store's), else a copy of the
    backbone saved once inside ``root``.
    """

    data_dir: Path
    backbone: BackboneConfig
    train: TrainConfig
    accelerator: Accelerator
    root: Path
    slice_bounds: list[list[int]] = field(default_factory=list)  # per shard; []: unsliced
    base: Path | None = None
    slice_data: str = "own"
    slice_epochs: int | None = None

    def __post_init__(self) -> None:
        check_slice_training(self.train, 1 + max(map(len, self.slice_bounds), default=0))
        if self.slice_data not in SLICE_DATA:
            raise ConfigError(f"slice_data: {self.slice_data!r}; choose one of {SLICE_DATA}")

    def bounds(self, index: int) -> list[int]:
        """Shard ``index``'s slice bounds (empty: it trains in one piece)."""
        return self.slice_bounds[index] if self.slice_bounds else []

    def slice_rows(self, parts: list[list[dict]], r: int) -> list[dict]:
        """What slice ``r`` passes over: its own users' rows, or (SISA's recipe) every
        slice up to it; never a row of a later slice, so a checkpoint holds no later user."""
        return parts[r] if self.slice_data == "own" else [x for p in parts[:r + 1] for x in p]

    def backbone_dir(self) -> Path | None:
        """The frozen base of LoRA shards (None: shards are whole models)."""
        if not self.train.use_lora:
            return None
        if self.base is not None:
            read_meta(self.base)  # one clear line when it is not a model folder
            return self.base
        folder = self.root / "backbone"
        if (folder / META_FILE).is_file():  # built once, not once a shard
            return folder
        start = initial_backbone(self.backbone, self.data_dir, self.train.seed)
        return save_base(start, folder, self.accelerator, "shared shard backbone")

    def train_shard(self, index: int, rows: list[dict], out_dir: Path) -> dict[str, Any]:
        if not rows:
            raise ValueError(f"shard {index} has no samples; use fewer shards")
        if self.bounds(index):
            return self.train_slices(index, rows, out_dir, None, 0)
        base = self.backbone_dir()
        start = load_model(base) if base else initial_backbone(self.backbone, self.data_dir,
                                                               self.train.seed)
        return train_and_save(self.data_dir, rows, self.backbone, self.train, out_dir,
                              self.accelerator, start, base, meta={"shard": index},
                              desc=f"shard {index}")

    def train_slices(self, index: int, rows: list[dict], out_dir: Path, resume: Path | None,
                     first: int) -> dict[str, Any]:
        """Train shard ``index``'s slices from ``first`` on (``resume``'s checkpoint
        ``first - 1`` as the start, its earlier checkpoints copied) into ``out_dir``."""
        parts = split_by_slice(rows, self.bounds(index))
        train = self.train if self.slice_epochs is None else \
            dataclasses.replace(self.train, epochs=self.slice_epochs)
        base = self.backbone_dir()
        if first:  # an adapter checkpoint resumes with its adapters trainable
            model = load_model(checkpoint_dir(resume, first - 1), trainable_adapter=bool(base))
        else:
            model = with_lora(load_model(base), self.train) if base else \
                initial_backbone(self.backbone, self.data_dir, self.train.seed)
        trainable, total = model.parameter_counts()
        record: dict[str, Any] = {
            "backbone": to_dict(self.backbone), "train": to_dict(train), "shard": index,
            "samples": len(rows), "slices": [len(p) for p in parts], "first_slice": first,
            "trainable_params": trainable, "total_params": total,
            "trained_samples": sum(len(self.slice_rows(parts, r)) for r in range(first, len(parts))
                                   if parts[r]), "history": {"seconds": 0.0}}
        with _written_by_main(self.accelerator, out_dir) as tmp:
            if first:
                copy_checkpoints(resume, tmp, first)
            for r in range(first, len(parts)):
                if parts[r]:  # an empty slice keeps the checkpoint before it
                    model, trained = train_model(self.data_dir, self.slice_rows(parts, r),
                                                 self.backbone, train, self.accelerator,
                                                 model, desc=f"shard {index} slice {r}")
                    record["history"]["seconds"] += trained["history"]["seconds"]
                last = r == len(parts) - 1
                save_model(model, tmp / ".member" if last else checkpoint_dir(tmp, r),
                           {"train_record": {**record, "slice": r}}, base_dir=base)
            for file in (tmp / ".member").iterdir():  # the last slice's model is the member
                file.rename(tmp / file.name)
            (tmp / ".member").rmdir()
        return record


@contextlib.contextmanager
def _written_by_main(accelerator: Accelerator, out_dir: Path) -> Iterator[Path]:
    """A folder that becomes ``out_dir`` on the main process (atomically); elsewhere the
    same writes go to a scratch folder that is dropped."""
    if accelerator.is_main_process:
        with atomic_dir(out_dir) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)
    accelerator.wait_for_everyone()


def initial_ensemble(trainer: ShardTrainer, scheme: str, folder: Path) -> list[Path]:
    """Shard models trained on all of train (reused where already complete)."""
    k, assign = shard_assignment(trainer.data_dir, scheme)
    parts = split_by_shard(read_split(trainer.data_dir, "train"), k, assign)
    members = []
    for index, rows in enumerate(parts):
        if not rows:  # every user it held was forgotten: no member, as after the request
            continue
        member = folder / member_name(index)
        if not (member / META_FILE).is_file():
            trainer.train_shard(index, rows, member)
        members.append(member)
    if not members:
        raise ValueError("no shard holds a training row: nothing to train")
    return members


def member_name(index: int) -> str:
    """A member's folder name: it keeps its shard's index when other shards are dropped."""
    return f"shard_{index}"


def shard_index(member: Path) -> int:
    """The shard a member folder (named by :func:`member_name`) was trained on."""
    prefix, _, index = Path(member).name.rpartition("_")
    if prefix != "shard" or not index.isdigit():
        raise ValueError(f"{member}: not a shard member folder (shard_<index>)")
    return int(index)


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

    With slices, a shard restarts from its checkpoint before the first slice that
    held a forgotten user. A shard left with no samples (every one of its users
    forgotten) is dropped. Returns the new member list, the retrained (or dropped)
    shard indices and the number of parameters trained.
    """
    k, assign = shard_assignment(trainer.data_dir, scheme)
    members: dict[int, Path | None] = {shard_index(m): m for m in initial}
    if max(members) >= k:
        raise ValueError(f"the initial ensemble has a member of shard {max(members)}, the "
                         f"data {k} shards")
    train_parts = split_by_shard(read_split(trainer.data_dir, "train"), k, assign)
    retain_parts = split_by_shard(read_split(trainer.data_dir, "retain"), k, assign)
    forgotten = {row["user_id"] for row in read_split(trainer.data_dir, "forget")}
    retrained = affected_shards(trainer.data_dir, scheme)
    trained = 0
    for index in retrained:
        if not retain_parts[index]:
            members[index] = None
            continue
        member = out_dir / member_name(index)
        if trainer.bounds(index):
            first = first_slice_of(forgotten, train_parts[index], trainer.bounds(index)) or 0
            record = trainer.train_slices(index, retain_parts[index], member, members[index], first)
        else:
            record = trainer.train_shard(index, retain_parts[index], member)
        trained += record["trainable_params"]
        members[index] = member
    kept = [m for _, m in sorted(members.items()) if m is not None]
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
