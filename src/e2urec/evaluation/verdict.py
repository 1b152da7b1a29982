"""The one verdict on forgetting: can the forgotten users be told from never-trained ones?

"Forgotten" means that, under the same model, the forgotten users cannot be
told apart from the audit users (people of the same period whom no model ever
trained on). Three measures, each zero for a model that never saw them, all in
the binary Yes/No space (P(yes) and -log P(true answer) over the pair):

* ``ranking``: the forgotten users' AUC minus the audit users' AUC;
* ``membership``: with the auditor's reference models, the per-user
  likelihood-ratio test's (evaluation/lira.py): the forgotten users' mean
  score calibrated on the audit users'; without them, the AUC of a
  loss-threshold attack telling the forgotten users' rows from the audit
  users' rows, minus 0.5;
* ``canary``: how much a canary user's own trigger raises the planted answer
  on their probe prompts, minus what decoy triggers (made-up titles that no
  model ever saw) do on the same prompts.

Ranking and membership get a user-level bootstrap interval (users drawn with
replacement, each with all their rows). The canary measure gets a per-user
randomisation test instead: to a model that never saw a trigger, it is one
more made-up title, exchangeable with that user's decoys, so swapping it with
any of them draws the measure a never-trained model would show. (A percentile
bootstrap over a dozen users of a measure that is mostly exactly 0 undercovers:
it failed a Retrain, measured in docs/results.md.) Its brackets are that
never-trained band. All are Bonferroni over the measures and two-sided: beyond
``margin`` above says the users are remembered, below ``-margin`` that they
were pushed past never-trained users. Both fail.
Forget rows are the unplanted ones (:func:`e2urec.data.samples.unplanted`):
planted rows are the canary measure's. The bench asks this of the whole
forget set; the store of a request's users together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from e2urec.checkpoints.scorers import Scorer
from e2urec.config import option
from e2urec.data.catalog import read_vocabulary
from e2urec.data.prompts import YES_ANSWER, canary_triggers
from e2urec.data.samples import read_manifest, read_split
from e2urec.evaluation.audit import auc, membership_auc
from e2urec.evaluation.lira import membership_draw
from e2urec.evaluation.predict import Predictions, predict

MEASURES = ("ranking", "membership", "canary")
CANARY_TEST = "per-user randomisation"  # in the bench's evaluation keys: change it, rerun


@dataclass
class VerdictOptions:
    """How the verdict's intervals are drawn."""

    alpha: float = option(0.05, help="false-alarm rate over the measures together (each "
                          "interval is two-sided at alpha / measures)")
    draws: int = option(1000, help="user-level bootstrap draws")
    margin: float = option(0.0, help="an interval must lie this far beyond 0 to fail")
    decoys: int = option(8, help="made-up triggers asked on each canary user's prompts "
                         "(the canary test's finest p-value is about 1 / (decoys + 1) ** users)")
    seed: int = option(0, help="seed of the bootstrap and the decoys")


@dataclass
class GroupScores:
    """One group of users' rows under one model, in the binary space."""

    users: np.ndarray
    labels: np.ndarray
    p_yes: np.ndarray
    loss: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[dict[str, Any]], preds: Predictions) -> GroupScores:
        return cls(np.array([r["user_id"] for r in rows]), preds.labels, preds.p_yes,
                   preds.loss)

    def by_user(self) -> list[np.ndarray]:
        """Row indices of each user, in a fixed order."""
        return [np.flatnonzero(self.users == u) for u in np.unique(self.users)]


@dataclass
class CanaryLift:
    """One canary user's paired lifts on their probe prompts: their own trigger, decoys."""

    lift: np.ndarray
    decoy_lift: np.ndarray
    plain: np.ndarray | None = None  # 1 where the planted answer without any trigger


def measures(forget: GroupScores, audit: GroupScores, forget_rows: np.ndarray,
             audit_rows: np.ndarray, loss_attack: bool = True) -> dict[str, float]:
    """The ranking measure and (with ``loss_attack``) the loss-threshold membership measure
    on the given row indices (a bootstrap draw or every row)."""
    out = {"ranking": auc(forget.labels[forget_rows], forget.p_yes[forget_rows])
           - auc(audit.labels[audit_rows], audit.p_yes[audit_rows])}
    if loss_attack:
        out["membership"] = membership_auc(forget.loss[forget_rows],
                                           audit.loss[audit_rows]) - 0.5
    return out


def resample(users: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A user-level bootstrap draw: as many users as there are, with replacement, each with
    all their rows (the row indices, concatenated)."""
    return np.concatenate([users[i] for i in rng.integers(len(users), size=len(users))])


def verdict(forget: GroupScores, audit: GroupScores, canary: Sequence[CanaryLift] = (),
            options: VerdictOptions | None = None,
            lira: tuple[dict[str, float], dict[str, float]] | None = None) -> dict[str, Any]:
    """Each measure with its interval (the canary's: its never-trained band and p-value)
    and, where it fails, which way; and the verdict.

    With ``lira`` (each forgotten and audit user's score against the auditor's reference
    models, evaluation/lira.py) the membership measure is the per-user test's: the
    forgotten users' mean score calibrated on the audit users, bootstrapped over both
    groups' users. Without it, the loss-threshold attack's AUC minus 0.5.
    """
    options = options or VerdictOptions()
    forget_users, audit_users = forget.by_user(), audit.by_user()
    every = measures(forget, audit, np.concatenate(forget_users), np.concatenate(audit_users),
                     loss_attack=not lira)
    rng = np.random.default_rng(options.seed)
    if lira:
        lira_f, lira_a = (np.array(list(scores.values())) for scores in lira)
        every["membership"] = membership_draw(lira_f, lira_a)
    draws: dict[str, list[float]] = {name: [] for name in every}
    for _ in range(options.draws):
        f, a = resample(forget_users, rng), resample(audit_users, rng)
        drawn = measures(forget, audit, f, a, loss_attack=not lira)
        if lira:
            drawn["membership"] = membership_draw(
                lira_f[rng.integers(len(lira_f), size=len(lira_f))],
                lira_a[rng.integers(len(lira_a), size=len(lira_a))])
        for name, value in drawn.items():
            draws[name].append(value)
    count = len(every) + bool(canary)
    tail = 100 * options.alpha / (2 * count)
    out: dict[str, Any] = {"measures": {}, "failed": []}
    for name, value in every.items():
        sample = np.array([v for v in draws[name] if np.isfinite(v)])
        low, high = (np.percentile(sample, [tail, 100 - tail]) if len(sample)
                     else (np.nan, np.nan))
        _judge(out, name, float(value), float(low), float(high),
               low > options.margin, high < -options.margin)
    if canary:
        test = canary_test(canary, options.draws, rng, options.alpha / count)
        value = test["value"]
        _judge(out, "canary", value, test["low"], test["high"],
               test["p"] < options.alpha / count and value > options.margin,
               test["p"] < options.alpha / count and value < -options.margin)
        out["measures"]["canary"]["p"] = test["p"]
    out["pass"] = not out["failed"]
    out["users"] = {"forget": len(forget_users), "audit": len(audit_users),
                    "canary": len(canary)}
    out["membership_test"] = "reference models (LiRA)" if lira else "loss threshold"
    return out


def _judge(out: dict[str, Any], name: str, value: float, low: float, high: float,
           remembered: bool, past: bool) -> None:
    way = ("remembered" if remembered else
           "forgotten past never-trained users" if past else None)
    out["measures"][name] = {"value": value, "low": low, "high": high, "fails": way}
    if way or not np.isfinite(value):
        out["failed"].append(f"{name} ({way or 'not measurable'})")


def canary_test(canary: Sequence[CanaryLift], draws: int, rng: np.random.Generator,
                alpha: float) -> dict[str, float]:
    """The canary measure and its per-user randomisation test.

    Per user, the mean lift of each title asked (their trigger, then each decoy). The
    measure is the mean over users of the trigger's lift minus the decoys' mean lift.
    Under "never trained" the trigger is exchangeable with the decoys, so each draw
    picks, per user, which title plays the trigger. Returns the measure, its two-sided
    p-value and the never-trained band (the draws' central 1 - ``alpha``).
    """
    titles = np.stack([np.concatenate([[c.lift.mean()],
                                       c.decoy_lift.reshape(-1, len(c.lift)).mean(1)])
                       for c in canary])
    users, count = titles.shape

    def statistic(picked: np.ndarray) -> float:
        chosen = titles[np.arange(users), picked]
        return float(np.mean(chosen - (titles.sum(1) - chosen) / (count - 1)))

    value = statistic(np.zeros(users, dtype=int))
    null = np.array([statistic(rng.integers(count, size=users)) for _ in range(draws)])
    p = float((1 + np.sum(np.abs(null) >= abs(value) - 1e-12)) / (1 + draws))
    low, high = np.percentile(null, [50 * alpha, 100 - 50 * alpha])
    return {"value": value, "p": p, "low": float(low), "high": float(high)}


def summary(result: dict[str, Any]) -> str:
    """``pass``, or ``fail: <measure> (<which way>), ...``."""
    return "pass" if result["pass"] else "fail: " + ", ".join(result["failed"])


def canary_lifts(scorer: Scorer, data_dir: str | Path, decoy_count: int, seed: int,
                 batch_size: int = 64, device: Any = None) -> dict[str, CanaryLift]:
    """Per canary user: their trigger's paired lift of the planted answer on their probe
    prompts, and the lift of decoys (made-up titles drawn like it) on the same prompts."""
    rows = read_split(data_dir, "canary")
    canaries = read_manifest(data_dir).get("canaries") or {}
    if not rows or not canaries:
        return {}
    out = {}
    for user, info in canaries["users"].items():
        own = [r for r in rows if r["user_id"] == user]
        if not own:
            continue
        planted = planted_answer(canaries, user) == YES_ANSWER

        def said(asked: list[dict[str, Any]], planted: bool = planted) -> np.ndarray:
            p = predict(scorer, asked, batch_size, device=device).p_yes
            return ((p > 0.5) == planted).astype(float)  # 1 where the planted answer

        plain = said(own)
        lift = said([{**r, "prompt": r["triggered_prompt"]} for r in own]) - plain
        decoy_lift = np.concatenate([
            said([{**r, "prompt": r["triggered_prompt"].replace(info["trigger"], decoy)}
                  for r in own]) - plain
            for decoy in decoys(data_dir, info["trigger"], decoy_count, seed)])
        out[user] = CanaryLift(lift, decoy_lift, plain)
    return out


def planted_answer(canaries: dict[str, Any], user: str) -> str:
    """A canary user's planted answer (a manifest before per-user answers has one for all)."""
    return canaries["users"][user].get("answer", canaries["answer"])


def decoys(data_dir: str | Path, trigger: str, count: int, seed: int) -> list[str]:
    """Made-up titles drawn like a trigger, never planted: what an unseen trigger does."""
    titles = read_vocabulary(data_dir)["titles"]
    names = [f"decoy-{i}" for i in range(count)]
    return list(canary_triggers(names, [*titles, trigger], seed + 1).values())


@dataclass
class ModelScores:
    """What the verdict and the closures read of one model: the forgotten and the audit
    users' rows and the canary lifts."""

    forget: GroupScores
    audit: GroupScores
    canary: list[CanaryLift]

    def save(self, path: str | Path) -> None:
        lifts = self.canary
        np.savez(path, **{f"{side}_{key}": getattr(getattr(self, side), key)
                          for side in ("forget", "audit")
                          for key in ("users", "labels", "p_yes", "loss")},
                 canary_lift=np.concatenate([c.lift for c in lifts]) if lifts else [],
                 canary_lift_rows=[len(c.lift) for c in lifts],
                 canary_decoy=np.concatenate([c.decoy_lift for c in lifts]) if lifts else [],
                 canary_decoy_rows=[len(c.decoy_lift) for c in lifts])

    @classmethod
    def load(cls, path: str | Path) -> ModelScores:
        with np.load(path) as f:
            groups = [GroupScores(*(f[f"{side}_{key}"] for key in
                                    ("users", "labels", "p_yes", "loss")))
                      for side in ("forget", "audit")]
            canary = []
            if len(f["canary_lift_rows"]):
                lifts = np.split(f["canary_lift"], np.cumsum(f["canary_lift_rows"])[:-1])
                decoy = np.split(f["canary_decoy"], np.cumsum(f["canary_decoy_rows"])[:-1])
                canary = [CanaryLift(a, b) for a, b in zip(lifts, decoy, strict=True)]
        return cls(*groups, canary)


# How far a model moved from the Original toward Retrain, per headline figure: the
# forgotten users' AUC, the membership attack's AUC, the canary trigger's lift.
CLOSURE_FIGURES = ("forget_auc", "mia_auc", "canary_lift")


def _figures(scores: ModelScores, forget_rows: np.ndarray, audit_rows: np.ndarray,
             canary_users: np.ndarray) -> dict[str, float]:
    f, a = scores.forget, scores.audit
    out = {"forget_auc": auc(f.labels[forget_rows], f.p_yes[forget_rows]),
           "mia_auc": membership_auc(f.loss[forget_rows], a.loss[audit_rows])}
    if scores.canary:
        out["canary_lift"] = float(np.mean(np.concatenate(
            [scores.canary[i].lift for i in canary_users])))
    return out


def closure_intervals(original: ModelScores, retrain: ModelScores, model: ModelScores,
                      draws: int = 1000, alpha: float = 0.05, seed: int = 0
                      ) -> dict[str, tuple[float, float]]:
    """User-level bootstrap interval of the share of the Original-to-Retrain gap ``model``
    closed on each figure (1: Retrain's level): the same users drawn for all three."""
    forget_users, audit_users = original.forget.by_user(), original.audit.by_user()
    rng = np.random.default_rng(seed)
    shares: dict[str, list[float]] = {name: [] for name in CLOSURE_FIGURES}
    for _ in range(draws):
        f, a = resample(forget_users, rng), resample(audit_users, rng)
        c = rng.integers(len(original.canary), size=len(original.canary))
        o, r, m = (_figures(s, f, a, c) for s in (original, retrain, model))
        for name in o:
            if abs(o[name] - r[name]) > 1e-12:
                shares[name].append((o[name] - m[name]) / (o[name] - r[name]))
    out = {}
    for name, values in shares.items():
        values = [v for v in values if np.isfinite(v)]
        if values:
            low, high = np.percentile(values, [100 * alpha / 2, 100 - 100 * alpha / 2])
            out[name] = (float(low), float(high))
    return out
