"""Any model folder as a scorer: one model, or a shard ensemble (SISA, RecEraser).

A scorer gives answer-position logits for a batch. An ensemble averages its
members' logits or weighs them with a learned attention aggregator, whose
sizes are stored in the ensemble's metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file

from e2urec.backbones.registry import Backbone
from e2urec.backbones.scoring import AnswerTokens, Encoder, answer_logits, yes_no_logits
from e2urec.backbones.shared_prefix import (
    PrefixState,
    read_prefix,
    tail_answer_logits,
)
from e2urec.checkpoints.folders import CheckpointError, check_model_folder, load_model


class Scorer(Protocol):
    """Anything that gives answer-position logits: a model or an ensemble of models."""

    def encoder(self) -> Encoder: ...

    def slot_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def read_prefix(self, prefix_ids: torch.Tensor) -> Any:
        """State that :meth:`tail_slot_logits` continues from (causal models only)."""
        ...

    def tail_slot_logits(self, state: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def to(self, device: torch.device) -> Scorer: ...

    def eval(self) -> Any: ...


class ModelScorer:
    """A single backbone as a :class:`Scorer`."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone

    def encoder(self) -> Encoder:
        return self.backbone.encoder()

    def slot_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return answer_logits(self.backbone.model, batch)[:, 0]

    def read_prefix(self, prefix_ids: torch.Tensor) -> PrefixState:
        return read_prefix(self.backbone.model, prefix_ids)

    def tail_slot_logits(self, state: PrefixState, batch: dict[str, torch.Tensor]
                         ) -> torch.Tensor:
        return tail_answer_logits(self.backbone.model, state, batch)

    def to(self, device):
        self.backbone.model.to(device)
        return self

    def eval(self):
        self.backbone.model.eval()
        return self


class AttentionAggregator(torch.nn.Module):
    """RecEraser-style attention: weigh each shard by a score of its Yes/No output."""

    def __init__(self, n_members: int, hidden: int = 16):
        super().__init__()
        self.proj = torch.nn.Linear(2, hidden)
        self.score = torch.nn.Linear(hidden, 1, bias=False)
        self.member_bias = torch.nn.Parameter(torch.zeros(n_members))

    def sizes(self) -> dict[str, int]:
        """What the constructor needs to rebuild this aggregator."""
        return {"n_members": self.member_bias.numel(), "hidden": self.proj.out_features}

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

    def member_yes_no(self, member_logits: torch.Tensor) -> torch.Tensor:
        """``[B, K, 2]`` (No, Yes) logits of every member."""
        return torch.stack([yes_no_logits(member_logits[:, k], self.tokens)
                            for k in range(member_logits.shape[1])], dim=1)

    def combine(self, member_logits: torch.Tensor) -> torch.Tensor:
        if self.aggregator is None:
            return member_logits.mean(1)
        weights = self.aggregator.weights(self.member_yes_no(member_logits))
        return (weights.unsqueeze(-1) * member_logits).sum(1)

    def slot_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.combine(self.member_logits(batch))

    def read_prefix(self, prefix_ids: torch.Tensor) -> list[PrefixState]:
        return [read_prefix(m.model, prefix_ids) for m in self.members]

    def tail_slot_logits(self, state: list[PrefixState], batch: dict[str, torch.Tensor]
                         ) -> torch.Tensor:
        return self.combine(torch.stack([tail_answer_logits(m.model, prefix, batch) for m, prefix
                                         in zip(self.members, state, strict=True)], dim=1))

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


def load_scorer(path: str | Path) -> Scorer:
    """Any model folder (model, adapter or ensemble) as a scorer."""
    path = Path(path)
    meta = check_model_folder(path)
    if meta["kind"] != "ensemble":
        return ModelScorer(load_model(path))
    members = [load_model(path / m if not Path(m).is_absolute() else m)
               for m in meta["members"]]
    aggregator = None
    if meta["aggregation"] == "attention":
        sizes = meta.get("aggregator") or {"n_members": len(members), "hidden": 16}
        if sizes["n_members"] != len(members):
            raise CheckpointError(f"{path}: aggregator for {sizes['n_members']} members, "
                                  f"ensemble of {len(members)}")
        aggregator = AttentionAggregator(sizes["n_members"], sizes["hidden"])
        aggregator.load_state_dict(load_file(path / "aggregator.safetensors"))
        aggregator.eval()
    return EnsembleScorer(members, aggregator)
