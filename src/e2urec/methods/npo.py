"""NPO (Zhang et al., 2024, arXiv 2404.05868): negative preference optimisation on forget,
against the Original as the reference policy, plus CE on retain.

Per forget sample, with log-ratio r = log pi(y|x) - log pi_ref(y|x) of its answer,
the loss is (2 / beta) * log(1 + exp(beta * r)). Unlike gradient ascent it is
bounded below and its gradient fades as the sample's probability falls below
the reference's, so it forgets without running away.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from e2urec.backbones.registry import Backbone
from e2urec.backbones.scoring import answer_logits
from e2urec.config import ConfigError, option
from e2urec.methods.base import FullCopyUnlearner
from e2urec.methods.registry import register
from e2urec.training.losses import label_ce, per_sample_ce
from e2urec.training.unlearn_loop import LossFn, Schedule, SteppingOptions


@dataclass
class NPOOptions(SteppingOptions):
    beta: float = option(1.0, help="NPO's inverse temperature (paper: 0.1). A row's push is "
                         "2 sigmoid(beta log(p / p_ref)) times gradient ascent's; once its one "
                         "answer token's p has fallen 10-fold it is 0.89 at beta 0.1 (NPO is "
                         "then GradDiff) and 0.18 at beta 1 (tuned: configs/frontier.yaml)")
    retain_weight: float = option(1.0, help="weight of the CE on retain")
    schedule: Schedule = option(help="lr, batch size, epochs, clipping, seed",
                                factory=lambda: Schedule(lr_scale=0.5))

    def validate(self) -> None:
        super().validate()
        if self.beta <= 0:
            raise ConfigError("npo: beta must be positive")


def answer_log_prob(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                    scope: str) -> torch.Tensor:
    """Per-sample mean log-probability of the answer's tokens (or the Yes/No token): [B]."""
    width = 1 if scope == "decision" else batch["answer_ids"].shape[1]
    logits = answer_logits(model, batch)[:, :width]
    return -per_sample_ce(logits, batch["answer_ids"][:, :width],
                          batch["answer_mask"][:, :width])


def npo_loss(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, beta: float) -> torch.Tensor:
    """(2 / beta) * mean softplus(beta * (log_prob - ref_log_prob))."""
    return 2.0 / beta * F.softplus(beta * (log_prob - ref_log_prob)).mean()


@register
class NPO(FullCopyUnlearner):
    name = "npo"
    Options = NPOOptions

    def loss(self, student: Backbone) -> LossFn:
        opts, scope = self.options, self.ctx.train.answer_loss
        reference = self.reference_log_probs(student, scope)

        def loss(model, forget_batch, retain_batch):
            l_forget = npo_loss(answer_log_prob(model, forget_batch, scope),
                                reference[forget_batch["index"].cpu()].to(
                                    forget_batch["answer_ids"].device), opts.beta)
            if retain_batch is None:
                return l_forget, {"forget_npo": l_forget.detach()}
            l_retain = label_ce(model, retain_batch, scope)
            return l_forget + opts.retain_weight * l_retain, {
                "forget_npo": l_forget.detach(), "retain_ce": l_retain.detach()}
        return loss

    @torch.no_grad()
    def reference_log_probs(self, student: Backbone, scope: str) -> torch.Tensor:
        """The Original's answer log-probability of every forget sample, by its position
        (the student is still the Original here: the loss is built before any step)."""
        encoder, device = student.encoder(), self.ctx.accelerator.device
        features = encoder.encode(self.forget_rows())
        model = student.model.to(device)
        was_training = model.training
        model.eval()
        out = torch.empty(len(features))
        for start in range(0, len(features), 64):
            batch = encoder.collate(features[start:start + 64])
            batch = {k: v.to(device) for k, v in batch.items()}
            out[start:start + len(features[start:start + 64])] = \
                answer_log_prob(model, batch, scope).float().cpu()
        model.train(was_training)
        return out
