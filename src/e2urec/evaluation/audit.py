"""The forgetting audit: membership inference and KS forget quality (docs/architecture.md)."""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp, rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by ranks (ties averaged, as scikit-learn's); NaN with one class.

    Fast enough to be drawn a thousand times in a bootstrap.
    """
    positives = np.asarray(labels) == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def membership_auc(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> float:
    """AUC of a loss-threshold attack telling members (low loss) from non-members.

    The losses are binary log-losses (-log P(true answer) over Yes/No). 0.5
    means the attacker cannot tell forget samples from samples of users the
    model never saw.
    """
    if len(member_loss) == 0 or len(nonmember_loss) == 0:
        return float("nan")
    labels = np.r_[np.ones(len(member_loss)), np.zeros(len(nonmember_loss))]
    return auc(labels, -np.r_[member_loss, nonmember_loss])


def forget_quality(p_true: np.ndarray, p_true_reference: np.ndarray) -> dict[str, float]:
    """Two-sample KS test of per-sample P(true label) against the retrained model.

    A high p-value means the two cannot be told apart (TOFU's "forget quality").
    """
    result = ks_2samp(p_true, p_true_reference)
    return {"ks_statistic": float(result.statistic), "ks_pvalue": float(result.pvalue)}
