"""The forgetting audit: membership inference and KS forget quality (docs/architecture.md)."""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score


def membership_auc(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> float:
    """AUC of a loss-threshold attack telling members (low loss) from non-members.

    0.5 means the attacker cannot tell forget samples from samples of users the
    model never saw; the retrained model's value is the target, not 0.5 itself.
    """
    if len(member_loss) == 0 or len(nonmember_loss) == 0:
        return float("nan")
    labels = np.r_[np.ones(len(member_loss)), np.zeros(len(nonmember_loss))]
    scores = -np.r_[member_loss, nonmember_loss]
    return float(roc_auc_score(labels, scores))


def forget_quality(p_true: np.ndarray, p_true_reference: np.ndarray) -> dict[str, float]:
    """Two-sample KS test of per-sample P(true label) against the retrained model.

    A high p-value means the two cannot be told apart (TOFU's "forget quality").
    """
    result = ks_2samp(p_true, p_true_reference)
    return {"ks_statistic": float(result.statistic), "ks_pvalue": float(result.pvalue)}
