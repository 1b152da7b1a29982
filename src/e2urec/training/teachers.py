"""Frozen-teacher logits, computed once per sample and reused across epochs.

A teacher in eval mode is a pure function of its input, so its answer-
position logits are computed the first time a sample is seen and kept: in
memory while they fit ``max_memory_mb``, else in a float16 memory-mapped file
on disk. Only the missing samples of a batch go through the teacher.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2urec.backbones.scoring import AnswerTokens, Encoder, answer_logits
from e2urec.training.losses import with_yes_no_split

TeacherFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def frozen(model: torch.nn.Module) -> TeacherFn:
    """A model as a teacher: answer-position logits without gradients."""

    def run(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return answer_logits(model, batch)

    return run


def held_out_shards(members: Sequence[torch.nn.Module], shard_of: torch.Tensor) -> TeacherFn:
    """Per row, the mean answer logits of the shard models that never held its user.

    ``shard_of[i]`` is the shard that holds feature position ``i``'s user; a row's
    teacher leaves that member out, so it answers as a model that never saw the
    user (a mean of logits is a product of the members' distributions).
    """

    def run(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        holder = shard_of[batch["index"].cpu()].to(batch["input_ids"].device)
        total, count = None, torch.zeros_like(holder, dtype=torch.float32)
        with torch.no_grad():
            for k, member in enumerate(members):
                use = holder != k
                if not use.any():
                    continue
                # Only the rows whose user this member never held go through it.
                logits = answer_logits(member, {key: value[use] for key, value in
                                                batch.items()}).float()
                if total is None:
                    total = logits.new_zeros((len(holder), *logits.shape[1:]))
                total[use] += logits
                count += use.float()
        return total / count.clamp(min=1)[:, None, None]

    return run


def member_gain(members: Sequence[torch.nn.Module], shard_of: torch.Tensor,
                tokens: AnswerTokens) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """Per row, what its user's own shard model learnt of it: that model's Yes-vs-No
    log-odds minus the mean of those of the shard models that never held the user."""
    held_out = held_out_shards(members, shard_of)

    def log_odds(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, 0, tokens.yes_id] - logits[:, 0, tokens.no_id]).float()

    def run(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        holder = shard_of[batch["index"].cpu()].to(batch["input_ids"].device)
        own = torch.zeros(len(holder), device=holder.device)
        with torch.no_grad():
            for k, member in enumerate(members):
                if (use := holder == k).any():
                    own[use] = log_odds(answer_logits(member, {key: value[use] for key, value
                                                               in batch.items()}))
        return own - log_odds(held_out(batch))

    return run


class TeacherCache:
    """Answer-position logits ``[A, V]`` of one frozen teacher for a fixed list of samples."""

    def __init__(self, encoder: Encoder, features: Sequence[dict[str, Any]], teacher: TeacherFn,
                 device: torch.device, max_memory_mb: float = 2048,
                 spill_dir: str | Path | None = None):
        self.encoder = encoder
        self.features = features
        self.teacher = teacher
        self.device = device
        self.width = max(len(f["answer"]) for f in features)
        self.max_memory_mb = max_memory_mb
        self.spill_dir = Path(spill_dir) if spill_dir else Path(tempfile.gettempdir())
        self.filled = np.zeros(len(features), dtype=bool)
        self.computed = 0
        self.store: Any = None
        self.on_disk = False

    def _allocate(self, vocab: int) -> None:
        shape = (len(self.features), self.width, vocab)
        if np.prod(shape) * 4 / 2**20 <= self.max_memory_mb:
            self.store = torch.zeros(shape, dtype=torch.float32)
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        # Lives as long as the cache; the file is deleted when the cache is collected.
        self._file = tempfile.NamedTemporaryFile(dir=self.spill_dir, suffix=".teacher")  # noqa: SIM115
        self.store = np.memmap(self._file.name, dtype=np.float16, mode="w+", shape=shape)
        self.on_disk = True

    def fill(self, batch_size: int = 64) -> None:
        """Compute every sample's logits now (so the teacher can be dropped)."""
        for start in range(0, len(self.features), batch_size):
            self.logits(torch.arange(start, min(start + batch_size, len(self.features))))

    @torch.no_grad()
    def logits(self, indices: torch.Tensor) -> torch.Tensor:
        """Teacher logits ``[B, A, V]`` for feature positions ``indices``, on the device."""
        idx = indices.cpu().numpy()
        missing = [int(i) for i in idx if not self.filled[i]]
        if missing:
            missing = sorted(set(missing))
            batch = self.encoder.collate([self.features[i] for i in missing])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out = self.teacher(batch).float().cpu()
            if self.store is None:
                self._allocate(out.shape[-1])
            padded = torch.zeros((len(missing), self.width, out.shape[-1]))
            padded[:, :out.shape[1]] = out
            if self.on_disk:
                self.store[missing] = padded.numpy().astype(np.float16)
            else:
                self.store[missing] = padded
            self.filled[missing] = True
            self.computed += len(missing)
        rows = self.store[idx]
        rows = torch.from_numpy(np.asarray(rows, dtype=np.float32)) if self.on_disk else rows
        return rows.to(self.device)


class DecisionShiftTeacher:
    """The answer-scoped forgetting teacher with a strength that can be set after its pass.

    Holds the Original's answer logits (a :class:`TeacherCache`) and, per
    sample, how far one unit of alpha lowers the Yes-vs-No log-odds
    (:func:`~e2urec.training.losses.decision_shift`). Its logits for a batch
    are the Original's with only the decision's Yes/No split moved by
    ``alpha * shift`` — the same as the forgetting teacher under
    ``answer_scoped_teacher`` — so ``alpha`` can be chosen once the pass is done.
    """

    def __init__(self, original: TeacherCache, shift: torch.Tensor, tokens: AnswerTokens,
                 alpha: float = 0.0):
        self.original = original
        self.shift = shift
        self.tokens = tokens
        self.alpha = alpha

    @property
    def computed(self) -> int:
        return self.original.computed

    def logits(self, indices: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``[B, A, V]`` of the teacher for feature positions ``indices``."""
        yes, no = self.tokens.yes_id, self.tokens.no_id
        z_orig = self.original.logits(indices)
        pair = z_orig[:, 0, [yes, no]].clone()  # only the two logits the teacher moves
        pair[:, 0] -= self.alpha * self.shift[indices.cpu()].to(pair)
        return with_yes_no_split(z_orig, pair, yes, no)
