"""GradDiff (Liu et al., 2022; TOFU's baseline): ascent on forget and descent on retain,
equally weighted: CE(retain) - CE(forget). NegGrad with weight 1, joint from the first step."""

from __future__ import annotations

from dataclasses import dataclass

from e2urec.config import option
from e2urec.methods.neggrad import NegGrad, NegGradOptions
from e2urec.methods.registry import register
from e2urec.training.unlearn_loop import Schedule


@dataclass
class GradDiffOptions(NegGradOptions):
    weight: float = option(1.0, help="weight of the ascent on the forget loss against the "
                           "retain loss (GradDiff: 1)")
    schedule: Schedule = option(help="lr, batch size, epochs, clipping, seed",
                                factory=lambda: Schedule(lr_scale=0.5))


@register
class GradDiff(NegGrad):
    name = "graddiff"
    Options = GradDiffOptions
    presets = {}  # NegGrad's paper preset is the E2URec reference code's, not GradDiff's
