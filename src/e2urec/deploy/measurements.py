"""What verification reads: one model measured on a request's users and the audit users.

Per user: the loss-threshold membership AUC with its never-trained band, the
reference-model score (with the store's auditor), the canary lift against decoys;
for the request: valid and forget AUC, and its users together (pooled, or the
bench's verdict from MIN_POOLED_USERS users).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from e2urec.checkpoints.scorers import load_scorer
from e2urec.data.samples import read_split, subsample, unplanted
from e2urec.deploy.verify import Verification
from e2urec.evaluation.audit import membership_auc
from e2urec.evaluation.lira import Calibration, ReferenceLevels, pooled_test, user_scores
from e2urec.evaluation.metrics import utility
from e2urec.evaluation.predict import predict
from e2urec.evaluation.verdict import GroupScores, VerdictOptions, canary_lifts
from e2urec.evaluation.verdict import verdict as group_verdict

# A request of this many users is also judged as a whole by the bench's verdict (user-level
# bootstrap); fewer users give a bootstrap of too few distinct draws, so each user's own
# test decides alone.
MIN_POOLED_USERS = 5


def verification_rows(data_dir: Path, verification: Verification
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows a request is verified on: the users' unplanted training rows (canary rows
    have their own test) and a seeded subset of the audit rows."""
    return (unplanted(read_split(data_dir, "forget")),
            subsample(read_split(data_dir, "audit"), verification.max_samples,
                      verification.seed))


def measure_request(model_dir: Path, data_dir: Path, verification: Verification,
            levels: tuple[ReferenceLevels, ReferenceLevels] | None = None) -> dict[str, Any]:
    """Everything :func:`verdict` reads, for the request's data folder and one model.

    ``levels``: the auditor's reference levels on :func:`verification_rows` (forget,
    audit), for the per-user likelihood-ratio test.
    """
    scorer = load_scorer(model_dir)  # one model or a shard ensemble
    valid = predict(scorer, subsample(read_split(data_dir, "valid"), verification.max_samples,
                                      verification.seed))
    forget_rows, audit_rows = verification_rows(data_dir, verification)
    forget = predict(scorer, forget_rows)
    audit_users = sorted({r["user_id"] for r in audit_rows})
    out: dict[str, Any] = {"valid_auc": utility(valid.labels, valid.p_yes)["auc"],
                           "forget_auc": utility(forget.labels, forget.p_yes)["auc"],
                           "audit_users": len(audit_users), "users": {},
                           # per valid row, for the paired AUC drop; never recorded
                           "_valid": (valid.labels, valid.p_yes)}
    if len(audit_users) < max(2, verification.min_audit_users):
        return out
    audit = predict(scorer, audit_rows)
    out["mia_auc"] = membership_auc(forget.loss, audit.loss)
    _loss_attack(out, forget_rows, forget.loss, audit_rows, audit.loss, verification)
    lira = _reference_test(out, levels, forget.loss, audit.loss, verification)
    canary = canary_lifts(scorer, data_dir, verification.decoys, verification.seed)
    for user, lift in canary.items():
        out["users"].setdefault(user, {"rows": 0}).update(
            canary_rows=len(lift.lift), canary_lift=float(lift.lift.mean()),
            canary_var=float(lift.lift.var()), null_lift=float(lift.decoy_lift.mean()),
            null_var=float(lift.decoy_lift.var()), null_rows=len(lift.decoy_lift))
    if canary:
        out["canary_lift"] = float(np.mean([c.lift.mean() for c in canary.values()]))
    if len(out["users"]) >= MIN_POOLED_USERS:
        # The request as a whole: the bench's verdict, on this request's users.
        out["group"] = group_verdict(
            GroupScores.of(forget_rows, forget), GroupScores.of(audit_rows, audit),
            list(canary.values()), VerdictOptions(alpha=verification.alpha,
                                                  margin=verification.mia_margin,
                                                  decoys=verification.decoys,
                                                  seed=verification.seed), lira=lira)
    return out


def _loss_attack(out: dict[str, Any], forget_rows: list[dict[str, Any]], forget_loss: np.ndarray,
                 audit_rows: list[dict[str, Any]], audit_loss: np.ndarray,
                 verification: Verification) -> None:
    """Each user's loss-threshold AUC, with the never-trained band for their row count."""
    rng = np.random.default_rng(verification.seed)
    audit_by_user = _by_user(audit_rows, audit_loss)
    bands: dict[int, tuple[float, float]] = {}  # users with as many rows share one band
    for user, losses in _by_user(forget_rows, forget_loss).items():
        if len(losses) not in bands:
            bands[len(losses)] = null_band(audit_by_user, len(losses), verification.draws, rng)
        mean, sd = bands[len(losses)]
        out["users"][user] = {"rows": len(losses), "mia_auc": membership_auc(losses, audit_loss),
                              "null_mean": mean, "null_sd": sd}


def _reference_test(out: dict[str, Any], levels: tuple[ReferenceLevels, ReferenceLevels] | None,
                    forget_loss: np.ndarray, audit_loss: np.ndarray,
                    verification: Verification
                    ) -> tuple[dict[str, float], dict[str, float]] | None:
    """Each user's calibrated score against the references, and a small request pooled;
    the raw scores (forget, audit), or None without references."""
    if levels is None:
        return None
    forget, audit = user_scores(levels[0], forget_loss), user_scores(levels[1], audit_loss)
    calibration = Calibration.of(np.array(list(audit.values())))
    for user, score in forget.items():
        out["users"][user].update(lira=float(calibration.standardise(np.array([score]))[0]),
                                  lira_audit_users=calibration.users)
    if 2 <= len(forget) < MIN_POOLED_USERS:
        out["pooled"] = pooled_test(forget, audit, verification.alpha)
    return forget, audit


def _by_user(rows: Sequence[dict[str, Any]], values: np.ndarray) -> dict[str, np.ndarray]:
    grouped: dict[str, list[float]] = defaultdict(list)
    for row, value in zip(rows, values, strict=True):
        grouped[row["user_id"]].append(float(value))
    return {user: np.array(v) for user, v in grouped.items()}


def null_band(audit: dict[str, np.ndarray], rows: int, draws: int,
              rng: np.random.Generator) -> tuple[float, float]:
    """Mean and spread of a never-trained user's membership AUC with ``rows`` rows.

    Each audit user in turn plays the forgotten user: ``rows`` of their losses
    (drawn with replacement) against every other audit user's.
    """
    values = []
    for user, losses in audit.items():
        others = np.concatenate([v for u, v in audit.items() if u != user])
        for _ in range(draws):
            values.append(membership_auc(rng.choice(losses, size=rows), others))
    return float(np.mean(values)), float(np.std(values, ddof=1))


def recorded(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of a measurement (per-row arrays stay out)."""
    return {k: v for k, v in metrics.items() if not k.startswith("_")}
