"""Retrain: fine-tune the backbone from scratch on the retain set; exact, the reference."""

from __future__ import annotations

from dataclasses import dataclass

from e2urec.backbones.registry import Backbone
from e2urec.methods.base import Unlearned, Unlearner
from e2urec.methods.registry import register
from e2urec.training.finetune import initial_backbone, lora_base_dir, save_base, train_model


@dataclass
class RetrainOptions:
    """Retrain takes the backbone and training settings of the study; no options of its own."""


@register
class Retrain(Unlearner):
    name = "retrain"
    Options = RetrainOptions
    needs_original = False
    exact = True

    def unlearn(self, original: Backbone | None) -> Unlearned:
        ctx = self.ctx
        start = initial_backbone(ctx.backbone, ctx.data_dir, ctx.train.seed)
        base_dir = None
        if ctx.train.use_lora:
            base_dir = save_base(start, lora_base_dir(ctx.out_dir), ctx.accelerator, "backbone")
        model, record = train_model(ctx.data_dir, ctx.rows("retain"), ctx.backbone, ctx.train,
                                    ctx.accelerator, start, desc="retrain")
        return Unlearned(model, base_dir, {"history": record["history"]},
                         meta={"train_record": {**record, "split": "retain"}})
