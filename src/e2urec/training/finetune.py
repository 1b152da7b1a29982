"""Fine-tune a backbone on one split: the Original, Retrain and shard models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import PeftModel

from e2urec.backbones.registry import Backbone, create_backbone
from e2urec.checkpoints.folders import META_FILE, load_model, save_model
from e2urec.config import BackboneConfig, TrainConfig, to_dict
from e2urec.data.samples import read_manifest, read_split
from e2urec.training.loop import add_lora, fit, make_accelerator


def initial_backbone(backbone: BackboneConfig, data_dir: str | Path, seed: int,
                     merged: bool = False) -> Backbone:
    """What fine-tuning starts from: an e2urec model folder as it is (with ``merged``, an
    adapter folded into its base), or a backbone by name."""
    if (Path(backbone.name) / META_FILE).is_file():
        return load_model(backbone.name, merged=merged)
    return create_backbone(backbone, data_dir, seed)


def lora_base_dir(out_dir: str | Path) -> Path:
    """Where the frozen base of a LoRA-trained model folder is kept: beside it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + "-base")


def save_base(start: Backbone, folder: Path, accelerator: Accelerator, role: str) -> Path:
    """Save a frozen base once (main process), then let every process read it."""
    if accelerator.is_main_process and not (folder / META_FILE).is_file():
        save_model(start, folder, {"role": role})
    accelerator.wait_for_everyone()
    return folder


def with_lora(start: Backbone, train: TrainConfig) -> Backbone:
    """``start`` with fresh LoRA adapters when ``train`` asks for them (seeded, so that a
    rebuild starts from the same adapters); as it is when it carries adapters already."""
    if not train.use_lora or isinstance(start.model, PeftModel):
        return start
    set_seed(train.seed)  # LoRA's A matrices start random
    return add_lora(start, train.lora)


def train_model(data_dir: str | Path, rows: Sequence[dict[str, Any]],
                backbone: BackboneConfig, train: TrainConfig, accelerator: Accelerator,
                start: Backbone, desc: str = "train") -> tuple[Backbone, dict[str, Any]]:
    """Fine-tune ``start`` (fully, or LoRA adapters on it) on ``rows``; nothing is saved.

    A ``start`` that already carries adapters (a slice checkpoint) trains them on.

    Returns the trained backbone and its training record.
    """
    read_manifest(data_dir)
    model = with_lora(start, train)
    history = fit(model, rows, read_split(data_dir, "valid"), train, accelerator, desc=desc)
    trainable, total = model.parameter_counts()
    record = {"backbone": to_dict(backbone), "train": to_dict(train), "history": history,
              "trainable_params": trainable, "total_params": total, "samples": len(rows)}
    return model, record


def train_and_save(data_dir: str | Path, rows: Sequence[dict[str, Any]],
                   backbone: BackboneConfig, train: TrainConfig, out_dir: str | Path,
                   accelerator: Accelerator, start: Backbone, base_dir: Path | None,
                   meta: dict[str, Any] | None = None, desc: str = "train"
                   ) -> dict[str, Any]:
    """:func:`train_model`, then save on the main process (an adapter on ``base_dir``)."""
    model, record = train_model(data_dir, rows, backbone, train, accelerator, start, desc)
    record.update(meta or {})
    if accelerator.is_main_process:
        save_model(model, out_dir, {"train_record": record}, base_dir=base_dir)
    accelerator.wait_for_everyone()
    return record


def train_split(data_dir: str | Path, split: str, backbone: BackboneConfig, train: TrainConfig,
                out_dir: str | Path, accelerator: Accelerator | None = None) -> dict[str, Any]:
    """``e2urec train``: the Original (split ``train``) or Retrain (split ``retain``)."""
    accelerator = accelerator or make_accelerator()
    rows = read_split(data_dir, split)
    start = initial_backbone(backbone, data_dir, train.seed)
    base_dir = None
    if train.use_lora:
        base_dir = save_base(start, lora_base_dir(out_dir), accelerator, "backbone")
    return train_and_save(data_dir, rows, backbone, train, out_dir, accelerator, start,
                             base_dir, meta={"split": split}, desc=f"train[{split}]")
