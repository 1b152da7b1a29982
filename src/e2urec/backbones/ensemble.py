"""Shard ensembles (SISA, RecEraser) as one scorer, and loading any model folder as a scorer.

An ensemble folder holds ``e2urec_model.json`` with ``kind: ensemble``, the
member folders (relative to it, or absolute when a member is shared with
another ensemble), the aggregation (``mean`` of logits, or a learned
``attention`` over the members) and, for attention, ``aggregator.safetensors``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from e2urec.backbones.registry import Backbone
from e2urec.backbones.scoring import AnswerTokens, Encoder, answer_logits, yes_no_logits
from e2urec.evaluation.predict import ModelScorer, Scorer
from e2urec.fileio import atomic_write_text
from e2urec.training.checkpoints import (
    META_FILE,
    CheckpointError,
    library_versions,
    load_model,
    read_meta,
)


class AttentionAggregator(torch.nn.Module):
    """RecEraser-style attention: weigh each shard by a score of its Yes/No output."""

    def __init__(self, n_members: int, hidden: int = 16):
        super().__init__()
        self.proj = torch.nn.Linear(2, hidden)
        self.score = torch.nn.Linear(hidden, 1, bias=False)
        self.member_bias = torch.nn.Parameter(torch.zeros(n_members))

    def weights(self, yes_no: torch.Tensor) -> torch.Tensor:
        """``yes_no``: ``[B, K, 2]`` member logits -> ``[B, K]`` attention weights."""
        features = yes_no.float().log_softmax(-1)
        scores = self.score(torch.tanh(self.proj(features))).squeeze(-1) + self.member_bias
        return scores.softmax(-1)


class EnsembleScorer:
    """Members' answer-position logits, averaged or weighted by an aggregator."""

    def __init__(self, members: Sequence[Backbone], aggregator: AttentionAggregator | None = None):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.aggregator = aggregator
        self.tokens: AnswerTokens = self.members[0].encoder().tokens

    def encoder(self) -> Encoder:
        return self.members[0].encoder()

    def member_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, K, V]`` logits of every member at the answer position."""
        return torch.stack([answer_logits(m.model, batch)[:, 0] for m in self.members], dim=1)

    def combine(self, member_logits: torch.Tensor) -> torch.Tensor:
        if self.aggregator is None:
            return member_logits.mean(1)
        yes_no = torch.stack([yes_no_logits(member_logits[:, k], self.tokens)
                              for k in range(member_logits.shape[1])], dim=1)
        weights = self.aggregator.weights(yes_no)
        return (weights.unsqueeze(-1) * member_logits).sum(1)

    def slot_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.combine(self.member_logits(batch))

    def to(self, device):
        for member in self.members:
            member.model.to(device)
        if self.aggregator is not None:
            self.aggregator.to(device)
        return self

    def eval(self):
        for member in self.members:
            member.model.eval()
        return self


def save_ensemble(out_dir: str | Path, member_dirs: Sequence[str | Path],
                  aggregator: AttentionAggregator | None = None,
                  meta: dict[str, Any] | None = None) -> Path:
    """Write an ensemble folder that points at existing member model folders."""
    out_dir = Path(out_dir)
    members = []
    for member in member_dirs:
        read_meta(member)  # fail now, not at load time, if a member is missing
        member = Path(member).resolve()
        inside = member.is_relative_to(out_dir.resolve())
        members.append(str(member.relative_to(out_dir.resolve())) if inside else str(member))
    info = {"kind": "ensemble", "members": members,
            "aggregation": "attention" if aggregator is not None else "mean",
            "versions": library_versions(), **(meta or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    if aggregator is not None:
        tmp = out_dir / ".aggregator.safetensors.tmp"
        save_file(aggregator.state_dict(), tmp)
        os.replace(tmp, out_dir / "aggregator.safetensors")
    # The metadata goes last: a folder without it is not (yet) an ensemble.
    atomic_write_text(out_dir / META_FILE, json.dumps(info, indent=2) + "\n")
    return out_dir


def load_scorer(path: str | Path) -> Scorer:
    """Any model folder (model, adapter or ensemble) as a scorer."""
    path = Path(path)
    meta = read_meta(path)
    if meta["kind"] != "ensemble":
        return ModelScorer(load_model(path))
    members = [load_model(path / m if not Path(m).is_absolute() else m)
               for m in meta["members"]]
    aggregator = None
    if meta["aggregation"] == "attention":
        weights = path / "aggregator.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{path}: attention ensemble without aggregator.safetensors")
        aggregator = AttentionAggregator(len(members))
        aggregator.load_state_dict(load_file(weights))
    return EnsembleScorer(members, aggregator)
