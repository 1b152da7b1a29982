"""A per-user membership test with reference models (offline LiRA, in the binary space).

For each row, the statistic is the model's log-odds of the true answer,
``log P(true) - log P(false)`` over the Yes/No pair. The references that did not
hold the row's user (training/references.py: each user is out of half of them)
give the row's never-trained level; the row's z-score is the model's statistic
minus that level, over the references' spread (one spread for all rows, "fixed
variance" LiRA: a few references a row cannot estimate their own). A user's score
combines their rows: the sum of z over the square root of their row count.

Calibration: the audit users (never trained on by anyone, drawn into the
references' halves like everyone else, so they are scored against as many
out-references) give the score's never-trained mean and spread under the very
model being audited. A user is flagged when their calibrated score lies beyond
the two-sided ``alpha`` bound: above (remembered) or below (pushed past
never-trained users). A group of users is tested pooled: the mean of their
calibrated scores against its own standard error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm


def log_odds(loss: np.ndarray) -> np.ndarray:
    """``log P(true) - log P(false)`` from the binary log-loss ``-log P(true)``."""
    loss = np.clip(np.asarray(loss, dtype=float), 1e-9, 60.0)
    return -loss - np.log(-np.expm1(-loss))


@dataclass
class ReferenceLevels:
    """Per row: the out-references' mean statistic; and their spread, one for all rows."""

    users: np.ndarray
    mean: np.ndarray
    spread: float

    @classmethod
    def of(cls, users: np.ndarray, reference_loss: np.ndarray, out: np.ndarray
           ) -> ReferenceLevels:
        """``reference_loss`` and ``out`` are [references, rows]: each reference's binary
        log-loss on each row, and whether that reference never held the row's user."""
        stat = log_odds(reference_loss)
        counts = out.sum(0)
        if (counts < 2).any():
            raise ValueError("every row needs at least 2 out-references")
        mean = (stat * out).sum(0) / counts
        residual = (stat - mean) * out
        spread = float(np.sqrt((residual ** 2).sum() / (counts - 1).sum()))
        return cls(np.asarray(users), mean, max(spread, 1e-6))


def user_scores(levels: ReferenceLevels, loss: np.ndarray) -> dict[str, float]:
    """Each user's score: their rows' z-scores summed, over the root of their row count."""
    z = (log_odds(loss) - levels.mean) / levels.spread
    out = {}
    for user in np.unique(levels.users):
        rows = levels.users == user
        out[str(user)] = float(z[rows].sum() / np.sqrt(rows.sum()))
    return out


@dataclass
class Calibration:
    """The never-trained users' score level and spread under one model."""

    mean: float
    spread: float
    users: int

    @classmethod
    def of(cls, audit_scores: np.ndarray) -> Calibration:
        scores = np.asarray(audit_scores, dtype=float)
        if len(scores) < 3:
            raise ValueError("calibration needs at least 3 audit users")
        return cls(float(scores.mean()), float(max(scores.std(ddof=1), 1e-9)), len(scores))

    def standardise(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores, dtype=float) - self.mean) / self.spread


def flag(calibrated: np.ndarray, alpha: float) -> np.ndarray:
    """+1 remembered, -1 pushed past never-trained users, 0 neither (two-sided)."""
    bound = float(norm.ppf(1 - alpha / 2))
    return np.where(calibrated > bound, 1, np.where(calibrated < -bound, -1, 0))


def per_user_test(forget: dict[str, float], audit: dict[str, float], alpha: float = 0.05
                  ) -> dict[str, Any]:
    """Flag forgotten users one by one; the audit users' own false-alarm rate, each left
    out of the calibration it is tested against."""
    audit_scores = np.array(list(audit.values()))
    calibration = Calibration.of(audit_scores)
    flags = flag(calibration.standardise(np.array(list(forget.values()))), alpha)
    false_alarms = [flag(Calibration.of(np.delete(audit_scores, i)).standardise(
        audit_scores[i:i + 1]), alpha)[0] != 0 for i in range(len(audit_scores))]
    return {"users": {u: int(f) for u, f in zip(forget, flags, strict=True)},
            "flagged": int((flags != 0).sum()), "remembered": int((flags > 0).sum()),
            "pushed_past": int((flags < 0).sum()), "forgotten_users": len(forget),
            "false_alarm_rate": float(np.mean(false_alarms)), "audit_users": len(audit),
            "calibration": calibration.__dict__, "alpha": alpha}


def pooled_test(forget: dict[str, float], audit: dict[str, float], alpha: float = 0.05
                ) -> dict[str, Any]:
    """The users together: the mean calibrated score, over its standard error (the
    group's own size and the calibration's)."""
    calibration = Calibration.of(np.array(list(audit.values())))
    mean = float(calibration.standardise(np.array(list(forget.values()))).mean())
    se = float(np.sqrt(1 / len(forget) + 1 / calibration.users))
    statistic = mean / se
    p = float(2 * norm.sf(abs(statistic)))
    way = None if p >= alpha else ("remembered" if statistic > 0 else
                                   "forgotten past never-trained users")
    return {"value": mean, "low": mean - norm.ppf(1 - alpha / 2) * se,
            "high": mean + norm.ppf(1 - alpha / 2) * se, "p": p, "fails": way}


def pooled_rate(forget: dict[str, float], audit: dict[str, float], size: int = 5,
                draws: int = 200, alpha: float = 0.05, seed: int = 0) -> float:
    """How often a request of ``size`` forgotten users (drawn at random) is told from
    never-trained users by :func:`pooled_test`."""
    rng = np.random.default_rng(seed)
    users = sorted(forget)
    if len(users) < size:
        return float("nan")
    told = 0
    for _ in range(draws):
        group = rng.choice(users, size=size, replace=False)
        told += pooled_test({u: forget[u] for u in group}, audit, alpha)["fails"] is not None
    return told / draws


def membership_draw(forget: np.ndarray, audit: np.ndarray) -> float:
    """The verdict's membership measure with references: the forgotten users' mean score,
    calibrated on the audit users (0: like never-trained users)."""
    return float(Calibration.of(audit).standardise(forget).mean())


def reference_levels(references_dir: str | Path, *groups: Sequence[dict[str, Any]],
                     batch_size: int = 64, device: Any = None) -> list[ReferenceLevels]:
    """Score each group of rows with every reference (each loaded once); per group, each
    row's level from the references that never held its user."""
    from e2urec.checkpoints.scorers import load_scorer
    from e2urec.evaluation.predict import predict
    from e2urec.training.references import read_references

    record = read_references(references_dir)
    assignment = record["assignment"]
    unknown = sorted({r["user_id"] for rows in groups for r in rows} - set(assignment))
    if unknown:
        raise ValueError(f"{references_dir}: drawn for other data (users {unknown[:5]} have no "
                         "draw); train references for this data")
    losses: list[list[np.ndarray]] = [[] for _ in groups]
    for k in range(record["count"]):
        scorer = load_scorer(Path(references_dir) / f"ref_{k}")
        for scored, rows in zip(losses, groups, strict=True):
            scored.append(predict(scorer, rows, batch_size, device=device).loss)
    return [ReferenceLevels.of(np.array([r["user_id"] for r in rows]), np.stack(scored),
                               np.array([[k not in assignment[r["user_id"]] for r in rows]
                                         for k in range(record["count"])]))
            for rows, scored in zip(groups, losses, strict=True)]


def audit_model(model: str | Path, data_dir: str | Path, references: str | Path,
                alpha: float = 0.05, batch_size: int = 64, device: Any = None
                ) -> dict[str, Any]:
    """The per-user test of every forgotten user, and of them together, on one model."""
    from e2urec.checkpoints.scorers import load_scorer
    from e2urec.data.samples import read_split, unplanted
    from e2urec.evaluation.predict import predict

    groups = {"forget": unplanted(read_split(data_dir, "forget")),
              "audit": read_split(data_dir, "audit")}
    for group, rows in groups.items():
        if not rows:
            raise ValueError(f"{data_dir} has no {group} rows to audit")
    levels = reference_levels(references, *groups.values(), batch_size=batch_size,
                              device=device)
    scorer = load_scorer(model)
    scores = {group: user_scores(level, predict(scorer, rows, batch_size, device=device).loss)
              for (group, rows), level in zip(groups.items(), levels, strict=True)}
    return {"model": str(Path(model).resolve()), "references": str(Path(references).resolve()),
            "per_user": per_user_test(scores["forget"], scores["audit"], alpha),
            "pooled": pooled_test(scores["forget"], scores["audit"], alpha),
            "requests_of_5": pooled_rate(scores["forget"], scores["audit"], 5, alpha=alpha)}


def format_audit(report: dict[str, Any]) -> str:
    """The pooled test, then the line that counts the users flagged one by one."""
    per, pooled = report["per_user"], report["pooled"]
    together = pooled["fails"] or "not told from never-trained users"
    return (f"forgotten users together: mean calibrated score {pooled['value']:+.2f} "
            f"[{pooled['low']:+.2f}, {pooled['high']:+.2f}], p={pooled['p']:.3g}: {together}\n"
            f"one by one: {per['remembered']} remembered, {per['pushed_past']} pushed past "
            f"never-trained users\n"
            f"random requests of 5 forgotten users told apart: {_share(report['requests_of_5'])}\n"
            f"flagged {per['flagged']} of {per['forgotten_users']} forgotten users (false-alarm "
            f"rate {per['false_alarm_rate']:.2f} on audit users)")


def _share(value: float) -> str:
    return f"{value:.0%}" if np.isfinite(value) else "- (fewer than 5 forgotten users)"
