"""When an unlearning run stops, by what the method is; its step budget is only a ceiling.

``kind: membership`` (ascent-style methods: NegGrad, GradDiff, NPO, the label
flip, which have no target of their own and can push past it): every
``check_every`` steps the rule scores a fixed sample of forget rows and of the
probe users' rows (training-period users no model was trained on; no
valid, test, audit or canary row is read) and measures three gaps between
them, each of which is zero for a model that never saw the forgotten users:

- ``loss``: the probe rows' mean binary log-loss (-log P(true answer) over the
  Yes/No pair) minus the forget rows';
- ``ranking``: the forget rows' AUC minus the probe rows' AUC;
- ``membership``: the AUC of a loss-threshold attack telling forget rows from
  probe rows, minus 0.5.

A measure whose gap is positive at the start is *open*; its share closed at a
check is ``1 - gap / start gap``. The run stops at the first check where every
open measure's share has reached ``aim`` (the point estimate, not a noise
band: a small request is unlearned too), or where any open measure has gone
past its target by more than ``noise_z`` of its standard error (overshoot).
It then keeps whichever of that check and the one before lies closer to
``aim`` on average over the measures. A probe AUC that falls below its start
by more than ``auc_tolerance`` (or its own noise) restores the previous check
and stops. With no open measure at the start no step is taken.

``kind: plateau`` (distillation toward a teacher that never saw the users,
which cannot overshoot it): every ``check_every`` steps the rule scores a fixed
sample of forget rows and measures each row's binary divergence from the
teacher's answer. The run stops at the first check that is not closer to the
teacher than the best one so far by more than ``noise_z`` standard errors of
the paired row-by-row change, ``PLATEAU_CHECKS`` checks in a row (a plateau
within noise), and keeps the closer of the best and the last (training/plateau.py).

A run whose budget (``schedule.epochs``) ends before the rule stops it hit
its ceiling, and its history says so (:func:`stopped_by`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from e2urec.backbones.registry import Backbone
from e2urec.backbones.scoring import AnswerTokens, answer_logits, binary_log_loss, p_yes
from e2urec.config import ConfigError, option
from e2urec.data.samples import unplanted
from e2urec.training.loop import trainable_state
from e2urec.training.plateau import PlateauGuard

Batch = dict[str, torch.Tensor]
MEASURES = ("loss", "ranking", "membership")


@dataclass
class StopRule:
    """When an unlearning run stops: where the forget rows stand as the probe users do."""

    kind: Literal["membership", "plateau", "none"] = option(
        "membership", help="membership: stop when the forget rows stand where the probe "
        "users' rows do (loss, ranking, membership attack), for methods that can overshoot; "
        "plateau: stop when the distance to a clean teacher on the forget rows stops "
        "falling, for distillation (no probe user read); none: the fixed schedule")
    check_every: int = option(4, help="steps between checks (the gap closes in tens of steps "
                              "at the Original's own lr)")
    probe_size: int = option(128, help="forget rows and probe users' rows each check scores")
    aim: float = option(1.0, help="stop once every open measure's share closed reaches "
                        "this (1: the probe users' level)")
    noise_z: float = option(2.0, help="overshoot guard: stop once a measure is past its "
                            "target by more than this many standard errors (plateau: a check "
                            "must improve on the best by this many to go on)")
    auc_tolerance: float = option(0.01, help="restore the previous check and stop if probe "
                                  "AUC falls more than this (or its noise, if larger) below "
                                  "its start")

    def validate(self) -> None:
        if self.check_every < 1 or self.probe_size < 2 or self.aim <= 0:
            raise ConfigError("stop: check_every must be at least 1, probe_size at least 2 "
                              "and aim positive")


@dataclass
class Probe:
    """Fixed rows for the stop rule: forget rows and the probe users' rows, encoded once."""

    forget: list[Batch]
    forget_labels: np.ndarray
    holdout: list[Batch]
    holdout_labels: np.ndarray

    def measure(self, model: torch.nn.Module, device: torch.device, tokens: AnswerTokens
                ) -> dict[str, Any]:
        return measure(model, self, device, tokens)


def make_probe(backbone: Backbone, forget: Sequence[dict], holdout: Sequence[dict],
               size: int, seed: int, batch_size: int = 64) -> Probe:
    """At most ``size`` seeded rows of each, encoded once."""
    if not holdout:
        raise ConfigError("the membership stop rule needs probe users: prepare the data with "
                          "holdout_fraction > 0, or use stop: {kind: none}")
    rng = np.random.default_rng(seed)
    encoder = backbone.encoder()
    forget = unplanted(forget)  # planted canary rows are measured apart

    def sample(rows):
        rows = list(rows)
        rows = [rows[i] for i in sorted(rng.permutation(len(rows))[:size])]
        return list(encoder.batches(rows, batch_size)), np.array([r["label"] for r in rows])

    return Probe(*sample(forget), *sample(holdout))


def auc_or_nan(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else math.nan


def auc_standard_error(auc: float, labels: np.ndarray) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC over these labels."""
    positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
    if math.isnan(auc) or not positives or not negatives:
        return math.nan
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc ** 2)
                + (negatives - 1) * (q2 - auc ** 2)) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


@torch.no_grad()
def _score(model: torch.nn.Module, batches: list[Batch], device: torch.device,
           tokens: AnswerTokens) -> tuple[np.ndarray, np.ndarray]:
    """Per-row Yes/No loss and P(yes)."""
    losses, scores = [], []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = answer_logits(model, batch)[:, 0]
        # The binary Yes/No space, as every forgetting measure (docs/architecture.md).
        losses.append(binary_log_loss(logits, batch["labels"], tokens).double().cpu())
        scores.append(p_yes(logits, tokens).double().cpu())
    return torch.cat(losses).numpy(), torch.cat(scores).numpy()


def measure(model: torch.nn.Module, probe: Probe, device: torch.device,
            tokens: AnswerTokens) -> dict[str, float]:
    """The three gaps, their standard errors, and the raw figures they come from."""
    was_training = model.training
    model.eval()
    forget_loss, forget_scores = _score(model, probe.forget, device, tokens)
    holdout_loss, holdout_scores = _score(model, probe.holdout, device, tokens)
    model.train(was_training)
    forget_auc = auc_or_nan(probe.forget_labels, forget_scores)
    probe_auc = auc_or_nan(probe.holdout_labels, holdout_scores)
    member = np.r_[np.ones(len(forget_loss)), np.zeros(len(holdout_loss))]
    attack = auc_or_nan(member, -np.r_[forget_loss, holdout_loss])
    loss_se = math.sqrt(sum(float(v.var(ddof=1)) / len(v)
                            for v in (forget_loss, holdout_loss) if len(v) > 1))
    probe_auc_se = auc_standard_error(probe_auc, probe.holdout_labels)
    return {
        "forget_loss": float(forget_loss.mean()), "holdout_loss": float(holdout_loss.mean()),
        "forget_auc": forget_auc, "probe_auc": probe_auc, "probe_auc_se": probe_auc_se,
        "membership_auc": attack,
        "gap": {"loss": float(holdout_loss.mean() - forget_loss.mean()),
                "ranking": forget_auc - probe_auc, "membership": attack - 0.5},
        "se": {"loss": loss_se,
               "ranking": math.hypot(auc_standard_error(forget_auc, probe.forget_labels),
                                     probe_auc_se),
               "membership": auc_standard_error(attack, member)},
    }


def open_measures(start: dict[str, Any]) -> list[str]:
    """The measures with a gap to close at the start (finite and positive)."""
    return [m for m in MEASURES if math.isfinite(start["gap"][m]) and start["gap"][m] > 0]


def shares_closed(point: dict[str, Any], start: dict[str, Any]) -> dict[str, float]:
    """Each open measure's share of its start gap closed at ``point`` (nan: unmeasurable)."""
    return {m: 1 - point["gap"][m] / start["gap"][m] for m in open_measures(start)}


def distance_from_aim(shares: dict[str, float], aim: float) -> float:
    """Mean absolute distance of the measurable shares from ``aim``."""
    values = [abs(aim - s) for s in shares.values() if math.isfinite(s)]
    return sum(values) / len(values) if values else math.inf


def mean_share(shares: dict[str, float]) -> float:
    values = [s for s in shares.values() if math.isfinite(s)]
    return sum(values) / len(values) if values else math.nan


def overshot(point: dict[str, Any], start: dict[str, Any], z: float) -> list[str]:
    """The open measures past their target by more than ``z`` standard errors."""
    return [m for m in open_measures(start)
            if math.isfinite(point["gap"][m]) and point["gap"][m] < -z * (point["se"][m] or 0)]


def auc_floor(start: dict[str, Any], stop: StopRule) -> float:
    """The probe AUC the run must keep: its start less the tolerance or its own noise."""
    noise = stop.noise_z * start.get("probe_auc_se", 0.0)
    return start["probe_auc"] - max(stop.auc_tolerance, 0.0 if math.isnan(noise) else noise)


def nothing_to_unlearn(start: dict[str, Any], stop: StopRule) -> str | None:
    """Why no step should be taken (every measure already at the probe users' level)."""
    if stop.kind != "membership" or open_measures(start):
        return None
    return (f"the forget rows already stand at the probe users' level: loss "
            f"{start['forget_loss']:.4f} vs {start['holdout_loss']:.4f}, AUC "
            f"{start['forget_auc']:.4f} vs {start['probe_auc']:.4f}, membership attack "
            f"{start['membership_auc']:.4f}; nothing to unlearn")


def stop_at(point: dict[str, Any], previous: dict[str, Any], start: dict[str, Any],
           stop: StopRule) -> tuple[str, bool] | None:
    """At a check: None to go on, else (why it stops, whether to keep ``previous``)."""
    shares = shares_closed(point, start)
    point["shares"] = shares
    point["mean_share"] = mean_share(shares)
    past = overshot(point, start, stop.noise_z)
    measured = [s for s in shares.values() if math.isfinite(s)]
    reached = bool(measured) and all(s >= stop.aim for s in measured)
    if not past and not reached:
        return None
    before = distance_from_aim(previous.get("shares") or shares_closed(previous, start),
                               stop.aim)
    keep_previous = before < distance_from_aim(shares, stop.aim)
    why = (f"{', '.join(past)} past the probe users' level by more than {stop.noise_z:g} "
           f"standard errors" if past else
           f"every measure's share closed reached {stop.aim:g}")
    kept = previous["step"] if keep_previous else point["step"]
    return f"{why} at step {point['step']}; kept step {kept}, the closer to the aim", \
        keep_previous


@dataclass
class Guard:
    """The stop rule at work during a run: the last checked point and its weights."""

    stop: StopRule
    start: dict[str, Any] | None
    floor: float
    previous: dict[str, Any] | None
    previous_state: dict[str, torch.Tensor] | None

    @classmethod
    def begin(cls, stop: StopRule, start: dict[str, Any] | None, model: torch.nn.Module
              ) -> Guard | PlateauGuard:
        """Before the first step (``start``: the probe's measurement, None without one)."""
        if stop.kind == "plateau" and start is not None:
            return PlateauGuard(stop, start, trainable_state(model))
        watching = start is not None and stop.kind != "none"
        return cls(stop, start, auc_floor(start, stop) if start is not None else -math.inf,
                   start, trainable_state(model) if watching else None)

    def check(self, point: dict[str, Any], model: torch.nn.Module) -> tuple[str, int] | None:
        """At a check: None to go on; else why the run stops and the step whose weights
        ``model`` now holds (an earlier step's are restored into it)."""
        if self.stop.kind == "none":
            return None
        if point["probe_auc"] < self.floor:
            model.load_state_dict(self.previous_state, strict=False)
            return (f"probe AUC {point['probe_auc']:.4f} fell below {self.floor:.4f}: "
                    f"restored step {self.previous['step']}", self.previous["step"])
        if ended := stop_at(point, self.previous, self.start, self.stop):
            why, keep_previous = ended
            if keep_previous:
                model.load_state_dict(self.previous_state, strict=False)
            return why, self.previous["step"] if keep_previous else point["step"]
        self.previous, self.previous_state = point, trainable_state(model)
        return None


def ceiling_reason(total_steps: int) -> str:
    """What a watched run's history says when its budget ended first."""
    return f"ceiling: the budget of {total_steps} steps ended before the stop rule stopped it"


def stopped_by(history: dict[str, Any], kind: str) -> str:
    """``rule``, ``ceiling`` (the budget ended first), ``schedule`` (no rule watched) or
    ``no step`` (nothing to unlearn), from a run's history and its stop kind."""
    why = str(history.get("stopped", "schedule"))
    if not history.get("total_steps"):
        return "no step"
    if kind == "none":
        return "schedule"
    # Records made before the ceiling was named said "schedule" for it.
    return "ceiling" if why == "schedule" or why.startswith("ceiling") else "rule"
