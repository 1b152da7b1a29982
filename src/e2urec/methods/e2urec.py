"""E2URec: LoRA adapters distilled from a forgetting and a remembering teacher.

Student: the Original plus LoRA adapters; only the adapters train.
Forgetting teacher (forget samples): z_orig - alpha * relu(z_aug - z_orig), where
z_aug comes from the Original fine-tuned further on the forget set.
Remembering teacher (retain samples): the Original, which is the student's
own base with its adapters disabled, so no second copy is held.
Loss: beta * L_forget + (1 - beta) * (L_remember + CE(retain)), soft-target
cross-entropy over the whole vocabulary at the answer positions.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from e2urec.backbones.registry import Backbone
from e2urec.backbones.scoring import answer_logits
from e2urec.config import LoraConfig, TrainConfig
from e2urec.methods.base import Unlearner, register
from e2urec.training.checkpoints import load_model, save_model
from e2urec.training.loop import add_lora, fit, loader
from e2urec.training.losses import (
    answer_ce,
    answer_scoped_teacher,
    forgetting_teacher,
    soft_ce,
)
from e2urec.training.teachers import TeacherCache
from e2urec.training.unlearn_loop import (
    LoopOptions,
    StopRule,
    make_probe,
    nothing_to_unlearn,
    run_unlearning,
    starting_point,
    stopped_before_start,
)


@dataclass
class E2URecOptions:
    alpha: float = 2.0
    beta: float = 0.4
    lora: LoraConfig = field(default_factory=LoraConfig)
    lr: float = 1e-3
    batch_size: int = 16
    epochs: int = 3
    forget_only_epochs: int = 1
    teacher_space: Literal["logits", "logprobs"] = "logits"
    teacher_scope: Literal["vocab", "answer"] = "vocab"
    augmented: str | None = None
    augment_epochs: int = 3
    augment_lr: float = 1e-3
    augment_lora: bool = False
    stop_rule: Literal["membership", "none"] = "membership"
    gap_tolerance: float = 0.0
    auc_tolerance: float = 0.01
    probe_size: int = 512
    evals_per_epoch: int = 2
    teacher_cache_mb: float = 2048
    seed: int = 42


def base_logits(student: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The Original's logits: the student's base with its adapters switched off, in eval mode."""
    was_training = student.training
    student.eval()
    with torch.no_grad(), student.disable_adapter():
        logits = answer_logits(student, batch)
    student.train(was_training)
    return logits


def distillation_loss(forget_teacher: TeacherCache, retain_teacher: TeacherCache, beta: float):
    """beta * L_forget + (1 - beta) * (L_remember + CE(retain)) over cached teacher logits.

    The retain batch goes through the student once: its logits give both the
    remembering loss and the label cross-entropy.
    """

    def loss(model, forget_batch, retain_batch):
        mask = forget_batch["answer_mask"]
        l_forget = soft_ce(answer_logits(model, forget_batch),
                           forget_teacher.logits(forget_batch["index"]), mask)
        if retain_batch is None:
            return l_forget, {"forget": l_forget.detach()}
        logits = answer_logits(model, retain_batch)
        l_remember = soft_ce(logits, retain_teacher.logits(retain_batch["index"]),
                             retain_batch["answer_mask"])
        l_ce = answer_ce(logits, retain_batch["answer_ids"], retain_batch["answer_mask"])
        total = beta * l_forget + (1 - beta) * (l_remember + l_ce)
        return total, {"forget": l_forget.detach(), "remember": l_remember.detach(),
                       "retain_ce": l_ce.detach()}

    return loss


def forget_teacher_fn(student: torch.nn.Module, augmented: torch.nn.Module, alpha: float,
                      space: str = "logits", scope: str = "vocab", tokens=None):
    """The forgetting teacher as a function of a batch (adapters of ``student`` disabled)."""

    def teacher(batch):
        with torch.no_grad():
            z_aug = answer_logits(augmented, batch)
        z_orig = base_logits(student, batch)
        z_fgt = forgetting_teacher(z_orig, z_aug, alpha, space)
        if scope == "vocab":
            return z_fgt
        return answer_scoped_teacher(z_orig, z_fgt, tokens.yes_id, tokens.no_id)

    return teacher


def held_out_of_the_same_kind(ctx, forget: list[dict], minimum: int = 32) -> list[dict]:
    """What the forget samples' loss should rise to: the forgotten users' own valid samples.

    Same users, never trained on, so the comparison is not confounded by who
    the users are; with too few of those, samples of users never trained on,
    then valid samples.
    """
    users = {r["user_id"] for r in forget}
    same_users = [r for r in ctx.rows("valid") if r["user_id"] in users]
    if len(same_users) >= minimum:
        return same_users
    return ctx.rows("holdout") or ctx.rows("valid")


@register
class E2URec(Unlearner):
    name = "e2urec"
    Options = E2URecOptions

    def unlearn(self) -> dict[str, Any]:
        opts, ctx = self.options, self.ctx
        forget, retain = ctx.rows("forget"), ctx.rows("retain")
        device = ctx.accelerator.device
        stop = StopRule(opts.stop_rule, opts.gap_tolerance, opts.auc_tolerance, opts.probe_size)
        with self.timed():
            student = load_model(ctx.original_dir, merged=True)  # adapters come later
            probe = make_probe(student, forget, held_out_of_the_same_kind(ctx, forget),
                               ctx.rows("valid"), opts.probe_size, opts.seed)
            start = starting_point(student, probe, device)
            if reason := nothing_to_unlearn(start, stop):
                # The augmented model and the teachers would go unused: skip them.
                student = add_lora(student, opts.lora)
                history = stopped_before_start(start, reason)
                augment_record: dict[str, Any] = {"source": "not needed"}
                teacher_forwards = {"forget": 0, "retain": 0}
            else:
                student, history, augment_record, teacher_forwards = self._distil(
                    student, forget, retain, stop, probe, start)
        if ctx.accelerator.is_main_process:
            save_model(student, ctx.out_dir, {"method": self.name}, base_dir=ctx.original_dir)
        trainable, total = student.parameter_counts()
        return {"trainable_params": trainable, "total_params": total, "history": history,
                "augment": augment_record, "teacher_forwards": teacher_forwards}

    def _distil(self, original: Backbone, forget: list[dict], retain: list[dict],
                stop: StopRule, probe, start: dict[str, Any]):
        """Augmented model, cached teachers, then the unlearning loop on LoRA adapters."""
        opts, ctx = self.options, self.ctx
        device = ctx.accelerator.device
        augmented, augment_record = self._augmented(forget)
        student = add_lora(original, opts.lora)
        student.model.to(device)
        forget_teacher = self._forget_teacher(student, augmented, forget, device)
        del augmented
        gc.collect()
        retain_teacher = self._cache(student, retain, device,
                                     lambda b: base_logits(student.model, b))
        history = run_unlearning(
            student, loader(student, forget, opts.batch_size, True, opts.seed),
            loader(student, retain, opts.batch_size, True, opts.seed),
            distillation_loss(forget_teacher, retain_teacher, opts.beta),
            LoopOptions(epochs=opts.epochs, forget_only_epochs=opts.forget_only_epochs,
                        lr=opts.lr, batch_size=opts.batch_size, seed=opts.seed,
                        evals_per_epoch=opts.evals_per_epoch),
            ctx.accelerator, stop, probe, desc="e2urec", start=start)
        teacher_forwards = {"forget": forget_teacher.computed, "retain": retain_teacher.computed}
        return student, history, augment_record, teacher_forwards

    def _augmented(self, forget: list[dict]) -> tuple[Backbone, dict[str, Any]]:
        """The Original over-fitted to the forget set (given, or trained here)."""
        opts, ctx = self.options, self.ctx
        if opts.augmented:
            return load_model(opts.augmented, merged=True), {"source": opts.augmented}
        model = load_model(ctx.original_dir, merged=True)
        train = TrainConfig(epochs=opts.augment_epochs, lr=opts.augment_lr,
                            batch_size=opts.batch_size, early_stopping=False,
                            use_lora=opts.augment_lora, lora=opts.lora, seed=opts.seed)
        if opts.augment_lora:
            model = add_lora(model, opts.lora)
        history = fit(model, forget, ctx.rows("valid")[:256], train, ctx.accelerator,
                      desc="augment")
        return model, {"source": "trained", "lora": opts.augment_lora,
                       "seconds": history["seconds"], "train_loss": history["train_loss"]}

    def _forget_teacher(self, student: Backbone, augmented: Backbone, forget: list[dict],
                        device: torch.device) -> TeacherCache:
        augmented.model.to(device).eval()
        opts = self.options
        teacher = forget_teacher_fn(student.model, augmented.model, opts.alpha,
                                    opts.teacher_space, opts.teacher_scope,
                                    student.encoder().tokens)
        cache = self._cache(student, forget, device, teacher)
        # The augmented model is needed only here: fill the cache now, then drop it.
        for start in range(0, len(forget), 64):
            cache.logits(torch.arange(start, min(start + 64, len(forget))))
        return cache

    def _cache(self, student: Backbone, rows: list[dict], device, teacher) -> TeacherCache:
        encoder = student.encoder()
        return TeacherCache(encoder, encoder.encode(rows), teacher, device,
                            self.options.teacher_cache_mb, self.ctx.out_dir.parent)

