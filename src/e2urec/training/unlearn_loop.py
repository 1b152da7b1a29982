"""The one unlearning loop: forget-only epochs, then joint forget+retain steps.

A method supplies a loss over a forget batch and/or a retain batch; the loop
owns batching, the optimiser, accelerate, evaluation intervals and stopping.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from e2urec.backbones.registry import Backbone
from e2urec.backbones.scoring import AnswerTokens, answer_logits, p_yes
from e2urec.config import ConfigError, option
from e2urec.training.loop import trainable_state
from e2urec.training.losses import per_sample_ce

Batch = dict[str, torch.Tensor]
LossFn = Callable[[torch.nn.Module, Batch | None, Batch | None], tuple[torch.Tensor, dict]]


@dataclass
class Schedule:
    """How an unlearning method trains: shared by every method that takes steps."""

    lr: float = option(1e-3, help="AdamW learning rate of the unlearning steps")
    batch_size: int = option(16, help="forget samples a step (and as many retain samples)")
    epochs: int = option(3, help="passes over the forget set")
    forget_only_epochs: int = option(1, help="first epochs on forget batches alone; later "
                                     "ones pair each forget batch with a retain batch")
    max_grad_norm: float | None = option(1.0, help="clip the gradient norm (None: no "
                                         "clipping, as the reference code)")
    seed: int = option(42, help="seed of shuffling, adapters and teachers")

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("schedule: epochs and batch_size must be at least 1, lr positive")
        if not 0 <= self.forget_only_epochs <= self.epochs:
            raise ConfigError("schedule: forget_only_epochs must lie in 0..epochs")


@dataclass
class StopRule:
    """Stop once forget loss reaches held-out loss, keeping valid AUC within a tolerance.

    ``membership``: stop when the student's mean loss on forget samples has
    risen to within ``gap_tolerance`` of its loss on held-out samples of the
    same kind (the forgotten users' own valid samples: the membership signal
    is gone), provided valid AUC is at
    least the starting AUC minus ``auc_tolerance``. If valid AUC falls below
    that, the last state that met it is restored and the run stops. If there
    is no gap at the start, no step is taken.
    ``none``: run every epoch (the paper's fixed schedule).
    """

    kind: str = "membership"
    gap_tolerance: float = 0.0
    auc_tolerance: float = 0.01


@dataclass
class Probe:
    """Fixed small samples of forget, held-out and valid data for the stop rule."""

    forget: list[Batch]
    holdout: list[Batch]
    valid: list[Batch]
    valid_labels: np.ndarray


def make_probe(backbone: Backbone, forget: Sequence[dict], holdout: Sequence[dict],
               valid: Sequence[dict], size: int, seed: int, batch_size: int = 64) -> Probe:
    rng = np.random.default_rng(seed)

    def sample(rows):
        rows = list(rows)
        return [rows[i] for i in sorted(rng.permutation(len(rows))[:size])]

    encoder = backbone.encoder()

    def to_batches(rows):
        feats = encoder.encode(rows)
        return [encoder.collate(feats[i:i + batch_size]) for i in range(0, len(feats), batch_size)]

    valid_rows = sample(valid)
    return Probe(to_batches(sample(forget)), to_batches(sample(holdout) if holdout else []),
                 to_batches(valid_rows), np.array([r["label"] for r in valid_rows]))


@torch.no_grad()
def measure(model: torch.nn.Module, probe: Probe, device: torch.device,
            tokens: AnswerTokens) -> dict[str, float]:
    """Mean answer loss on the forget and held-out probes, and valid AUC."""
    model.eval()

    def outputs(batches):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            yield batch, answer_logits(model, batch)

    def yes_no_loss(batches):
        # The Yes/No token carries the membership signal; the rest of the answer is trivial.
        values = [per_sample_ce(logits[:, :1], b["answer_ids"][:, :1],
                                b["answer_mask"][:, :1]).cpu()
                  for b, logits in outputs(batches)]
        return float(torch.cat(values).mean()) if values else math.nan

    scores = torch.cat([p_yes(logits, tokens).cpu() for _, logits in outputs(probe.valid)])
    two_classes = len(set(probe.valid_labels.tolist())) == 2
    auc = float(roc_auc_score(probe.valid_labels, scores.numpy())) if two_classes else math.nan
    result = {"forget_loss": yes_no_loss(probe.forget),
              "holdout_loss": yes_no_loss(probe.holdout), "valid_auc": auc}
    model.train()
    return result


def cycle(data: DataLoader) -> Iterator[Batch]:
    for _ in itertools.count():
        yield from data


def run_unlearning(backbone: Backbone, forget_data: DataLoader, retain_data: DataLoader | None,
                   loss_fn: LossFn, schedule: Schedule, accelerator: Accelerator,
                   stop: StopRule | None = None, probe: Probe | None = None,
                   evals_per_epoch: int = 0, desc: str = "unlearn",
                   start: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``backbone.model`` in place with ``loss_fn``; return the history.

    Every epoch walks the forget set once; the first ``forget_only_epochs``
    use forget batches alone, later ones pair each with the next retain batch.
    ``start`` is the probe's measurement before any step when the caller has
    already taken it (see :func:`measure_before_unlearning`).
    """
    model = backbone.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=schedule.lr)
    prepared = accelerator.prepare(model, optimizer, forget_data,
                                   *([retain_data] if retain_data is not None else []))
    model, optimizer, forget_data = prepared[:3]
    retain_iter = cycle(prepared[3]) if retain_data is not None else None
    stop = stop or StopRule(kind="none")
    tokens = backbone.encoder().tokens
    history: dict[str, Any] = {"steps": [], "evaluations": [], "stopped": "schedule"}
    steps_per_epoch = len(forget_data)
    eval_points = _eval_points(steps_per_epoch, evals_per_epoch)

    def evaluate(step: int, epoch: int) -> dict[str, Any]:
        inner = accelerator.unwrap_model(model)
        point = {"step": step, "epoch": epoch,
                 **measure(inner, probe, accelerator.device, tokens)}
        history["evaluations"].append(point)
        return point

    start_point = None
    if probe is not None and start is not None:
        start_point = start
        history["evaluations"].append(start)
    elif probe is not None:
        start_point = evaluate(0, 0)
    floor = start_point["valid_auc"] - stop.auc_tolerance if start_point else -math.inf
    if start_point and (reason := nothing_to_unlearn(start_point, stop)):
        _finish(history, model, backbone, accelerator, 0)
        return stopped_before_start(start_point, reason)
    good_state = trainable_state(accelerator.unwrap_model(model)) if probe is not None else None
    step = 0
    for epoch in range(schedule.epochs):
        joint = epoch >= schedule.forget_only_epochs and retain_iter is not None
        bar = tqdm(forget_data, desc=f"{desc} epoch {epoch + 1}/{schedule.epochs}"
                   f"{' (joint)' if joint else ' (forget)'}",
                   disable=not accelerator.is_local_main_process, leave=False)
        for i, forget_batch in enumerate(bar):
            retain_batch = next(retain_iter) if joint else None
            loss, logs = loss_fn(model, forget_batch, retain_batch)
            accelerator.backward(loss)
            if schedule.max_grad_norm:
                accelerator.clip_grad_norm_(params, schedule.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            history["steps"].append({"step": step, "epoch": epoch, "loss": loss.item(),
                                     **{k: float(v) for k, v in logs.items()}})
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if probe is None or i + 1 not in eval_points:
                continue
            point = evaluate(step, epoch)
            if stop.kind == "none":
                continue
            if point["valid_auc"] < floor:
                accelerator.unwrap_model(model).load_state_dict(good_state, strict=False)
                history["stopped"] = f"valid AUC {point['valid_auc']:.4f} fell below " \
                                     f"{floor:.4f}: restored the state of the previous check"
                return _finish(history, model, backbone, accelerator, step)
            good_state = trainable_state(accelerator.unwrap_model(model))
            if _gap_closed(point, stop):
                history["stopped"] = (f"membership gap closed: forget loss "
                                      f"{point['forget_loss']:.4f} >= held-out loss "
                                      f"{point['holdout_loss']:.4f}")
                return _finish(history, model, backbone, accelerator, step)
    return _finish(history, model, backbone, accelerator, step)


def measure_before_unlearning(backbone: Backbone, probe: Probe, device: torch.device
                              ) -> dict[str, Any]:
    """The stop rule's measurement of a model before any unlearning step."""
    backbone.model.to(device)
    return {"step": 0, "epoch": 0,
            **measure(backbone.model, probe, device, backbone.encoder().tokens)}


def nothing_to_unlearn(point: dict[str, Any], stop: StopRule) -> str | None:
    """Why no step should be taken (no membership gap at the start), else None."""
    if stop.kind != "membership" or not _gap_closed(point, stop):
        return None
    return (f"no membership gap at the start: forget loss {point['forget_loss']:.4f} >= "
            f"held-out loss {point['holdout_loss']:.4f}; nothing to unlearn")


def stopped_before_start(start: dict[str, Any], reason: str) -> dict[str, Any]:
    """The history of a run that took no step: its one measurement and why."""
    return {"steps": [], "evaluations": [start], "stopped": reason, "total_steps": 0}


def _gap_closed(point: dict[str, Any], stop: StopRule) -> bool:
    return point["forget_loss"] >= point["holdout_loss"] - stop.gap_tolerance


def _eval_points(steps: int, per_epoch: int) -> set[int]:
    if per_epoch <= 0:
        return set()
    return {max(1, round(steps * k / per_epoch)) for k in range(1, per_epoch + 1)}


def _finish(history, model, backbone, accelerator, step) -> dict[str, Any]:
    backbone.model = accelerator.unwrap_model(model).eval()
    history["total_steps"] = step
    return history
