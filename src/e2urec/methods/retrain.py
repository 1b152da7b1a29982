"""Retrain: fine-tune the backbone from scratch on the retain set; exact, the reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e2urec.methods.base import Unlearner, register
from e2urec.training.finetune import train_split


@dataclass
class RetrainOptions:
    """Retrain takes the backbone and training settings of the study; no options of its own."""


@register
class Retrain(Unlearner):
    name = "retrain"
    Options = RetrainOptions
    needs_original = False

    def unlearn(self) -> dict[str, Any]:
        ctx = self.ctx
        with self.timed():
            record = train_split(ctx.data_dir, "retain", ctx.backbone, ctx.train, ctx.out_dir,
                                 ctx.accelerator)
        return {"trainable_params": record["trainable_params"],
                "total_params": record["total_params"], "history": record["history"]}
