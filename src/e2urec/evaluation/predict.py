"""Running a scorer over samples: P(yes), losses and answer-position distributions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from e2urec.backbones.scoring import AnswerTokens, Encoder, answer_logits, p_yes


class Scorer(Protocol):
    """Anything that gives answer-position logits: a model or an ensemble of models."""

    def encoder(self) -> Encoder: ...

    def slot_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def to(self, device: torch.device) -> Scorer: ...

    def eval(self) -> Any: ...


class ModelScorer:
    """A single backbone as a :class:`Scorer`."""

    def __init__(self, backbone):
        self.backbone = backbone

    def encoder(self) -> Encoder:
        return self.backbone.encoder()

    def slot_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return answer_logits(self.backbone.model, batch)[:, 0]

    def to(self, device):
        self.backbone.model.to(device)
        return self

    def eval(self):
        self.backbone.model.eval()
        return self


@dataclass
class Predictions:
    """Per-sample outputs of a scorer on one split."""

    p_yes: np.ndarray
    labels: np.ndarray
    loss: np.ndarray  # cross-entropy of the true answer token over the whole vocabulary
    logits: torch.Tensor | None = None  # [N, V] at the answer position, when kept

    @property
    def p_true(self) -> np.ndarray:
        """P(true label), the per-sample confidence used by the audit."""
        return np.where(self.labels == 1, self.p_yes, 1.0 - self.p_yes)


def batches(encoder: Encoder, rows: Sequence[dict[str, Any]], batch_size: int,
            first_slot_only: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    features = encoder.encode(rows)
    for start in range(0, len(features), batch_size):
        yield encoder.collate(features[start:start + batch_size], first_slot_only)


@torch.no_grad()
def predict(scorer: Scorer, rows: Sequence[dict[str, Any]], batch_size: int = 64,
            keep_logits: bool = False, device: torch.device | None = None,
            desc: str | None = None) -> Predictions:
    """P(yes) for every row; with ``keep_logits`` the full answer-position logits too."""
    if not rows:
        raise ValueError("no samples to score")
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scorer.to(device).eval()
    encoder = scorer.encoder()
    tokens: AnswerTokens = encoder.tokens
    probs, losses, kept = [], [], []
    total = (len(rows) + batch_size - 1) // batch_size
    for batch in tqdm(batches(encoder, rows, batch_size), total=total, desc=desc,
                      disable=desc is None, leave=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = scorer.slot_logits(batch).float()
        probs.append(p_yes(logits, tokens).cpu())
        losses.append(F.cross_entropy(logits, batch["answer_ids"][:, 0], reduction="none").cpu())
        if keep_logits:
            kept.append(logits.cpu())
    labels = np.array([int(r["label"]) for r in rows])
    return Predictions(torch.cat(probs).numpy(), labels, torch.cat(losses).numpy(),
                       torch.cat(kept) if keep_logits else None)
