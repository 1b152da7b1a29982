"""The paper's metrics: utility (AUC, ACC, LogLoss) and distances between distributions."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

EPS = 1e-7


def utility(labels: np.ndarray, p_yes: np.ndarray) -> dict[str, float]:
    """AUC, ACC at threshold 0.5 and LogLoss of P(yes). AUC is NaN with one class."""
    labels = np.asarray(labels).astype(int)
    p = np.clip(np.asarray(p_yes, dtype=np.float64), EPS, 1 - EPS)
    auc = roc_auc_score(labels, p) if len(set(labels.tolist())) == 2 else float("nan")
    return {"auc": float(auc), "acc": float(accuracy_score(labels, p > 0.5)),
            "logloss": float(log_loss(labels, p, labels=[0, 1]))}


def distribution_distances(logits_p: torch.Tensor, logits_q: torch.Tensor) -> dict[str, float]:
    """Mean per-sample distances between two models' full-vocabulary distributions.

    ``sym_kl`` is 0.5 KL(p||q) + 0.5 KL(q||p), what the reference code calls
    JSD; ``jsd`` is the true Jensen-Shannon divergence (natural log); ``l2`` is
    ||p - q||_2.
    """
    if logits_p.shape != logits_q.shape:
        raise ValueError(f"distributions differ in shape: {tuple(logits_p.shape)} vs "
                         f"{tuple(logits_q.shape)}; the models must share a vocabulary")
    log_p = logits_p.double().log_softmax(-1)
    log_q = logits_q.double().log_softmax(-1)
    p, q = log_p.exp(), log_q.exp()
    kl_pq = (p * (log_p - log_q)).sum(-1)
    kl_qp = (q * (log_q - log_p)).sum(-1)
    log_m = (0.5 * (p + q)).clamp_min(1e-300).log()
    jsd = 0.5 * (p * (log_p - log_m)).sum(-1) + 0.5 * (q * (log_q - log_m)).sum(-1)
    l2 = (p - q).norm(dim=-1)
    return {"sym_kl": float((0.5 * (kl_pq + kl_qp)).mean()), "jsd": float(jsd.mean()),
            "l2": float(l2.mean())}
