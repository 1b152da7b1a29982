"""Verifying a candidate before it becomes current: is each user like a never-trained one?

A request's users must look, to the candidate, like the audit users: people
of the same period whom no model ever trained on. Two measurements, both per
user and both ways (still remembered, or forgotten past a never-trained user):

* **membership**: with the store's auditor (deploy/auditor.py), the per-user
  likelihood-ratio test against its reference models (evaluation/lira.py): the
  user's score calibrated on the audit users (0: like them; spread 1), and a
  request of 2 to 4 users also pooled. Without one, the AUC of a loss-threshold
  attack telling the user's training rows from the audit users' rows, against a
  noise band drawn from the audit users themselves; that AUC is recorded either
  way.
* **canary**: a canary user's own trigger, asked on their probe prompts: how
  much it raises the planted answer (the lift, paired prompt by prompt),
  against the lift of decoys on the same prompts: made-up titles drawn the
  same way that no model ever trained on (what swapping a title for an
  unseen one does to this user's answers).

Each user is tested at ``alpha / users`` two-sided (Bonferroni), and a request
of several users also as a whole (deploy/measurements.py says how). The
measurements are made by deploy/measurements.py. Losses
are binary (-log P(true answer) over Yes/No) and forget rows unplanted, as in
the bench. A measurement that cannot be made fails the request with the
reason; it never passes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from e2urec.config import ConfigError, from_dict, option
from e2urec.evaluation.metrics import utility
from e2urec.evaluation.verdict import summary as group_summary

# A {0, 1} answer's largest variance: the floor of a paired lift's, so that a handful of
# identical answers is not taken for certainty.
COIN_VARIANCE = 0.25


@dataclass
class Verification:
    """What a candidate must show before it becomes current."""

    alpha: float = option(0.05, help="false-alarm rate of the membership and canary tests "
                          "over the request's users together (each user is tested at alpha / "
                          "users, two-sided)")
    mia_margin: float = option(0.05, help="a user's membership AUC may lie this much beyond "
                               "the never-trained users' noise band, either way, before it "
                               "fails (remembered above it, forgotten past them below it)")
    lira_margin: float = option(0.0, help="a user's calibrated reference-model score (in "
                                "never-trained users' spreads) may lie this much beyond the "
                                "test's bound, either way, before it fails")
    canary_margin: float = option(0.1, help="a canary user's trigger lift may differ from the "
                                  "lift of decoy triggers (never planted) by this "
                                  "much beyond noise, either way, before it fails")
    max_valid_auc_drop: float = option(0.02, help="valid AUC may fall at most this much "
                                       "below the current version's, net of the drop's own "
                                       "noise (paired bootstrap, one-sided at alpha)")
    min_audit_users: int = option(5, help="fewer audit (never-trained) users than this left "
                                  "in the store and nothing can be verified: the request "
                                  "fails")
    max_samples: int = option(400, help="valid and audit rows scored (a seeded subset)")
    draws: int = option(40, help="draws per audit user for the membership noise band")
    decoys: int = option(8, help="made-up triggers, never planted, asked on a canary user's "
                         "prompts for the canary test's never-trained answer")
    seed: int = option(0, help="seed of the subsets and draws")
    power: bool = option(True, help="an approximate deletion must be shown: the check must "
                         "tell the users from never-trained users on the version before the "
                         "request (else the exact path carries it out); off only in studies "
                         "that measure")
    exact_retry: bool = option(True, help="a request an approximate method fails (or cannot "
                               "be shown to forget) is carried out again on the exact path, "
                               "as a second request in the ledger")

    def __post_init__(self) -> None:
        if self.min_audit_users == 1 or self.min_audit_users < 0:
            raise ConfigError(f"min_audit_users {self.min_audit_users}: a never-trained noise "
                              "band needs at least 2 audit users; use 2 or more (0 only in a "
                              "study that measures)")

    @classmethod
    def measure_only(cls) -> Verification:
        """Thresholds that refuse nothing measurable (a study that only measures)."""
        return cls(mia_margin=1.0, lira_margin=1e6, canary_margin=2.0, max_valid_auc_drop=1.0,
                   min_audit_users=0,
                   power=False, exact_retry=False)

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> Verification:
        """The thresholds recorded with a request (a request recorded under earlier
        thresholds, e.g. max_mia_auc, gets today's defaults for them)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return from_dict(cls, {k: v for k, v in (request["verification"] or {}).items()
                               if k in known}, "verification")

    def overridden(self) -> dict[str, Any]:
        """The thresholds that differ from the defaults."""
        default = Verification()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


def paired_auc_se(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray],
                  seed: int, draws: int = 200) -> float:
    """Bootstrap standard error of the AUC difference of two models on the same rows."""
    labels, p_before = before
    _, p_after = after
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(draws):
        pick = rng.integers(0, len(labels), size=len(labels))
        if len(set(labels[pick].tolist())) == 2:
            diffs.append(utility(labels[pick], p_before[pick])["auc"]
                         - utility(labels[pick], p_after[pick])["auc"])
    return float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0


def verdict(before: dict[str, Any], after: dict[str, Any], verification: Verification,
            exact: bool = False) -> str | None:
    """Why the candidate fails verification, or None when it passes.

    An approximate method (``exact`` False) must also have power: the check has to
    tell the request's users from never-trained users on the version before (each user,
    or the users together), and the candidate must have moved each measure that did
    toward them. An exact method's candidate never saw the users: too few audit users
    left does not stop it, and power is not asked of it.
    """
    if after["audit_users"] < verification.min_audit_users:
        return _utility(before, after, verification) if exact else \
            _too_few_audit_users(after, verification)
    reasons = [r for r in (_utility(before, after, verification),) if r]
    z = _z(after, verification)
    for user, m in after["users"].items():
        for name, (gap, width) in user_tests(m, z, verification).items():
            if abs(gap) > width:
                reasons.append(_user_reason(user, name, m, gap, width))
    if "group" in after and not after["group"]["pass"]:
        reasons.append(f"the {len(after['users'])} users together: "
                       f"{group_summary(after['group'])}")
    if (after.get("pooled") or {}).get("fails"):
        pooled = after["pooled"]
        reasons.append(f"the {len(after['users'])} users together: mean calibrated score "
                       f"{pooled['value']:+.2f} [{pooled['low']:+.2f}, {pooled['high']:+.2f}] "
                       f"against the references ({pooled['fails']})")
    if verification.power and not exact:
        reasons += _without_power(before, after, verification)
    return "; ".join(reasons) or None


def _too_few_audit_users(measured: dict[str, Any], verification: Verification) -> str:
    return (f"too few held-out users left to verify an approximate deletion: "
            f"{measured['audit_users']} audit user(s), at least "
            f"{verification.min_audit_users} needed (the exact path needs none; to "
            "verify again, prepare the data with a larger --holdout-fraction, train "
            "the Original on it and `e2urec deploy init --overwrite` the store: its "
            "forgotten users are carried forward)")


def cannot_show(before: dict[str, Any], verification: Verification,
                stated: float | None = None) -> str | None:
    """Why no approximate deletion of these users could pass, read before any unlearning
    (None: one could): too few audit users left, or no power."""
    if before["audit_users"] < verification.min_audit_users:
        return _too_few_audit_users(before, verification)
    return no_power(before, verification, stated) if verification.power else None


def _z(measured: dict[str, Any], verification: Verification) -> float:
    """Each user is tested at alpha / users, two-sided."""
    return float(norm.ppf(1 - verification.alpha / (2 * max(1, len(measured.get("users", {}))))))


def user_tests(m: dict[str, Any], z: float, verification: Verification
               ) -> dict[str, tuple[float, float]]:
    """One user's tests: per measure, the gap to never-trained users and the width allowed."""
    out = {}
    if "lira" in m:  # a calibrated score's bound, widened by the calibration's own error
        out["membership"] = (m["lira"], z * float(np.sqrt(1 + 1 / m["lira_audit_users"]))
                             + verification.lira_margin)
    elif "mia_auc" in m:
        out["membership"] = (m["mia_auc"] - m["null_mean"],
                             z * m["null_sd"] + verification.mia_margin)
    if "canary_lift" in m:
        se = np.sqrt(max(m["canary_var"], COIN_VARIANCE) / m["canary_rows"]
                     + m["null_var"] / max(1, m["null_rows"]))
        out["canary"] = (m["canary_lift"] - m["null_lift"], z * se + verification.canary_margin)
    return out


def _user_reason(user: str, name: str, m: dict[str, Any], gap: float, width: float) -> str:
    way = "remembered" if gap > 0 else "forgotten past never-trained users"
    if name == "membership" and "lira" in m:
        return (f"user {user}: reference-model score {m['lira']:+.2f} against never-trained "
                f"users' 0 +- {width:.2f} ({way})")
    if name == "membership":
        return (f"user {user}: membership AUC {m['mia_auc']:.3f} against never-trained "
                f"users' {m['null_mean']:.3f} +- {width:.3f} ({way})")
    way = "still answered" if gap > 0 else "answered against, past an unseen trigger"
    return (f"user {user}: their canary trigger lifts the planted answer by "
            f"{m['canary_lift']:.3f} against {m['null_lift']:.3f} for decoy triggers, "
            f"+- {width:.3f} ({way})")


def _utility(before: dict[str, Any], after: dict[str, Any], verification: Verification
             ) -> str | None:
    if not np.isfinite(after["valid_auc"]) or not np.isfinite(before["valid_auc"]):
        return "valid AUC cannot be measured (the valid rows hold one class)"
    drop = before["valid_auc"] - after["valid_auc"]
    se = paired_auc_se(before["_valid"], after["_valid"], verification.seed)
    # One-sided: the drop must exceed the allowance by more than its own noise.
    if drop - float(norm.ppf(1 - verification.alpha)) * se > verification.max_valid_auc_drop:
        return f"valid AUC fell {drop:.3f} (+- {se:.3f}) > {verification.max_valid_auc_drop}"
    return None


def power(before: dict[str, Any], verification: Verification) -> dict[str, Any]:
    """What the check can see on the version before the request: per user, the measures
    that tell them from never-trained users (remembered); and those of the users together.
    A user with none, in a request whose users together show none, has no power."""
    z = _z(before, verification)
    users = {user: [name for name, (gap, width) in user_tests(m, z, verification).items()
                    if gap > width]
             for user, m in before.get("users", {}).items()}
    group = [name for name, m in (before.get("group") or {}).get("measures", {}).items()
             if m["fails"] == "remembered"]
    if (before.get("pooled") or {}).get("fails") == "remembered":
        group.append(POOLED)
    return {"users": users, "group": group,
            "powered": bool(group) or (bool(users) and all(users.values()))}


# The name of a small request's pooled reference-model test among the group's measures.
POOLED = "pooled membership"


def no_power(before: dict[str, Any], verification: Verification,
             stated: float | None = None) -> str | None:
    """Why no approximate deletion of these users can be shown (None: it can): on the
    version before, the check tells neither each user nor the users together from
    never-trained users. ``stated``: the auditor's stated power for a request this size."""
    seen = power(before, verification)
    if seen["powered"]:
        return None
    blind = sorted(u for u, names in seen["users"].items() if not names)
    told = "" if stated is None else (f"; the auditor tells a request of this size apart "
                                      f"{stated:.0%} of the time on the served model")
    return (f"no power: before unlearning, the check could not tell user(s) {blind[:10]} "
            f"from never-trained users (nor the users together){told}, so no approximate "
            "method can be shown to forget them")


def _without_power(before: dict[str, Any], after: dict[str, Any],
                   verification: Verification) -> list[str]:
    """Why an approximate deletion cannot be shown: no power, or no move where there was."""
    seen = power(before, verification)
    if not seen["powered"]:
        return [no_power(before, verification)]
    reasons = []
    for user, names in seen["users"].items():
        for name in names:
            key = {"membership": "lira" if "lira" in before["users"][user] else "mia_auc",
                   "canary": "canary_lift"}[name]
            if after["users"].get(user, {}).get(key, np.inf) >= before["users"][user][key]:
                reasons.append(f"user {user}: the {name} measure did not move toward "
                               f"never-trained users ({before['users'][user][key]:.3f} before, "
                               f"{after['users'].get(user, {}).get(key, float('nan')):.3f} "
                               "after)")
    for name in seen["group"]:
        was, now_ = (_group_value(m, name) for m in (before, after))
        if now_ >= was:
            reasons.append(f"the users together: the {name} measure did not move toward "
                           f"never-trained users ({was:+.3f} before, {now_:+.3f} after)")
    return reasons


def _group_value(measured: dict[str, Any], name: str) -> float:
    if name == POOLED:
        return (measured.get("pooled") or {}).get("value", np.inf)
    return (measured.get("group") or {}).get("measures", {}).get(name, {}).get("value", np.inf)
