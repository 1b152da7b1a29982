"""Bad-Teacher (Chundawat et al.): distil forget samples from a randomly initialised
"incompetent" teacher and retain samples from the Original (the competent teacher)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from e2urec.backbones.registry import Backbone
from e2urec.backbones.scoring import answer_logits
from e2urec.config import option
from e2urec.methods.base import FullCopyUnlearner, Unlearned
from e2urec.methods.registry import register
from e2urec.training.losses import answer_scoped_teacher, soft_ce
from e2urec.training.teachers import TeacherCache, frozen
from e2urec.training.unlearn_loop import LossFn, Schedule, SteppingOptions


@dataclass
class BadTeacherOptions(SteppingOptions):
    teacher_scope: Literal["vocab", "answer"] = option(
        "vocab", help="vocab: the whole distribution from the bad teacher; answer: only the "
        "Yes/No split, the rest from the Original")
    teacher_cache_mb: float = option(2048, help="teacher logits kept in memory up to this "
                                     "size, then spilled to a float16 file")
    schedule: Schedule = option(help="lr, batch size, epochs, clipping, seed",
                                factory=lambda: Schedule(lr_scale=0.5))


def incompetent_like(model: torch.nn.Module, family: str, seed: int) -> torch.nn.Module:
    """A randomly initialised model of the same architecture."""
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if family == "seq2seq" else AutoModelForCausalLM
    return auto.from_config(model.config).eval()


@register
class BadTeacher(FullCopyUnlearner):
    name = "bad-teacher"
    Options = BadTeacherOptions

    def unlearn(self, original: Backbone | None) -> Unlearned:
        self.caches: dict[str, TeacherCache] = {}
        result = super().unlearn(original)
        result.record["teacher_forwards"] = {k: c.computed for k, c in self.caches.items()}
        return result

    def loss(self, student: Backbone) -> LossFn:
        opts, ctx = self.options, self.ctx
        device = ctx.accelerator.device
        encoder = student.encoder()
        competent = frozen(copy.deepcopy(student.model).to(device).eval())
        bad = frozen(incompetent_like(student.model, student.family,
                                      opts.schedule.seed).to(device))
        teacher = bad
        if opts.teacher_scope == "answer":  # only the Yes/No split comes from `bad`
            tokens = encoder.tokens

            def teacher(batch):
                return answer_scoped_teacher(competent(batch), bad(batch), tokens.yes_id,
                                             tokens.no_id)
        forget = TeacherCache(encoder, encoder.encode(ctx.rows("forget")), teacher, device,
                              opts.teacher_cache_mb, ctx.out_dir.parent)
        forget.fill()  # then `bad` can go
        retain = TeacherCache(encoder, encoder.encode(ctx.rows("retain")), competent, device,
                              opts.teacher_cache_mb, ctx.out_dir.parent)
        self.caches.update(forget=forget, retain=retain)

        width = slice(None, 1 if ctx.train.answer_loss == "decision" else None)

        def distil(model, batch, cache):
            return soft_ce(answer_logits(model, batch)[:, width],
                           cache.logits(batch["index"])[:, width], batch["answer_mask"][:, width])

        def loss(model, forget_batch, retain_batch):
            l_forget = distil(model, forget_batch, forget)
            if retain_batch is None:
                return l_forget, {"forget": l_forget.detach()}
            l_retain = distil(model, retain_batch, retain)
            return l_forget + l_retain, {"forget": l_forget.detach(),
                                         "retain": l_retain.detach()}
        return loss
