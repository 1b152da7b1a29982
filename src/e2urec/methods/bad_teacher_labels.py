"""Bad-Teacher as in the E2URec reference code: train on forget samples with Yes/No flipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e2urec.backbones.scoring import answer_logits
from e2urec.data.prompts import NO_ANSWER, YES_ANSWER
from e2urec.methods.base import Unlearner, register
from e2urec.methods.full_finetune import unlearn_full_copy
from e2urec.training.losses import answer_ce


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
        weight = self.options.weight

        def loss_for(_student):
            def loss(model, forget_batch, retain_batch):
                l_flip = answer_ce(answer_logits(model, forget_batch),
                                   forget_batch["answer_ids"], forget_batch["answer_mask"])
                if retain_batch is None:
                    return weight * l_flip, {"flipped_ce": l_flip.detach()}
                l_retain = answer_ce(answer_logits(model, retain_batch),
                                     retain_batch["answer_ids"], retain_batch["answer_mask"])
                return l_retain + weight * l_flip, {"flipped_ce": l_flip.detach(),
                                                    "retain_ce": l_retain.detach()}
            return loss

        return unlearn_full_copy(self, loss_for, self.options,
                                 forget_rows=flipped(self.ctx.rows("forget")))
