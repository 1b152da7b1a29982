"""E2URec's distillation pieces: the teachers a student learns from, and its loss."""

from __future__ import annotations

import torch

from e2urec.backbones.scoring import answer_logits
from e2urec.training.losses import (
    answer_ce,
    decision_log_odds,
    decision_shift,
    forgetting_teacher,
    soft_ce,
)
from e2urec.training.teachers import (
    TeacherCache,
    TeacherFn,
)


def base_logits(student: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The Original's logits: the student's base with its adapters switched off, in eval mode."""
    was_training = student.training
    student.eval()
    with torch.no_grad(), student.disable_adapter():
        logits = answer_logits(student, batch)
    student.train(was_training)
    return logits


def distillation_loss(forget_teacher: TeacherCache, retain_teacher: TeacherCache, beta: float,
                      slots: int | None = None):
    """beta * L_forget + (1 - beta) * (L_remember + CE(retain)) over cached teacher logits.

    The retain batch goes through the student once: its logits give both the
    remembering loss and the label cross-entropy. ``slots`` keeps the first
    answer positions only (1: the Yes/No decision, for an Original trained on it).
    """
    width = slice(None, slots)

    def loss(model, forget_batch, retain_batch):
        mask = forget_batch["answer_mask"][:, width]
        l_forget = soft_ce(answer_logits(model, forget_batch)[:, width],
                           forget_teacher.logits(forget_batch["index"])[:, width], mask)
        if retain_batch is None:
            return l_forget, {"forget": l_forget.detach()}
        logits = answer_logits(model, retain_batch)[:, width]
        retain_mask = retain_batch["answer_mask"][:, width]
        l_remember = soft_ce(logits, retain_teacher.logits(retain_batch["index"])[:, width],
                             retain_mask)
        l_ce = answer_ce(logits, retain_batch["answer_ids"][:, width], retain_mask)
        total = beta * l_forget + (1 - beta) * (l_remember + l_ce)
        return total, {"forget": l_forget.detach(), "remember": l_remember.detach(),
                       "retain_ce": l_ce.detach()}

    return loss


def forget_teacher_fn(original: TeacherFn, augmented: torch.nn.Module, alpha: float,
                      space: str = "logits"):
    """The whole-vocabulary forgetting teacher as a function of a batch (the paper's)."""

    def teacher(batch):
        with torch.no_grad():
            z_aug = answer_logits(augmented, batch)
        return forgetting_teacher(original(batch), z_aug, alpha, space)

    return teacher


def original_recording_gain(original: TeacherFn, gain: TeacherFn, labels: torch.Tensor,
                            log_odds: torch.Tensor, shift: torch.Tensor, tokens):
    """The Original's logits as a teacher function that also records, per sample, its
    Yes-vs-No log-odds and the shift of the shard-gain teacher: the user's own shard
    model's gain toward the sample's label (:func:`~e2urec.training.teachers.member_gain`,
    none where it gained nothing), so that ``log_odds - alpha * shift`` moves each answer
    away from its label by alpha times what a model learnt from holding the user."""

    def teacher(batch):
        z_orig = original(batch)
        index = batch["index"].cpu()
        sign = labels[index].float() * 2 - 1
        log_odds[index] = decision_log_odds(z_orig, tokens.yes_id, tokens.no_id).cpu()
        shift[index] = torch.relu(sign * gain(batch).cpu()) * sign
        return z_orig

    return teacher


def original_recording_shift(original: TeacherFn, augmented: torch.nn.Module,
                             log_odds: torch.Tensor, shift: torch.Tensor, tokens,
                             space: str = "logits"):
    """The Original's logits as a teacher function that also records, per sample, its
    Yes-vs-No log-odds and the teacher's :func:`decision_shift` into the given tensors."""

    def teacher(batch):
        with torch.no_grad():
            z_aug = answer_logits(augmented, batch)
        z_orig = original(batch)
        index = batch["index"].cpu()
        log_odds[index] = decision_log_odds(z_orig, tokens.yes_id, tokens.no_id).cpu()
        shift[index] = decision_shift(z_orig, z_aug, tokens.yes_id, tokens.no_id, space).cpu()
        return z_orig

    return teacher
