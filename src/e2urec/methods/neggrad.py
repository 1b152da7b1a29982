"""NegGrad: gradient ascent on forget, descent on retain: CE(retain) - w * CE(forget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e2urec.methods.base import Unlearner, register
from e2urec.methods.full_finetune import label_loss, unlearn_full_copy


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
        return unlearn_full_copy(self, label_loss(-self.options.weight), self.options)
