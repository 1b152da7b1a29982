"""E2URec: LoRA adapters distilled from a forgetting and a remembering teacher.

Student: the Original plus LoRA adapters; only the adapters train.
Forgetting teacher (forget samples): z_orig - alpha * relu(z_aug - z_orig), where
z_aug comes from the Original fine-tuned further on the forget set. By default
only its Yes/No split is used (``teacher_scope: answer``) and alpha is set per
request (``calibrate_alpha``) so that the teacher is as unsure about the forget
samples as the Original is about users it never saw (the probe users).
Remembering teacher (retain samples): the Original, which is the student's
own base with its adapters disabled, so no second copy is held.
Loss: beta * L_forget + (1 - beta) * (L_remember + CE(retain)), soft-target
cross-entropy over the whole vocabulary at the answer positions.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from e2urec.backbones.registry import Backbone
from e2urec.backbones.scoring import answer_logits
from e2urec.checkpoints.folders import load_model
from e2urec.config import ConfigError, LoraConfig, TrainConfig, option
from e2urec.methods.base import Unlearned, Unlearner, register
from e2urec.training.loop import add_lora, fit, loader
from e2urec.training.losses import (
    answer_ce,
    calibrate_alpha,
    decision_log_odds,
    decision_loss,
    decision_shift,
    forgetting_teacher,
    push_shares,
    soft_ce,
)
from e2urec.training.teachers import DecisionShiftTeacher, TeacherCache
from e2urec.training.unlearn_loop import (
    Probe,
    Schedule,
    StopRule,
    make_probe,
    measure_before_unlearning,
    nothing_to_unlearn,
    run_unlearning,
    stopped_before_start,
)


@dataclass
class E2URecOptions:
    """Defaults: the project's recommended setting (docs/results.md, "E2URec that forgets");
    ``preset: paper`` is the reference code's."""

    alpha: float = option(32.0, help="strength of the forgetting teacher "
                          "z_orig - alpha * relu(z_aug - z_orig) (paper: 2); with "
                          "calibrate_alpha, the most it may be")
    calibrate_alpha: bool = option(
        True, help="choose alpha per request: the smallest alpha whose teacher's mean Yes/No "
        "loss on the forget samples reaches the probe users' loss at the first check "
        "(needs teacher_scope answer and the membership stop rule)")
    beta: float = option(0.7, help="weight of the forget loss against remember + CE on retain "
                         "(paper: 0.4)")
    lora: LoraConfig = option(help="the student's adapters (paper: r 16, alpha 32, q and v)",
                              factory=LoraConfig)
    schedule: Schedule = option(help="lr, batch size, epochs, forget-only epochs, clipping, "
                                "seed", factory=lambda: Schedule(epochs=2, forget_only_epochs=0))
    teacher_space: Literal["logits", "logprobs"] = option(
        "logits", help="apply the teacher formula to logits (paper) or log-probabilities")
    teacher_scope: Literal["vocab", "answer"] = option(
        "answer", help="answer: only the teacher's Yes/No split, the rest of the vocabulary "
        "from the Original; vocab: the teacher's whole distribution (paper)")
    augmented: str | None = option(None, help="a model folder to use as the augmented model "
                                   "(else trained here on the forget set)")
    augment_epochs: float = option(1, help="epochs of the augmented model on the forget set "
                                   "(a fraction ends mid-epoch)")
    augment_lr: float = option(1e-3, help="learning rate of the augmented model")
    augment_weight_decay: float = option(0.0, help="AdamW weight decay of the augmented model")
    augment_lora: bool = option(False, help="train the augmented model as LoRA adapters")
    stop_rule: Literal["membership", "none"] = option(
        "membership", help="membership: stop when forget loss reaches the probe users' loss; "
        "none: the paper's fixed schedule, no probe at all")
    noise_z: float = option(2.0, help="the gap counts as closed within this many standard "
                            "errors of the forget-vs-probe loss difference; the probe AUC "
                            "guard allows as many standard errors of its AUC")
    auc_tolerance: float = option(0.01, help="restore and stop if probe AUC falls more than "
                                  "this (or its noise, if larger) below its start")
    probe_size: int = option(192, help="samples of each probe set the stop rule scores")
    evals_per_epoch: int = option(1, help="stop-rule checks per epoch")
    teacher_cache_mb: float = option(2048, help="teacher logits kept in memory up to this "
                                     "size, then spilled to a float16 file")

    def validate(self) -> None:
        if self.calibrate_alpha and (self.teacher_scope != "answer"
                                     or self.stop_rule != "membership"):
            raise ConfigError("calibrate_alpha needs teacher_scope: answer and stop_rule: "
                              "membership (its target is the probe users' loss); set "
                              "calibrate_alpha: false to use a fixed alpha")


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


def forget_teacher_fn(student: torch.nn.Module, augmented: torch.nn.Module, alpha: float,
                      space: str = "logits"):
    """The whole-vocabulary forgetting teacher as a function of a batch (the paper's)."""

    def teacher(batch):
        with torch.no_grad():
            z_aug = answer_logits(augmented, batch)
        return forgetting_teacher(base_logits(student, batch), z_aug, alpha, space)

    return teacher


def original_recording_shift(student: torch.nn.Module, augmented: torch.nn.Module,
                             log_odds: torch.Tensor, shift: torch.Tensor, tokens,
                             space: str = "logits"):
    """The Original's logits as a teacher function that also records, per sample, its
    Yes-vs-No log-odds and the teacher's :func:`decision_shift` into the given tensors."""

    def teacher(batch):
        with torch.no_grad():
            z_aug = answer_logits(augmented, batch)
        z_orig = base_logits(student, batch)
        index = batch["index"].cpu()
        log_odds[index] = decision_log_odds(z_orig, tokens.yes_id, tokens.no_id).cpu()
        shift[index] = decision_shift(z_orig, z_aug, tokens.yes_id, tokens.no_id, space).cpu()
        return z_orig

    return teacher


@register
class E2URec(Unlearner):
    name = "e2urec"
    seed_option = ("schedule", "seed")
    Options = E2URecOptions
    # The reference code's budget (T5-base, ML-1M: 812 forget steps an epoch), in epochs of the
    # forget set; see docs/deviations.md.
    presets = {"paper": {
        "alpha": 2.0, "calibrate_alpha": False, "beta": 0.4, "teacher_scope": "vocab",
        "augment_lr": 5e-5, "augment_weight_decay": 0.01, "augment_epochs": 1200 / 812,
        "schedule": {"lr": 1e-3, "batch_size": 16, "epochs": 1000 / 812,
                     "forget_only_epochs": 1, "max_grad_norm": None},
        "stop_rule": "none"}}

    def unlearn(self, original: Backbone | None) -> Unlearned:
        opts, ctx = self.options, self.ctx
        forget, retain = ctx.rows("forget"), ctx.rows("retain")
        stop = StopRule(opts.stop_rule, opts.noise_z, opts.auc_tolerance)
        self.phases: dict[str, float] = {}  # where the time goes, for the record
        probe, start = None, None
        if opts.stop_rule != "none":
            with self.phase("first check"):
                # Only the probe users (never trained on) decide; no valid or test row is read.
                probe = make_probe(original, forget, ctx.rows("probe"), opts.probe_size,
                                   opts.schedule.seed)
                start = measure_before_unlearning(original, probe, ctx.accelerator.device)
            if reason := nothing_to_unlearn(start, stop):
                # The augmented model and the teachers would go unused: skip them.
                return Unlearned(add_lora(original, opts.lora), ctx.original_dir, {
                    "history": stopped_before_start(start, reason),
                    "augment": {"source": "not needed"}, "teacher": {"source": "not needed"},
                    "teacher_forwards": {"forget": 0, "retain": 0}, "phases": self.phases})
        return self._distil(original, forget, retain, stop, probe, start)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def _distil(self, original: Backbone, forget: list[dict], retain: list[dict],
                stop: StopRule, probe: Probe | None, start: dict[str, Any] | None) -> Unlearned:
        """Augmented model, cached teachers, then the unlearning loop on LoRA adapters."""
        opts, ctx = self.options, self.ctx
        device, schedule = ctx.accelerator.device, opts.schedule
        with self.phase("augmented model"):
            augmented, augment_record = self._augmented(original, forget)
        student = add_lora(original, opts.lora)
        student.model.to(device)
        with self.phase("forget teacher"):
            forget_teacher, teacher_record = self._forget_teacher(
                student, augmented, forget, device, start["holdout_loss"] if start else None)
        del augmented
        gc.collect()
        retain_teacher = self._cache(student, retain, device,
                                     lambda b: base_logits(student.model, b))
        with self.phase("unlearning steps"):  # the retain teacher fills as batches come
            history = run_unlearning(
            student, loader(student, forget, schedule.batch_size, True, schedule.seed),
            loader(student, retain, schedule.batch_size, True, schedule.seed),
            distillation_loss(forget_teacher, retain_teacher, opts.beta,
                              1 if ctx.train.answer_loss == "decision" else None), schedule,
            ctx.accelerator, stop, probe, opts.evals_per_epoch, desc="e2urec", start=start)
        # The checks ran inside the steps' span: count them on their own.
        self.phases["checks"] = history.get("check_seconds", 0.0)
        self.phases["unlearning steps"] -= self.phases["checks"]
        teacher_forwards = {"forget": forget_teacher.computed, "retain": retain_teacher.computed}
        return Unlearned(student, ctx.original_dir, {
            "history": history, "augment": augment_record, "teacher": teacher_record,
            "teacher_forwards": teacher_forwards,
            "phases": self.phases})

    def _augmented(self, original: Backbone, forget: list[dict]) -> tuple[Backbone, dict]:
        """The Original over-fitted to the forget set (given, or trained here on a copy)."""
        opts, ctx = self.options, self.ctx
        if opts.augmented:
            return load_model(opts.augmented, merged=True), {"source": opts.augmented}
        model = Backbone(copy.deepcopy(original.model), original.tokenizer, original.family,
                         original.max_prompt_tokens)
        batch_size = opts.schedule.batch_size
        steps = max(1, round(opts.augment_epochs * math.ceil(len(forget) / batch_size)))
        train = TrainConfig(epochs=math.ceil(opts.augment_epochs), max_steps=steps,
                            lr=opts.augment_lr, weight_decay=opts.augment_weight_decay,
                            batch_size=batch_size, early_stopping=False,
                            use_lora=opts.augment_lora, lora=opts.lora, seed=opts.schedule.seed)
        if opts.augment_lora:
            model = add_lora(model, opts.lora)
        history = fit(model, forget, [], train, ctx.accelerator, desc="augment")
        return model, {"source": "trained", "lora": opts.augment_lora,
                       "seconds": history["seconds"], "train_loss": history["train_loss"]}

    def _forget_teacher(self, student: Backbone, augmented: Backbone, forget: list[dict],
                        device: torch.device, target_loss: float | None
                        ) -> tuple[Any, dict[str, Any]]:
        """The forgetting teacher's cache (the augmented model is needed only here)."""
        augmented.model.to(device).eval()
        opts = self.options
        if opts.teacher_scope == "vocab":
            cache = self._cache(student, forget, device, forget_teacher_fn(
                student.model, augmented.model, opts.alpha, opts.teacher_space))
            cache.fill()
            return cache, {"alpha": opts.alpha, "scope": "vocab"}
        tokens = student.encoder().tokens
        log_odds, shift = torch.zeros(len(forget)), torch.zeros(len(forget))
        cache = self._cache(student, forget, device, original_recording_shift(
            student.model, augmented.model, log_odds, shift, tokens, opts.teacher_space))
        cache.fill()
        labels = torch.tensor([int(r["label"]) for r in forget])
        alpha = opts.alpha
        if opts.calibrate_alpha:
            alpha = calibrate_alpha(log_odds, shift, labels, target_loss, opts.alpha)
        return DecisionShiftTeacher(cache, shift, tokens, alpha), {
            "alpha": alpha, "scope": "answer", "calibrated": opts.calibrate_alpha,
            "target_loss": target_loss, "original_loss": float(decision_loss(log_odds, labels)),
            "teacher_loss": float(decision_loss(log_odds - alpha * shift, labels)),
            "samples_pushed": push_shares(shift, labels)}

    def _cache(self, student: Backbone, rows: list[dict], device, teacher) -> TeacherCache:
        encoder = student.encoder()
        return TeacherCache(encoder, encoder.encode(rows), teacher, device,
                            self.options.teacher_cache_mb, self.ctx.out_dir.parent)
