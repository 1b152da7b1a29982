"""Evaluate a scorer on the prepared splits, and against a reference (retrained) model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from e2urec.checkpoints.scorers import Scorer
from e2urec.data.samples import read_split, subsample
from e2urec.evaluation.metrics import distribution_distances, utility
from e2urec.evaluation.predict import Predictions, predict

UTILITY_SPLITS = ("test", "forget", "retain")


def evaluate(scorer: Scorer, data_dir: str | Path, reference: Scorer | Predictions | None = None,
             batch_size: int = 64, splits: tuple[str, ...] = UTILITY_SPLITS,
             max_samples: int | None = None, device: torch.device | None = None
             ) -> tuple[dict[str, Any], dict[str, Predictions]]:
    """Utility on each split; with ``reference``, forget-set distances to it.

    ``max_samples`` caps every split except test and forget by a seeded subset.
    ``reference`` may be the reference's forget-set predictions (with logits),
    computed once for many evaluations.
    Returns the metrics and the per-split predictions (for the audit).
    """
    results: dict[str, Any] = {}
    preds: dict[str, Predictions] = {}
    for split in splits:
        rows = read_split(data_dir, split)
        if split not in ("test", "forget"):
            rows = subsample(rows, max_samples)
        keep = reference is not None and split == "forget"
        preds[split] = predict(scorer, rows, batch_size, keep_logits=keep, device=device,
                               desc=f"eval {split}")
        results[split] = utility(preds[split].labels, preds[split].p_yes)
    if reference is not None:
        ref = reference if isinstance(reference, Predictions) else predict(
            reference, read_split(data_dir, "forget"), batch_size, keep_logits=True,
            device=device, desc="eval reference")
        results["forget_vs_reference"] = distribution_distances(preds["forget"].logits,
                                                                ref.logits)
        preds["reference_forget"] = ref
    return results, preds


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of an evaluation result."""
    lines = [f"{'split':<10}{'AUC':>9}{'ACC':>9}{'LogLoss':>10}"]
    for split in UTILITY_SPLITS:
        if split in results:
            m = results[split]
            lines.append(f"{split:<10}{m['auc']:>9.4f}{m['acc']:>9.4f}{m['logloss']:>10.4f}")
    if "forget_vs_reference" in results:
        d = results["forget_vs_reference"]
        lines.append(f"forget vs reference: sym-KL {d['sym_kl']:.4f}  JSD {d['jsd']:.4f}  "
                     f"L2 {d['l2']:.4f}")
    return "\n".join(lines)
