"""Bad-Teacher (Chundawat et al.): distil forget samples from a randomly initialised
"incompetent" teacher and retain samples from the Original (the competent teacher)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from e2urec.backbones.scoring import answer_logits
from e2urec.methods.base import Unlearner, register
from e2urec.methods.full_finetune import unlearn_full_copy
from e2urec.training.checkpoints import load_model
from e2urec.training.losses import answer_scoped_teacher, soft_ce
from e2urec.training.teachers import TeacherCache


@dataclass
class BadTeacherOptions:
    lr: float = 1e-4
    batch_size: int = 16
    epochs: int = 1
    forget_only_epochs: int = 0
    teacher_scope: Literal["vocab", "answer"] = "vocab"
    teacher_cache_mb: float = 2048
    seed: int = 42


def incompetent_like(model: torch.nn.Module, family: str, seed: int) -> torch.nn.Module:
    """A randomly initialised model of the same architecture."""
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if family == "seq2seq" else AutoModelForCausalLM
    return auto.from_config(model.config).eval()


@register
class BadTeacher(Unlearner):
    name = "bad-teacher"
    Options = BadTeacherOptions

    def unlearn(self) -> dict[str, Any]:
        opts, ctx = self.options, self.ctx
        device = ctx.accelerator.device
        competent = load_model(ctx.original_dir, merged=True).model.to(device).eval()
        caches: dict[str, TeacherCache] = {}

        def frozen(model):
            def run(batch):
                with torch.no_grad():
                    return answer_logits(model, batch)
            return run

        def loss_for(student):
            encoder = student.encoder()
            bad = incompetent_like(student.model, student.family, opts.seed).to(device)
            teacher = frozen(bad)
            if opts.teacher_scope == "answer":  # only the Yes/No split comes from `bad`
                tokens = encoder.tokens

                def teacher(batch):
                    return answer_scoped_teacher(frozen(competent)(batch), frozen(bad)(batch),
                                                 tokens.yes_id, tokens.no_id)
            forget_cache = TeacherCache(encoder, encoder.encode(ctx.rows("forget")), teacher,
                                        device, opts.teacher_cache_mb, ctx.out_dir.parent)
            for start in range(0, len(forget_cache.features), 64):  # fill, then drop `bad`
                forget_cache.logits(torch.arange(start, min(start + 64,
                                                            len(forget_cache.features))))
            retain_cache = TeacherCache(encoder, encoder.encode(ctx.rows("retain")),
                                        frozen(competent), device, opts.teacher_cache_mb,
                                        ctx.out_dir.parent)
            caches.update(forget=forget_cache, retain=retain_cache)

            def loss(model, forget_batch, retain_batch):
                l_forget = soft_ce(answer_logits(model, forget_batch),
                                   forget_cache.logits(forget_batch["index"]),
                                   forget_batch["answer_mask"])
                if retain_batch is None:
                    return l_forget, {"forget": l_forget.detach()}
                l_retain = soft_ce(answer_logits(model, retain_batch),
                                   retain_cache.logits(retain_batch["index"]),
                                   retain_batch["answer_mask"])
                return l_forget + l_retain, {"forget": l_forget.detach(),
                                             "retain": l_retain.detach()}
            return loss

        record = unlearn_full_copy(self, loss_for, opts)
        record["teacher_forwards"] = {k: c.computed for k, c in caches.items()}
        return record
