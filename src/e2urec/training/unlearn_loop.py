"""The one unlearning loop: forget-only epochs, then joint forget+retain steps.

A method supplies a loss over a forget batch and/or a retain batch; the loop
owns batching, the optimiser, accelerate and the stop rule's checks.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from e2urec.backbones.registry import Backbone
from e2urec.config import ConfigError, option
from e2urec.training.plateau import TeacherProbe
from e2urec.training.stop_rule import (
    Guard,
    Probe,
    StopRule,
    ceiling_reason,
    nothing_to_unlearn,
)

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
    epochs: float = option(2, help="the most passes over the forget set: the budget the stop "
                           "rule works within (a fraction ends mid-epoch: the reference code's "
                           "step budgets)")
    forget_only_epochs: int = option(0, help="first epochs on forget batches alone; later "
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
class SteppingOptions:
    """What every method that takes unlearning steps shares: its schedule and the stop rule.
    A method's own options subclass this (redeclaring ``schedule`` to set its lr scale)."""

    schedule: Schedule = option(help="lr, batch size, epochs, clipping, seed",
                                factory=Schedule)
    stop: StopRule = option(help="when the steps stop: at the probe users' level, checked "
                            "every few steps", factory=StopRule)

    def validate(self) -> None:
        if self.stop.kind == "plateau":  # plateau reads a teacher's answers
            raise ConfigError("stop kind plateau is for distillation toward a clean teacher "
                              "(e2urec with forget_teacher: shards); this method has no "
                              "teacher: use membership (or none)")


def cycle(data: DataLoader) -> Iterator[Batch]:
    for _ in itertools.count():
        yield from data


def run_unlearning(backbone: Backbone, forget_data: DataLoader, retain_data: DataLoader | None,
                   loss_fn: LossFn, schedule: Schedule, accelerator: Accelerator,
                   stop: StopRule | None = None, probe: Probe | TeacherProbe | None = None,
                   desc: str = "unlearn", start: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``backbone.model`` in place with ``loss_fn``; return the history.

    Every epoch walks the forget set once; the first ``forget_only_epochs``
    use forget batches alone, later ones pair each with the next retain batch.
    With a ``probe`` (a :class:`Probe` for ``membership``, a :class:`TeacherProbe`
    for ``plateau``), the stop rule (:mod:`e2urec.training.stop_rule`) checks
    every ``stop.check_every`` steps and at the last; ``start`` is the probe's
    measurement before any step when the caller has already taken it. A run
    whose budget ends first says so (``stopped``: ``ceiling: ...``).
    """
    model = backbone.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(params, schedule)
    prepared = accelerator.prepare(model, optimizer, forget_data,
                                   *([retain_data] if retain_data is not None else []))
    model, optimizer, forget_data = prepared[:3]
    retain_iter = cycle(prepared[3]) if retain_data is not None else None
    stop = stop or StopRule(kind="none")
    tokens = backbone.encoder().tokens
    # A fractional epoch count (the reference's step budget) ends mid-epoch.
    total_steps = max(1, round(schedule.epochs * len(forget_data)))
    watched = probe is not None and stop.kind != "none"
    # What a run that ends on its budget says; the rule overwrites it when it stops the run.
    history: dict[str, Any] = {"steps": [], "evaluations": [], "check_seconds": 0.0,
                               "stopped": ceiling_reason(total_steps) if watched else "schedule"}

    def evaluate(step: int, epoch: int) -> dict[str, Any]:
        began = time.perf_counter()
        inner = accelerator.unwrap_model(model)
        point = {"step": step, "epoch": epoch,
                 **probe.measure(inner, accelerator.device, tokens)}
        # per-row figures stay with the guard, out of the record
        history["evaluations"].append({k: v for k, v in point.items() if k != "rows"})
        history["check_seconds"] += time.perf_counter() - began
        return point

    if probe is not None and start is not None:
        history["evaluations"].append(start)
    elif probe is not None:
        start = evaluate(0, 0)
    if start is not None and (reason := nothing_to_unlearn(start, stop)):
        _finish(history, model, backbone, accelerator, 0)
        return stopped_before_start(start, reason)
    guard = Guard.begin(stop, start, accelerator.unwrap_model(model))
    step = 0
    for epoch, forget_batch, retain_batch in _batches(forget_data, retain_iter, schedule,
                                                      total_steps, accelerator, desc):
        loss, logs = loss_fn(model, forget_batch, retain_batch)
        accelerator.backward(loss)
        if schedule.max_grad_norm:
            accelerator.clip_grad_norm_(params, schedule.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        history["steps"].append({"step": step, "epoch": epoch, "loss": loss.item(),
                                 **{k: float(v) for k, v in logs.items()}})
        if probe is None or (step % stop.check_every and step < total_steps):
            continue
        if ended := guard.check(evaluate(step, epoch), accelerator.unwrap_model(model)):
            history["stopped"], history["kept_step"] = ended
            break
    return _finish(history, model, backbone, accelerator, step)


def _optimizer(params: list[torch.nn.Parameter], schedule: Schedule) -> torch.optim.Optimizer:
    if schedule.lr is None:
        raise ValueError("schedule.lr is not resolved: run the method through run_method, "
                         "which sets it from lr_scale and the Original's lr")
    return torch.optim.AdamW(params, lr=schedule.lr)


def _batches(forget_data: DataLoader, retain_iter: Iterator[Batch] | None,
             schedule: Schedule, total_steps: int, accelerator: Accelerator, desc: str
             ) -> Iterator[tuple[int, Batch, Batch | None]]:
    """(epoch, forget batch, retain batch or None) for each of ``total_steps`` steps."""
    step = 0
    epochs = math.ceil(schedule.epochs)
    for epoch in range(epochs):
        joint = epoch >= schedule.forget_only_epochs and retain_iter is not None
        bar = tqdm(forget_data, desc=f"{desc} epoch {epoch + 1}/{epochs}"
                   f"{' (joint)' if joint else ' (forget)'}",
                   disable=None if accelerator.is_local_main_process else True, leave=False)
        for forget_batch in bar:
            if step >= total_steps:
                return
            step += 1
            yield epoch, forget_batch, next(retain_iter) if joint else None


def measure_before_unlearning(backbone: Backbone, probe: Probe, device: torch.device
                              ) -> dict[str, Any]:
    """The stop rule's measurement of a model before any unlearning step."""
    backbone.model.to(device)
    return {"step": 0, "epoch": 0,
            **probe.measure(backbone.model, device, backbone.encoder().tokens)}


def stopped_before_start(start: dict[str, Any], reason: str) -> dict[str, Any]:
    """The history of a run that took no step: its one measurement and why."""
    return {"steps": [], "evaluations": [start], "stopped": reason, "total_steps": 0}


def _finish(history, model, backbone, accelerator, step) -> dict[str, Any]:
    backbone.model = accelerator.unwrap_model(model).eval()
    history["total_steps"] = step
    return history
