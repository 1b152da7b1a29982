"""NegGrad: gradient ascent on forget, descent on retain: CE(retain) - w * CE(forget)."""

from __future__ import annotations

from dataclasses import dataclass

from e2urec.backbones.registry import Backbone
from e2urec.config import option
from e2urec.methods.base import FullCopyUnlearner
from e2urec.methods.registry import register
from e2urec.training.losses import label_loss
from e2urec.training.unlearn_loop import LossFn, Schedule, SteppingOptions


@dataclass
class NegGradOptions(SteppingOptions):
    weight: float = option(0.2, help="weight w of the ascent on the forget loss")
    schedule: Schedule = option(help="lr, batch size, epochs, clipping, seed",
                                factory=lambda: Schedule(lr_scale=1.0))


@register
class NegGrad(FullCopyUnlearner):
    name = "neggrad"
    Options = NegGradOptions
    # The reference code's budget (T5-base, ML-1M: 812 forget steps an epoch), in epochs of the
    # forget set; see docs/deviations.md.
    presets = {"paper": {"weight": 0.2, "schedule": {
        "lr": 5e-5, "batch_size": 16, "epochs": 3000 / 812, "max_grad_norm": None},
        "stop": {"kind": "none"}}}

    def loss(self, student: Backbone) -> LossFn:
        return label_loss(-self.options.weight, self.ctx.train.answer_loss)
