"""The plateau stop rule's parts: a fixed sample of forget rows with the teacher's answer on
each, the binary divergence of a student from it, and the guard that stops a run once that
divergence stops falling (stop_rule.py describes the rule; :class:`Guard` starts this one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from e2urec.backbones.registry import Backbone
from e2urec.backbones.scoring import AnswerTokens, answer_logits
from e2urec.training.loop import trainable_state

if TYPE_CHECKING:  # stop_rule.py starts a PlateauGuard: only the type comes from there
    from e2urec.training.stop_rule import StopRule

Batch = dict[str, torch.Tensor]
# Checks in a row without a significant step toward the teacher before the plateau rule stops
# (the first steps of Adam and the retain term can move the forget rows away for a check).
PLATEAU_CHECKS = 3


@dataclass
class TeacherProbe:
    """Fixed forget rows and the teacher's Yes-vs-No log-odds on each, for ``plateau``."""

    batches: list[Batch]
    teacher_log_odds: torch.Tensor

    def measure(self, model: torch.nn.Module, device: torch.device, tokens: AnswerTokens
                ) -> dict[str, Any]:
        """The mean binary divergence from the teacher, and each row's (``rows``)."""
        was_training = model.training
        model.eval()
        with torch.no_grad():
            student = torch.cat([
                answer_logits(model, {k: v.to(device) for k, v in batch.items()})[:, 0]
                .double().cpu() for batch in self.batches])
        model.train(was_training)
        rows = binary_kl(self.teacher_log_odds.double(),
                         student[:, tokens.yes_id] - student[:, tokens.no_id]).numpy()
        return {"distance": float(rows.mean()), "rows": rows}


def binary_kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of the Yes/No answer, per row, from the two log-odds."""
    p = torch.sigmoid(teacher)
    # log P(yes) = -softplus(-z), log P(no) = -softplus(z)
    return p * (F.softplus(-student) - F.softplus(-teacher)) + \
        (1 - p) * (F.softplus(student) - F.softplus(teacher))


def make_teacher_probe(backbone: Backbone, forget: Sequence[dict],
                       teacher_logits: Callable[[torch.Tensor], torch.Tensor], size: int,
                       seed: int, batch_size: int = 64) -> TeacherProbe:
    """At most ``size`` seeded unplanted forget rows; ``teacher_logits(positions)`` gives the
    teacher's answer logits ``[B, A, V]`` for positions in ``forget``."""
    rng = np.random.default_rng(seed)
    positions = [i for i, row in enumerate(forget) if not row.get("planted")]  # measured apart
    positions = sorted(positions[i] for i in rng.permutation(len(positions))[:size])
    encoder = backbone.encoder()
    tokens = encoder.tokens
    z = teacher_logits(torch.tensor(positions))[:, 0].float().cpu()
    return TeacherProbe(list(encoder.batches([forget[i] for i in positions], batch_size)),
                        z[:, tokens.yes_id] - z[:, tokens.no_id])


@dataclass
class PlateauGuard:
    """The plateau rule at work: the check closest to the teacher so far and its weights."""

    stop: StopRule
    best: dict[str, Any]
    best_state: dict[str, torch.Tensor]
    since_best: int = 0

    def check(self, point: dict[str, Any], model: torch.nn.Module) -> tuple[str, int] | None:
        """Go on while a check within the last ``PLATEAU_CHECKS`` came closer to the teacher
        than the best before it by more than ``noise_z`` standard errors of the paired
        row-by-row change; else stop on the closer of the best and this check."""
        change = self.best["rows"] - point["rows"]  # positive: closer to the teacher now
        se = float(change.std(ddof=1) / math.sqrt(len(change))) if len(change) > 1 else 0.0
        if float(change.mean()) > self.stop.noise_z * se:
            self.best, self.best_state, self.since_best = point, trainable_state(model), 0
            return None
        self.since_best += 1
        if self.since_best < PLATEAU_CHECKS:
            return None
        kept = self.best if self.best["distance"] < point["distance"] else point
        if kept is self.best:
            model.load_state_dict(self.best_state, strict=False)
        return (f"the distance to the teacher stopped falling: {PLATEAU_CHECKS} checks to step "
                f"{point['step']} within {self.stop.noise_z:g} standard errors of the best "
                f"({self.best['distance']:.4f} at step {self.best['step']}, now "
                f"{point['distance']:.4f}); kept step {kept['step']}, the closer", kept["step"])
