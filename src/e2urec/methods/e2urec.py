"""E2URec: a student distilled from a forgetting and a remembering teacher.

Student: the Original plus LoRA adapters, only the adapters training (the
paper's; ``student: full`` trains every weight of a copy instead).
Forgetting teacher (forget samples): z_orig - alpha * relu(z_aug - z_orig), where
z_aug comes from the Original fine-tuned further on the forget set. By default
only its Yes/No split is used (``teacher_scope: answer``) and alpha is set per
request (``calibrate_alpha``) so that the teacher is as unsure about the forget
samples as the Original is about users it never saw (the probe users).
With ``forget_teacher: shards`` the forgetting teacher is instead, for each forget
row, the mean answer of the user-sharded models that never held its user (a
RecEraser ensemble's ``initial/``, trained before any request); with
``shard-gain`` it is the Original's answer moved away from the label by alpha
times what the user's own shard model gained over those that never held them.
Remembering teacher (retain samples): the Original (a LoRA student's own base,
adapters off). Loss: beta * L_forget + (1 - beta) * (L_remember + CE(retain)),
soft-target cross-entropy over the whole vocabulary at the answer positions.
"""

from __future__ import annotations

import copy
import gc
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from e2urec.backbones.registry import Backbone
from e2urec.checkpoints.folders import META_FILE, load_model, read_meta
from e2urec.config import ConfigError, LoraConfig, TrainConfig, option
from e2urec.methods.accounting import Phases
from e2urec.methods.base import Unlearned, Unlearner
from e2urec.methods.registry import register
from e2urec.training.distillation import (
    base_logits,
    distillation_loss,
    forget_teacher_fn,
    original_recording_gain,
    original_recording_shift,
)
from e2urec.training.loop import add_lora, fit, loader
from e2urec.training.losses import (
    answer_scoped_teacher,
    calibrate_alpha,
    decision_loss,
    push_shares,
)
from e2urec.training.plateau import TeacherProbe, make_teacher_probe
from e2urec.training.shards import Assign, shard_assignment
from e2urec.training.stop_rule import (
    Probe,
    StopRule,
    make_probe,
    nothing_to_unlearn,
)
from e2urec.training.teachers import (
    DecisionShiftTeacher,
    TeacherCache,
    TeacherFn,
    frozen,
    held_out_shards,
    member_gain,
)
from e2urec.training.unlearn_loop import (
    Schedule,
    measure_before_unlearning,
    run_unlearning,
    stopped_before_start,
)

# The forgetting teachers read from a user-sharded ensemble trained before the request.
SHARD_TEACHERS = ("shards", "shard-gain")


@dataclass
class E2URecOptions:
    """Defaults: the project's recommended setting (docs/results.md, the three-seed table);
    ``preset: paper`` is the reference code's."""

    alpha: float = option(32.0, help="strength of the forgetting teacher "
                          "z_orig - alpha * relu(z_aug - z_orig) (paper: 2); with "
                          "calibrate_alpha, the most it may be")
    calibrate_alpha: bool = option(
        True, help="choose alpha per request: the smallest alpha whose teacher's mean Yes/No "
        "loss on the forget samples reaches the probe users' loss at the first check "
        "(needs teacher_scope answer and the membership stop rule; the augmented teacher "
        "only)")
    beta: float = option(0.7, help="weight of the forget loss against remember + CE on retain "
                         "(paper: 0.4; 1: the forget rows alone, no retain batch)")
    student: Literal["lora", "full"] = option(
        "lora", help="what trains: LoRA adapters on the Original (lora; targets up to "
        "all-linear) or every weight of a copy (full; the remembering teacher is then a frozen "
        "copy of the Original)")
    lora: LoraConfig = option(help="the student's adapters (paper: r 16, alpha 32, q and v; "
                              "targets: [all-linear] adapts every linear layer)",
                              factory=LoraConfig)
    schedule: Schedule = option(help="lr, batch size, epochs, forget-only epochs, clipping, "
                                "seed", factory=Schedule)
    teacher_space: Literal["logits", "logprobs"] = option(
        "logits", help="apply the teacher formula to logits (paper) or log-probabilities")
    teacher_scope: Literal["vocab", "answer"] = option(
        "answer", help="answer: only the teacher's Yes/No split, the rest of the vocabulary "
        "from the Original; vocab: the teacher's whole distribution (paper)")
    forget_teacher: Literal["augmented", "shards", "shard-gain"] = option(
        "augmented", help="augmented: the paper's z_orig - alpha * relu(z_aug - z_orig); "
        "shards: for each forget row, the user-sharded models (option shards) that never held "
        "its user, a non-member's answer (of another model class); shard-gain: the Original's "
        "Yes/No answer moved away from the label by alpha times the user's own shard model's "
        "gain toward it over the shards that never held the user (alpha calibrated as for "
        "augmented, on any stop rule)")
    shards: str | None = option(None, help="the folder of a user-sharded ensemble trained "
                                "before the request (a receraser run's initial/), for "
                                "forget_teacher: shards (the bench trains one a seed)")
    augmented: str | None = option(None, help="a model folder to use as the augmented model "
                                   "(else trained here on the forget set)")
    augment_epochs: float = option(1, help="epochs of the augmented model on the forget set "
                                   "(a fraction ends mid-epoch)")
    augment_lr: float = option(1e-3, help="learning rate of the augmented model")
    augment_weight_decay: float = option(0.0, help="AdamW weight decay of the augmented model")
    augment_lora: bool = option(False, help="train the augmented model as LoRA adapters")
    stop: StopRule = option(help="when the steps stop: at the probe users' level, checked "
                            "every few steps (kind none: the paper's fixed schedule)",
                            factory=StopRule)
    teacher_cache_mb: float = option(2048, help="teacher logits kept in memory up to this "
                                     "size, then spilled to a float16 file")

    def validate(self) -> None:
        if not 0 <= self.beta <= 1:
            raise ConfigError("beta weighs the forget loss against the retain terms: give a "
                              "value in [0, 1]")
        wrong_place = self.teacher_scope != "answer" or self.stop.kind != "membership"
        if self.forget_teacher == "augmented" and self.calibrate_alpha and wrong_place:
            raise ConfigError("calibrate_alpha needs teacher_scope: answer and stop kind "
                              "membership (its target is the probe users' loss); set "
                              "calibrate_alpha: false to use a fixed alpha")
        if self.forget_teacher == "shard-gain" and self.teacher_scope != "answer":
            raise ConfigError("forget_teacher shard-gain moves the Yes/No answer only: use "
                              "teacher_scope: answer")


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
        "stop": {"kind": "none"}}}

    def unlearn(self, original: Backbone | None) -> Unlearned:
        opts, ctx = self.options, self.ctx
        forget, retain = ctx.rows("forget"), ctx.rows("retain")
        stop = opts.stop
        self.phases = Phases()  # where the time goes, for the record
        probe, start, level = None, None, None
        if stop.kind == "membership" or opts.forget_teacher == "shard-gain":
            with self.phases.timed("first check"):
                # Only the probe users (never trained on) decide; no valid or test row is read.
                first = make_probe(original, forget, ctx.rows("probe"), stop.probe_size,
                                   opts.schedule.seed)
                measured = measure_before_unlearning(original, first, ctx.accelerator.device)
            level = measured["holdout_loss"]  # a calibrated teacher's target
            if stop.kind == "membership":
                probe, start = first, measured
            if start and (reason := nothing_to_unlearn(start, stop)):
                # The augmented model and the teachers would go unused: skip them.
                # A full student would be the Original itself: no copy to make.
                kept = original if opts.student == "full" else self._student(original)[0]
                return Unlearned(kept, ctx.original_dir, {
                    "history": stopped_before_start(start, reason),
                    "augment": {"source": "not needed"}, "teacher": {"source": "not needed"},
                    "teacher_forwards": {"forget": 0, "retain": 0}, "phases": self.phases})
        return self._distil(original, forget, retain, stop, probe, start, level)

    def _distil(self, original: Backbone, forget: list[dict], retain: list[dict],
                stop: StopRule, probe: Probe | TeacherProbe | None,
                start: dict[str, Any] | None, level: float | None) -> Unlearned:
        """Augmented model, cached teachers, then the unlearning loop on LoRA adapters."""
        opts, ctx = self.options, self.ctx
        device, schedule = ctx.accelerator.device, opts.schedule
        augmented, augment_record = None, {"source": "not needed"}
        if opts.forget_teacher == "augmented":
            with self.phases.timed("augmented model"):
                augmented, augment_record = self._augmented(original, forget)
        student, original_logits = self._student(original)
        with self.phases.timed("forget teacher"):
            if augmented is None:
                forget_teacher, teacher_record = self._shards_teacher(
                    student, original_logits, forget, device, level)
            else:
                forget_teacher, teacher_record = self._forget_teacher(
                    student, original_logits, augmented, forget, device, level)
        del augmented
        gc.collect()
        retain_teacher = self._cache(student, retain, device, original_logits)
        if stop.kind == "plateau":  # the distance to this teacher on forget rows decides
            probe = make_teacher_probe(student, forget, forget_teacher.logits,
                                       stop.probe_size, schedule.seed)
        with self.phases.timed("unlearning steps"):  # the retain teacher fills as batches come
            history = run_unlearning(
            student, loader(student, forget, schedule.batch_size, True, schedule.seed),
            # beta 1: the retain rows weigh nothing, so no retain batch is formed
            loader(student, retain, schedule.batch_size, True, schedule.seed)
            if opts.beta < 1 else None,
            distillation_loss(forget_teacher, retain_teacher, opts.beta,
                              1 if ctx.train.answer_loss == "decision" else None), schedule,
            ctx.accelerator, stop, probe, desc="e2urec", start=start)
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

    def setup(self) -> None:
        if self.options.forget_teacher in SHARD_TEACHERS:
            self._shard_members()  # a wrong folder fails here, before the timer starts

    def _shard_members(self) -> tuple[list[Path], Assign]:
        """The user-sharded ensemble's member folders, checked against this data's shards,
        and the row -> shard assignment they were trained on."""
        if not self.options.shards:  # the bench fills it in from its own user-shards stage
            raise ConfigError("forget_teacher: shards needs shards: the folder of a "
                              "user-sharded ensemble (a receraser run's initial/)")
        folder = Path(self.options.shards)
        meta = read_meta(folder) if (folder / META_FILE).is_file() else {}
        k, assign = shard_assignment(self.ctx.data_dir, "user_balanced")
        # Older RecEraser folders name no scheme; RecEraser's is always by user.
        scheme = meta.get("scheme", "user_balanced" if meta.get("method") == "receraser" else None)
        if scheme != "user_balanced" or len(meta.get("members", [])) != k:
            raise ConfigError(f"shards: {folder} is not a user-sharded ensemble of this data's "
                              f"{k} shards (a receraser run's initial/ folder)")
        return [folder / m for m in meta["members"]], assign

    def _shards_teacher(self, student: Backbone, original_logits: TeacherFn,
                        forget: list[dict], device: torch.device, level: float | None
                        ) -> tuple[Any, dict[str, Any]]:
        """Each forget row taught by the shard models that never held its user (or, for
        shard-gain, the Original moved by what the user's own shard gained)."""
        members, assign = self._shard_members()
        shard_of = torch.tensor([assign(row) for row in forget])
        models = [load_model(m, merged=True).model.to(device).eval() for m in members]
        tokens = student.encoder().tokens
        if self.options.forget_teacher == "shard-gain":
            labels = torch.tensor([int(r["label"]) for r in forget])
            log_odds, shift = torch.zeros(len(forget)), torch.zeros(len(forget))
            cache = self._cache(student, forget, device, original_recording_gain(
                original_logits, member_gain(models, shard_of, tokens), labels, log_odds,
                shift, tokens))
            cache.fill()  # then the members can go
            return self._shift_teacher(cache, log_odds, shift, labels, tokens, level,
                                       {"kind": "shard-gain", "members": len(members)})
        teacher = held_out_shards(models, shard_of)
        if self.options.teacher_scope == "answer":  # only the Yes/No split from the shards
            shards_fn = teacher

            def teacher(batch):
                return answer_scoped_teacher(original_logits(batch), shards_fn(batch),
                                             tokens.yes_id, tokens.no_id)
        cache = self._cache(student, forget, device, teacher)
        cache.fill()  # then the members can go
        return cache, {"kind": "shards", "folder": str(Path(self.options.shards).resolve()),
                       "members": len(members), "scope": self.options.teacher_scope}

    def _student(self, original: Backbone) -> tuple[Backbone, TeacherFn]:
        """The model that trains, and the Original's logits as a teacher function."""
        device = self.ctx.accelerator.device
        if self.options.student == "lora":
            student = add_lora(original, self.options.lora)
            student.model.to(device)
            # The remembering teacher is the student's own base with its adapters off.
            return student, lambda batch: base_logits(student.model, batch)
        reference = copy.deepcopy(original.model).to(device).eval()
        for param in original.model.parameters():
            param.requires_grad_(True)
        original.model.to(device)
        return original, frozen(reference)

    def _forget_teacher(self, student: Backbone, original_logits: TeacherFn,
                        augmented: Backbone, forget: list[dict],
                        device: torch.device, target_loss: float | None
                        ) -> tuple[Any, dict[str, Any]]:
        """The forgetting teacher's cache (the augmented model is needed only here)."""
        augmented.model.to(device).eval()
        opts = self.options
        if opts.teacher_scope == "vocab":
            cache = self._cache(student, forget, device, forget_teacher_fn(
                original_logits, augmented.model, opts.alpha, opts.teacher_space))
            cache.fill()
            return cache, {"kind": "augmented", "alpha": opts.alpha, "scope": "vocab"}
        tokens = student.encoder().tokens
        log_odds, shift = torch.zeros(len(forget)), torch.zeros(len(forget))
        cache = self._cache(student, forget, device, original_recording_shift(
            original_logits, augmented.model, log_odds, shift, tokens, opts.teacher_space))
        cache.fill()
        labels = torch.tensor([int(r["label"]) for r in forget])
        return self._shift_teacher(cache, log_odds, shift, labels, tokens, target_loss,
                                   {"kind": "augmented"})

    def _shift_teacher(self, cache: TeacherCache, log_odds: torch.Tensor, shift: torch.Tensor,
                       labels: torch.Tensor, tokens, target_loss: float | None,
                       record: dict[str, Any]) -> tuple[DecisionShiftTeacher, dict[str, Any]]:
        """The Original's answers moved by alpha * shift, alpha calibrated to the probe
        users' loss (or the option's), and the teacher's record."""
        opts = self.options
        alpha = opts.alpha
        if opts.calibrate_alpha:
            alpha = calibrate_alpha(log_odds, shift, labels, target_loss, opts.alpha)
        return DecisionShiftTeacher(cache, shift, tokens, alpha), {
            **record, "alpha": alpha, "scope": "answer", "calibrated": opts.calibrate_alpha,
            "target_loss": target_loss, "original_loss": float(decision_loss(log_odds, labels)),
            "teacher_loss": float(decision_loss(log_odds - alpha * shift, labels)),
            "samples_pushed": push_shares(shift, labels)}

    def _cache(self, student: Backbone, rows: list[dict], device, teacher) -> TeacherCache:
        encoder = student.encoder()
        return TeacherCache(encoder, encoder.encode(rows), teacher, device,
                            self.options.teacher_cache_mb, self.ctx.out_dir.parent)
