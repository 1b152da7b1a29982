"""GradDiff (Liu et al., 2022; TOFU's baseline): ascent on forget and descent on retain,
equally weighted: CE(retain) - CE(forget). NegGrad with weight 1, joint from the first step."""

from __future__ import annotations

from dataclasses import dataclass

from e2urec.backbones.registry import Backbone
from e2urec.config import option
from e2urec.methods.base import FullCopyUnlearner, register
from e2urec.training.losses import label_loss
from e2urec.training.unlearn_loop import LossFn, Schedule


@dataclass
class GradDiffOptions:
    weight: float = option(1.0, help="weight of the ascent on the forget loss against the "
                           "retain loss (GradDiff: 1)")
    schedule: Schedule = option(help="lr, batch size, epochs, clipping, seed",
                                factory=lambda: Schedule(lr_scale=0.05, epochs=1,
                                                         forget_only_epochs=0))


@register
class GradDiff(FullCopyUnlearner):
    name = "graddiff"
    Options = GradDiffOptions

    def loss(self, student: Backbone) -> LossFn:
        return label_loss(-self.options.weight, self.ctx.train.answer_loss)
