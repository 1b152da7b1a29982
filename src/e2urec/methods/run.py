"""One method run: checks before any work, the lr resolved from the Original, the record."""


from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from e2urec.checkpoints.folders import (
    META_FILE,
    check_model_folder,
    library_versions,
    read_meta,
)
from e2urec.config import (
    BackboneConfig,
    ConfigError,
    TrainConfig,
    to_dict,
)
from e2urec.data.samples import read_manifest
from e2urec.fileio import check_output, write_json
from e2urec.methods.accounting import PeakMemory, stopwatch
from e2urec.methods.base import RECORD_FILE, UnlearnContext, Unlearner
from e2urec.methods.registry import get_method, parse_options
from e2urec.training.loop import make_accelerator, resolve_lora_targets
from e2urec.training.stop_rule import stopped_by


def check_method_inputs(name: str, data_dir: str | Path, original: str | Path | None,
                        options: dict[str, Any] | None, out_dir: str | Path,
                        overwrite: bool = False) -> tuple[type[Unlearner], Any]:
    """Every check that can fail before work: method, options, data, Original, output."""
    method_cls = get_method(name)
    parsed = parse_options(name, options)
    read_manifest(data_dir)
    if method_cls.needs_original and original is None:
        raise ConfigError(f"method {name!r} needs the Original model (--original)")
    if original is not None:
        check_model_folder(original)
    check_output(out_dir, META_FILE, overwrite)
    return method_cls, parsed


def original_lr(original: Path | None, train: TrainConfig) -> dict[str, Any]:
    """The lr the Original was trained at: from its model folder, else the training config."""
    recorded = ((read_meta(original).get("train_record") or {}).get("train") or {}).get("lr") \
        if original is not None else None
    if recorded:
        return {"lr": float(recorded), "from": "the Original's training record"}
    return {"lr": train.lr, "from": "train.lr (the Original's folder records no training)"}


def with_resolved_lr(options: Any, original: Path | None, train: TrainConfig
                     ) -> tuple[Any, dict[str, Any] | None]:
    """``options`` with ``schedule.lr`` set from ``lr_scale`` where no absolute lr is given,
    and the base it was scaled from (None for a method that takes no unlearning steps)."""
    schedule = getattr(options, "schedule", None)
    if schedule is None:
        return options, None
    base = original_lr(original, train)
    if schedule.lr is None:
        schedule = dataclasses.replace(schedule, lr=schedule.lr_scale * base["lr"])
    return dataclasses.replace(options, schedule=schedule), base


def run_method(name: str, data_dir: str | Path, original: str | Path | None,
               backbone: BackboneConfig, train: TrainConfig, options: dict[str, Any] | None,
               out_dir: str | Path, cpu: bool = False, accelerator: Accelerator | None = None,
               overwrite: bool = False) -> dict[str, Any]:
    """Run one method end to end and write its record beside its model."""
    method_cls, parsed = check_method_inputs(name, data_dir, original, options, out_dir,
                                             overwrite)
    ctx = UnlearnContext(Path(data_dir), Path(original) if original else None, backbone, train,
                         Path(out_dir), accelerator or make_accelerator(cpu=cpu))
    parsed, lr_base = with_resolved_lr(parsed, ctx.original_dir, train)
    method = method_cls(parsed, ctx)
    method.setup()
    loaded = method.load_original()
    lora = getattr(parsed, "lora", None)
    if loaded is not None and lora is not None:
        # A LoRA target this architecture lacks fails here, before any training.
        resolve_lora_targets(loaded.model, lora.targets)
    # Everything a method draws (adapter init, dropout) follows from its seed alone, not
    # from what ran earlier in the process: two runs give the same bytes.
    set_seed(method_cls.seed_of(parsed, train))
    memory = PeakMemory()
    memory.start()
    with stopwatch() as clock:
        result = method.unlearn(loaded)
        if ctx.accelerator.is_main_process:
            method.save(result)
        ctx.accelerator.wait_for_everyone()
    trainable, total = method.parameter_counts(result)
    extra = {k: v for k, v in result.record.items() if k not in ("members", "aggregator")}
    stop = getattr(parsed, "stop", None)
    if "history" in extra and stop is not None:  # the rule, or the budget's ceiling
        extra["stopped_by"] = stopped_by(extra["history"], stop.kind)
    record = {
        "method": name, "unlearn_seconds": clock["seconds"],
        "timing": "from the Original loaded to the result saved",
        **extra, "trainable_params": trainable, "total_params": total,
        "trainable_share": trainable / max(total, 1), **memory.read(),
        "options": to_dict(parsed), "preset": (options or {}).get("preset"),
        "lr_base": lr_base,
        "train": to_dict(train), "backbone": to_dict(backbone),
        "data": str(Path(data_dir).resolve()),
        "original": str(Path(original).resolve()) if original else None,
        "device": str(ctx.accelerator.device), "num_processes": ctx.accelerator.num_processes,
        "torch_threads": torch.get_num_threads(), "versions": library_versions(),
    }
    if ctx.accelerator.is_main_process:
        write_json(Path(out_dir) / RECORD_FILE, record)
    return record
