"""Fine-tune a backbone on one split and save it: Original, Retrain and shard models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from e2urec.backbones.registry import Backbone, create_backbone
from e2urec.config import BackboneConfig, TrainConfig, to_dict
from e2urec.data.samples import read_manifest, read_split
from e2urec.training.checkpoints import META_FILE, load_model, save_model
from e2urec.training.loop import add_lora, fit


def starting_point(backbone: BackboneConfig, data_dir: str | Path, seed: int) -> Backbone:
    """An e2urec model folder as it is, or a fresh backbone by name."""
    if (Path(backbone.name) / META_FILE).is_file():
        return load_model(backbone.name)
    return create_backbone(backbone, data_dir, seed)


def finetune(data_dir: str | Path, rows: Sequence[dict[str, Any]], backbone: BackboneConfig,
             train: TrainConfig, out_dir: str | Path, accelerator: Accelerator | None = None,
             start: Backbone | None = None, base_dir: str | Path | None = None,
             meta: dict[str, Any] | None = None, desc: str = "train") -> dict[str, Any]:
    """Fine-tune (fully or with LoRA) on ``rows``, early-stopping on valid; save to ``out_dir``.

    With ``train.use_lora`` the result is an adapter folder on ``base_dir``,
    which must then hold ``start`` as saved.
    """
    read_manifest(data_dir)
    model = start or starting_point(backbone, data_dir, train.seed)
    if train.use_lora:
        if base_dir is None:
            raise ValueError("LoRA fine-tuning needs the base model's folder (base_dir)")
        model = add_lora(model, train.lora)
    history = fit(model, rows, read_split(data_dir, "valid"), train, accelerator, desc=desc)
    trainable, total = model.parameter_counts()
    record = {"backbone": to_dict(backbone), "train": to_dict(train), "history": history,
              "trainable_params": trainable, "total_params": total, "samples": len(rows),
              **(meta or {})}
    if accelerator is None or accelerator.is_main_process:
        save_model(model, out_dir, {"train_record": record}, base_dir=base_dir)
    return record


def train_split(data_dir: str | Path, split: str, backbone: BackboneConfig, train: TrainConfig,
                out_dir: str | Path, accelerator: Accelerator | None = None) -> dict[str, Any]:
    """``e2urec train``: the Original (split ``train``) or Retrain (split ``retain``)."""
    rows = read_split(data_dir, split)
    start = starting_point(backbone, data_dir, train.seed)
    base_dir = None
    if train.use_lora:
        base_dir = Path(out_dir).with_name(Path(out_dir).name + "-base")
        if not (base_dir / META_FILE).is_file():
            save_model(start, base_dir, {"role": "backbone"})
    return finetune(data_dir, rows, backbone, train, out_dir, accelerator, start=start,
                    base_dir=base_dir, meta={"split": split}, desc=f"train[{split}]")
