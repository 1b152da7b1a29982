"""The one unlearning loop: forget-only epochs, then joint forget+retain steps.

A method supplies a loss over a forget batch and/or a retain batch; the loop
owns batching, the optimiser, accelerate, evaluation intervals and stopping.
"""

from __future__ import annotations

import itertools
import math
import time
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

    lr_scale: float = option(1.0, help="the unlearning steps' AdamW learning rate as a multiple "
                             "of the lr the Original was trained at (read from its model "
                             "folder, else train.lr): a paper's lr belongs to its model")
    lr: float | None = option(None, help="an absolute learning rate instead (the paper "
                              "presets' T5-base values); None: lr_scale times the Original's")
    batch_size: int = option(16, help="forget samples a step (and as many retain samples)")
    epochs: float = option(3, help="passes over the forget set (a fraction ends mid-epoch: "
                           "the reference code's step budgets)")
    forget_only_epochs: int = option(1, help="first epochs on forget batches alone; later "
                                     "ones pair each forget batch with a retain batch")
    max_grad_norm: float | None = option(1.0, help="clip the gradient norm (None: no "
                                         "clipping, as the reference code)")
    seed: int = option(42, help="seed of shuffling, adapters and teachers")

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr_scale <= 0 or \
                (self.lr is not None and self.lr <= 0):
            raise ConfigError("schedule: epochs and batch_size must be at least 1, lr and "
                              "lr_scale positive")
        if not 0 <= self.forget_only_epochs <= self.epochs:
            raise ConfigError("schedule: forget_only_epochs must lie in 0..epochs")


@dataclass
class StopRule:
    """Stop once the forget set's loss is indistinguishable from non-members' loss.

    ``membership``: the student's mean Yes/No loss on forget samples is
    compared with its loss on samples of the ``probe`` users (training-period
    users no model was trained on). The gap counts as closed once it is no
    larger than ``noise_z`` standard errors of the difference of the two means
    (estimated from the per-sample losses at that check), so a decision never
    rests on a difference inside the measurement's own noise. Probe AUC must
    stay at least its starting value minus ``auc_tolerance`` or ``noise_z`` of
    its standard error (Hanley-McNeil), whichever is larger; if it falls
    below, the last state that met it is restored and the run stops. With no
    gap at the start, no step is taken. ``none``: the fixed schedule.
    """

    kind: str = "membership"
    noise_z: float = 2.0
    auc_tolerance: float = 0.01


@dataclass
class Probe:
    """Fixed samples for the stop rule: forget samples and the probe users' samples."""

    forget: list[Batch]
    holdout: list[Batch]
    holdout_labels: np.ndarray


def make_probe(backbone: Backbone, forget: Sequence[dict], holdout: Sequence[dict],
               size: int, seed: int, batch_size: int = 64) -> Probe:
    """At most ``size`` seeded samples of each, encoded once."""
    if not holdout:
        raise ConfigError("the membership stop rule needs probe users: prepare the data with "
                          "holdout_fraction > 0, or use stop_rule: none")
    rng = np.random.default_rng(seed)

    def sample(rows):
        rows = list(rows)
        return [rows[i] for i in sorted(rng.permutation(len(rows))[:size])]

    encoder = backbone.encoder()

    def to_batches(rows):
        return list(encoder.batches(rows, batch_size))  # the Yes/No slot is all it reads

    holdout_rows = sample(holdout)
    return Probe(to_batches(sample(forget)), to_batches(holdout_rows),
                 np.array([r["label"] for r in holdout_rows]))


@torch.no_grad()
def measure(model: torch.nn.Module, probe: Probe, device: torch.device,
            tokens: AnswerTokens) -> dict[str, float]:
    """Mean Yes/No loss on forget and probe samples, its noise, and probe AUC."""
    model.eval()
    losses: dict[str, torch.Tensor] = {}
    scores = []
    for name, batches in (("forget", probe.forget), ("holdout", probe.holdout)):
        values = []
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = answer_logits(model, batch)
            # The Yes/No token carries the membership signal; the rest of the answer is trivial.
            values.append(per_sample_ce(logits[:, :1], batch["answer_ids"][:, :1],
                                        batch["answer_mask"][:, :1]).double().cpu())
            if name == "holdout":
                scores.append(p_yes(logits, tokens).cpu())
        losses[name] = torch.cat(values)
    labels = probe.holdout_labels
    two_classes = len(set(labels.tolist())) == 2
    auc = float(roc_auc_score(labels, torch.cat(scores).numpy())) if two_classes else math.nan
    noise = math.sqrt(sum(float(v.var()) / len(v) for v in losses.values() if len(v) > 1))
    model.train()
    return {"forget_loss": float(losses["forget"].mean()),
            "holdout_loss": float(losses["holdout"].mean()), "gap_se": noise,
            "probe_auc": auc, "probe_auc_se": auc_standard_error(auc, labels)}


def auc_standard_error(auc: float, labels: np.ndarray) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC over these labels."""
    positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
    if math.isnan(auc) or not positives or not negatives:
        return math.nan
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc ** 2)
                + (negatives - 1) * (q2 - auc ** 2)) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


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
    if schedule.lr is None:
        raise ValueError("schedule.lr is not resolved: run the method through run_method, "
                         "which sets it from lr_scale and the Original's lr")
    optimizer = torch.optim.AdamW(params, lr=schedule.lr)
    prepared = accelerator.prepare(model, optimizer, forget_data,
                                   *([retain_data] if retain_data is not None else []))
    model, optimizer, forget_data = prepared[:3]
    retain_iter = cycle(prepared[3]) if retain_data is not None else None
    stop = stop or StopRule(kind="none")
    tokens = backbone.encoder().tokens
    history: dict[str, Any] = {"steps": [], "evaluations": [], "stopped": "schedule",
                               "check_seconds": 0.0}
    steps_per_epoch = len(forget_data)
    eval_points = _eval_points(steps_per_epoch, evals_per_epoch)

    def evaluate(step: int, epoch: int) -> dict[str, Any]:
        began = time.perf_counter()
        inner = accelerator.unwrap_model(model)
        point = {"step": step, "epoch": epoch,
                 **measure(inner, probe, accelerator.device, tokens)}
        history["evaluations"].append(point)
        history["check_seconds"] += time.perf_counter() - began
        return point

    start_point = None
    if probe is not None and start is not None:
        start_point = start
        history["evaluations"].append(start)
    elif probe is not None:
        start_point = evaluate(0, 0)
    floor = auc_floor(start_point, stop) if start_point else -math.inf
    if start_point and (reason := nothing_to_unlearn(start_point, stop)):
        _finish(history, model, backbone, accelerator, 0)
        return stopped_before_start(start_point, reason)
    good_state = trainable_state(accelerator.unwrap_model(model)) if probe is not None else None
    step = 0
    # A fractional epoch count (the reference's step budget) ends mid-epoch.
    total_steps = max(1, round(schedule.epochs * steps_per_epoch))
    for epoch in range(math.ceil(schedule.epochs)):
        joint = epoch >= schedule.forget_only_epochs and retain_iter is not None
        bar = tqdm(forget_data, desc=f"{desc} epoch {epoch + 1}/{math.ceil(schedule.epochs)}"
                   f"{' (joint)' if joint else ' (forget)'}",
                   disable=None if accelerator.is_local_main_process else True, leave=False)
        for i, forget_batch in enumerate(bar):
            if step >= total_steps:
                break
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
            if point["probe_auc"] < floor:
                accelerator.unwrap_model(model).load_state_dict(good_state, strict=False)
                history["stopped"] = f"probe AUC {point['probe_auc']:.4f} fell below " \
                                     f"{floor:.4f}: restored the state of the previous check"
                return _finish(history, model, backbone, accelerator, step)
            good_state = trainable_state(accelerator.unwrap_model(model))
            if _gap_closed(point, stop):
                history["stopped"] = (f"membership gap closed: forget loss "
                                      f"{point['forget_loss']:.4f} within {stop.noise_z:g} "
                                      f"standard errors ({point['gap_se']:.4f}) of the probe "
                                      f"users' {point['holdout_loss']:.4f}")
                return _finish(history, model, backbone, accelerator, step)
    return _finish(history, model, backbone, accelerator, step)


def measure_before_unlearning(backbone: Backbone, probe: Probe, device: torch.device
                              ) -> dict[str, Any]:
    """The stop rule's measurement of a model before any unlearning step."""
    backbone.model.to(device)
    return {"step": 0, "epoch": 0,
            **measure(backbone.model, probe, device, backbone.encoder().tokens)}


def auc_floor(start: dict[str, Any], stop: StopRule) -> float:
    """The probe AUC the run must keep: its start less the tolerance or its own noise."""
    noise = stop.noise_z * start.get("probe_auc_se", 0.0)
    return start["probe_auc"] - max(stop.auc_tolerance, 0.0 if math.isnan(noise) else noise)


def nothing_to_unlearn(point: dict[str, Any], stop: StopRule) -> str | None:
    """Why no step should be taken (no membership gap at the start), else None."""
    if stop.kind != "membership" or not _gap_closed(point, stop):
        return None
    return (f"no membership gap at the start: forget loss {point['forget_loss']:.4f} within "
            f"{stop.noise_z:g} standard errors ({point['gap_se']:.4f}) of the probe users' "
            f"{point['holdout_loss']:.4f}; nothing to unlearn")


def stopped_before_start(start: dict[str, Any], reason: str) -> dict[str, Any]:
    """The history of a run that took no step: its one measurement and why."""
    return {"steps": [], "evaluations": [start], "stopped": reason, "total_steps": 0}


def _gap_closed(point: dict[str, Any], stop: StopRule) -> bool:
    return point["forget_loss"] >= point["holdout_loss"] - stop.noise_z * point["gap_se"]


def _eval_points(steps: int, per_epoch: int) -> set[int]:
    if per_epoch <= 0:
        return set()
    return {max(1, round(steps * k / per_epoch)) for k in range(1, per_epoch + 1)}


def _finish(history, model, backbone, accelerator, step) -> dict[str, Any]:
    backbone.model = accelerator.unwrap_model(model).eval()
    history["total_steps"] = step
    return history
