"""NegGrad: gradient ascent on forget, descent on retain: CE(retain) - w * CE(forget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e2urec.backbones.scoring import answer_logits
from e2urec.methods.base import Unlearner, register
from e2urec.methods.full_finetune import unlearn_full_copy
from e2urec.training.losses import answer_ce


@dataclass
class NegGradOptions:
    weight: float = 0.2
    lr: float = 5e-5
    batch_size: int = 16
    epochs: int = 1
    forget_only_epochs: int = 0
    seed: int = 42


@register
class NegGrad(Unlearner):
    name = "neggrad"
    Options = NegGradOptions

    def unlearn(self) -> dict[str, Any]:
        weight = self.options.weight

        def loss_for(_student):
            def loss(model, forget_batch, retain_batch):
                l_forget = answer_ce(answer_logits(model, forget_batch),
                                     forget_batch["answer_ids"], forget_batch["answer_mask"])
                if retain_batch is None:
                    return -weight * l_forget, {"forget_ce": l_forget.detach()}
                l_retain = answer_ce(answer_logits(model, retain_batch),
                                     retain_batch["answer_ids"], retain_batch["answer_mask"])
                return l_retain - weight * l_forget, {"forget_ce": l_forget.detach(),
                                                      "retain_ce": l_retain.detach()}
            return loss

        return unlearn_full_copy(self, loss_for, self.options)
