"""Bad-Teacher as in the E2URec reference code: train on forget samples with Yes/No flipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e2urec.backbones.registry import Backbone
from e2urec.config import option
from e2urec.data.prompts import NO_ANSWER, YES_ANSWER
from e2urec.methods.base import FullCopyUnlearner
from e2urec.methods.registry import register
from e2urec.training.losses import label_loss
from e2urec.training.unlearn_loop import LossFn, Schedule, SteppingOptions


@dataclass
class BadTeacherLabelsOptions(SteppingOptions):
    weight: float = option(1.0, help="weight of the flipped-label loss on forget")
    schedule: Schedule = option(help="lr, batch size, epochs, clipping, seed",
                                factory=lambda: Schedule(lr_scale=0.5))


def flipped(rows: list[dict]) -> list[dict]:
    """The same samples with the opposite answer."""
    return [{**r, "label": 1 - int(r["label"]),
             "answer": NO_ANSWER if r["answer"] == YES_ANSWER else YES_ANSWER} for r in rows]


@register
class BadTeacherLabels(FullCopyUnlearner):
    name = "bad-teacher-labels"
    Options = BadTeacherLabelsOptions
    # The reference code's budget (T5-base, ML-1M: 812 forget steps an epoch), in epochs of the
    # forget set; see docs/deviations.md.
    presets = {"paper": {"weight": 0.2, "schedule": {
        "lr": 5e-5, "batch_size": 16, "epochs": 2400 / 812, "max_grad_norm": None},
        "stop": {"kind": "none"}}}

    def forget_rows(self) -> list[dict[str, Any]]:
        return flipped(self.ctx.rows("forget"))

    def loss(self, student: Backbone) -> LossFn:
        return label_loss(self.options.weight, self.ctx.train.answer_loss)
