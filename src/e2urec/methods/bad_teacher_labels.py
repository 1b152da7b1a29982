"""Bad-Teacher as in the E2URec reference code: train on forget samples with Yes/No flipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e2urec.data.prompts import NO_ANSWER, YES_ANSWER
from e2urec.methods.base import Unlearner, register
from e2urec.methods.full_finetune import label_loss, unlearn_full_copy


@dataclass
class BadTeacherLabelsOptions:
    weight: float = 1.0
    lr: float = 5e-5
    batch_size: int = 16
    epochs: int = 1
    forget_only_epochs: int = 0
    seed: int = 42


def flipped(rows: list[dict]) -> list[dict]:
    """The same samples with the opposite answer."""
    return [{**r, "label": 1 - int(r["label"]),
             "answer": NO_ANSWER if r["answer"] == YES_ANSWER else YES_ANSWER} for r in rows]


@register
class BadTeacherLabels(Unlearner):
    name = "bad-teacher-labels"
    Options = BadTeacherLabelsOptions

    def unlearn(self) -> dict[str, Any]:
        return unlearn_full_copy(self, label_loss(self.options.weight), self.options,
                                 forget_rows=flipped(self.ctx.rows("forget")))
