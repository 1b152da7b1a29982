"""Losses at the answer positions: label cross-entropy, soft targets, teacher logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from e2urec.backbones.scoring import answer_logits


def token_ce(logits: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every answer token ``[B, A]``, the vocabulary on the last axis.

    With the classes on a middle axis (``[B, V, A]``) the CPU kernel loses
    float32 precision on large vocabularies (see tests/training/test_losses.py).
    """
    flat = F.cross_entropy(logits.float().flatten(0, 1), answer_ids.flatten(), reduction="none")
    return flat.view_as(answer_ids)


def per_sample_ce(logits: torch.Tensor, answer_ids: torch.Tensor,
                  answer_mask: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy of each sample's answer: ``[B]``."""
    tokens = token_ce(logits, answer_ids)
    mask = answer_mask.float()
    return (tokens * mask).sum(1) / mask.sum(1).clamp(min=1)


def answer_ce(logits: torch.Tensor, answer_ids: torch.Tensor,
              answer_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every answer token of the batch."""
    tokens = token_ce(logits, answer_ids)
    mask = answer_mask.float()
    return (tokens * mask).sum() / mask.sum().clamp(min=1)


def soft_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            answer_mask: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy -sum p_teacher log p_student over the whole vocabulary."""
    width = min(student_logits.shape[1], teacher_logits.shape[1])
    teacher = teacher_logits[:, :width].float().softmax(-1)
    log_student = student_logits[:, :width].float().log_softmax(-1)
    per_token = -(teacher * log_student).sum(-1)
    mask = answer_mask[:, :width].float()
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def forgetting_teacher(z_orig: torch.Tensor, z_aug: torch.Tensor, alpha: float,
                       space: str = "logits") -> torch.Tensor:
    """z_orig - alpha * relu(z_aug - z_orig), on raw logits (the paper) or log-probabilities.

    Raw logits are shift-free under softmax, so when the augmented model's
    logits sit uniformly below the original's the relu passes almost nothing;
    in log-probability space only the change in confidence counts.
    """
    if space == "logprobs":
        z_orig, z_aug = z_orig.float().log_softmax(-1), z_aug.float().log_softmax(-1)
    elif space != "logits":
        raise ValueError(f"unknown teacher space {space!r}; use 'logits' or 'logprobs'")
    return z_orig - alpha * torch.relu(z_aug - z_orig)


def answer_scoped_teacher(z_orig: torch.Tensor, z_teacher: torch.Tensor, yes_id: int,
                          no_id: int) -> torch.Tensor:
    """The Original's distribution with only its Yes/No split taken from ``z_teacher``.

    At the answer position (slot 0) the Original's mass on {Yes, No} is kept and
    shared between them as ``z_teacher`` shares it; every other token, and every
    later slot, keeps the Original's probability. Returns log-probabilities.
    """
    return with_yes_no_split(z_orig, z_teacher[:, 0, [yes_id, no_id]], yes_id, no_id)


def with_yes_no_split(z_orig: torch.Tensor, pair_logits: torch.Tensor, yes_id: int,
                      no_id: int) -> torch.Tensor:
    """:func:`answer_scoped_teacher` given only the teacher's (Yes, No) logits ``[B, 2]``."""
    log_p = z_orig.float().log_softmax(-1).clone()
    pair = torch.tensor([yes_id, no_id], device=z_orig.device)
    mass = log_p[:, 0, pair].logsumexp(-1, keepdim=True)
    log_p[:, 0, pair] = mass + pair_logits.float().log_softmax(-1)
    return log_p


def decision_log_odds(z: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """The Yes-vs-No log-odds at the answer position (slot 0): ``[B]``."""
    return (z[:, 0, yes_id] - z[:, 0, no_id]).float()


def decision_shift(z_orig: torch.Tensor, z_aug: torch.Tensor, yes_id: int, no_id: int,
                   space: str = "logits") -> torch.Tensor:
    """How far one unit of alpha moves the teacher's Yes-vs-No log-odds down: ``[B]``.

    At the decision slot the teacher z_orig - alpha * relu(z_aug - z_orig) has
    log-odds ``d_orig - alpha * (relu(dz_yes) - relu(dz_no))``; this returns the
    bracket, so the teacher's split for any alpha follows from it and the Original.
    """
    first_orig, first_aug = z_orig[:, 0].float(), z_aug[:, 0].float()
    if space == "logprobs":
        first_orig, first_aug = first_orig.log_softmax(-1), first_aug.log_softmax(-1)
    pushed = torch.relu(first_aug - first_orig)
    return pushed[:, yes_id] - pushed[:, no_id]


def decision_loss(log_odds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean Yes/No cross-entropy of a split with these Yes-vs-No log-odds."""
    sign = labels.float() * 2 - 1
    return F.softplus(-sign * log_odds.float()).mean()


def push_shares(shift: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Where a forgetting teacher pushes each sample: away from its label (forgetting),
    toward it, or not at all (the augmented model's gain there was cut by the relu)."""
    away = shift * (labels * 2 - 1)
    return {"away_from_label": float((away > 0).float().mean()),
            "toward_label": float((away < 0).float().mean()),
            "not_at_all": float((away == 0).float().mean())}


def calibrate_alpha(log_odds: torch.Tensor, shift: torch.Tensor, labels: torch.Tensor,
                    target: float, max_alpha: float, grid: int = 4097) -> float:
    """The smallest alpha in [0, max_alpha] whose teacher reaches ``target`` mean loss.

    ``log_odds``: the Original's Yes-vs-No log-odds on the forget samples;
    ``shift``: :func:`decision_shift`. The teacher's mean loss at alpha is
    ``decision_loss(log_odds - alpha * shift)``; if no alpha reaches the target,
    the alpha of the highest loss on the grid is returned.
    """
    alphas = torch.linspace(0.0, max_alpha, grid, dtype=torch.float64)
    sign = labels.double() * 2 - 1
    teacher = log_odds.double()[None, :] - alphas[:, None] * shift.double()[None, :]
    losses = F.softplus(-sign[None, :] * teacher).mean(1)
    reached = torch.nonzero(losses >= target)
    best = int(reached[0]) if len(reached) else int(losses.argmax())
    return float(alphas[best])


def label_ce(model: torch.nn.Module, batch: dict[str, torch.Tensor],
             scope: str = "answer") -> torch.Tensor:
    """Label cross-entropy over the answer's tokens, or over the Yes/No token alone."""
    width = 1 if scope == "decision" else batch["answer_ids"].shape[1]
    logits = answer_logits(model, batch)[:, :width]
    return answer_ce(logits, batch["answer_ids"][:, :width], batch["answer_mask"][:, :width])


def label_loss(forget_weight: float, scope: str = "answer"):
    """CE(retain) + forget_weight * CE(forget batch), over the tokens ``scope`` names.

    NegGrad ascends on forget (a negative weight); the label-flipping Bad-Teacher
    descends on flipped forget samples (a positive one). ``scope`` is the one
    the Original was trained with (``train.answer_loss``).
    """

    def loss(model, forget_batch, retain_batch):
        l_forget = label_ce(model, forget_batch, scope)
        if retain_batch is None:
            return forget_weight * l_forget, {"forget_ce": l_forget.detach()}
        l_retain = label_ce(model, retain_batch, scope)
        return l_retain + forget_weight * l_forget, {"forget_ce": l_forget.detach(),
                                                     "retain_ce": l_retain.detach()}

    return loss
