"""Evaluate a scorer on the prepared splits, and against a reference (retrained) model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2urec.checkpoints.scorers import Scorer
from e2urec.data.samples import read_split, subsample, unplanted
from e2urec.evaluation.audit import membership_auc
from e2urec.evaluation.lira import (
    ReferenceLevels,
    per_user_test,
    pooled_rate,
    pooled_test,
    user_scores,
)
from e2urec.evaluation.metrics import distribution_distances, utility
from e2urec.evaluation.predict import Predictions, predict
from e2urec.evaluation.ranking import ranking
from e2urec.evaluation.verdict import (
    GroupScores,
    ModelScores,
    VerdictOptions,
    canary_lifts,
    verdict,
)
from e2urec.evaluation.verdict import summary as verdict_summary

UTILITY_SPLITS = ("test", "forget", "retain")
BENCH_SPLITS = (*UTILITY_SPLITS, "probe")  # probe AUC: the stop rule's level


def evaluate(scorer: Scorer, data_dir: str | Path, reference: Scorer | Predictions | None = None,
             batch_size: int = 64, splits: tuple[str, ...] = UTILITY_SPLITS,
             max_samples: int | None = None, device: torch.device | None = None,
             ranking_positives: int | None = 100,
             references: tuple[ReferenceLevels, ReferenceLevels] | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Utility on each split; with ``reference``, forget-set distances to it.

    ``max_samples`` caps every split except test and forget by a seeded subset.
    With the test split and a catalogue in ``data_dir``, HR@10 and NDCG@10 of
    ``ranking_positives`` liked test samples against 99 unrated movies (0: none).
    ``reference`` may be the reference's forget-set predictions (with logits),
    computed once for many evaluations.
    ``references``: the auditor's reference levels on the forget (unplanted) rows and
    the audit rows (evaluation/lira.py), for the per-user test and the verdict.
    Returns the metrics and the per-split predictions (for the audit).
    """
    results: dict[str, Any] = {}
    preds: dict[str, Any] = {}  # Predictions per split; the verdict's ModelScores
    for split in splits:
        rows = read_split(data_dir, split)
        if split == "forget":
            rows = unplanted(rows)  # planted canary rows are the canary measure's
        elif split != "test":
            rows = subsample(rows, max_samples)
        if not rows:
            continue  # an optional split this data has not (probe)
        keep = reference is not None and split == "forget"
        preds[split] = predict(scorer, rows, batch_size, keep_logits=keep, device=device,
                               desc=f"eval {split}")
        results[split] = utility(preds[split].labels, preds[split].p_yes)
    if "test" in splits and ranking_positives != 0:
        # Ranking reads each prompt's shared prefix once; its batches of short
        # continuations are larger than a split's (ranking's own default).
        ranked = ranking(scorer, data_dir, max_positives=ranking_positives, device=device)
        if ranked is not None:
            results["ranking"] = ranked
    if "forget" in preds:
        results.update(audit(scorer, data_dir, preds, batch_size, max_samples, device,
                             references))
    if reference is not None:
        ref = reference if isinstance(reference, Predictions) else predict(
            reference, unplanted(read_split(data_dir, "forget")), batch_size, keep_logits=True,
            device=device, desc="eval reference")
        results["forget_vs_reference"] = distribution_distances(preds["forget"].logits,
                                                                ref.logits)
        preds["reference_forget"] = ref
    return results, preds


def audit(scorer: Scorer, data_dir: str | Path, preds: dict[str, Any],
          batch_size: int, max_samples: int | None, device: torch.device | None,
          references: tuple[ReferenceLevels, ReferenceLevels] | None = None
          ) -> dict[str, Any]:
    """The membership audit against the audit users, the canary audit, and the verdict.

    ``mia_auc``: a loss-threshold attack (binary log-loss) telling the forgotten
    users' unplanted rows from the audit users' rows (training-period users no
    model was trained on). ``canary``: the share of the canary users' probe
    prompts answered with the planted answer with the trigger (``success``) and
    without (``base_rate``). ``lira``: with ``references``, the per-user test
    (evaluation/lira.py): the share of forgotten users flagged one by one, the audit
    users' false-alarm rate, and how often a request of 5 forgotten users is told
    apart. ``verdict``: :func:`e2urec.evaluation.verdict.verdict`.
    Adds the audit split's predictions to ``preds``, and the verdict's inputs
    (``scores``, a :class:`~e2urec.evaluation.verdict.ModelScores`).
    """
    results: dict[str, Any] = {}
    audit_rows = subsample(read_split(data_dir, "audit"), max_samples)
    options = VerdictOptions()
    lifts = canary_lifts(scorer, data_dir, options.decoys, options.seed, batch_size, device)
    if lifts:  # the planted answer's rate with the trigger and without, from the same passes
        plain = np.concatenate([c.plain for c in lifts.values()])
        triggered = np.concatenate([c.plain + c.lift for c in lifts.values()])
        results["canary"] = {"success": float(triggered.mean()),
                             "base_rate": float(plain.mean())}
    if audit_rows:
        outside = predict(scorer, audit_rows, batch_size, device=device, desc="eval audit")
        preds["audit"] = outside
        results["mia_auc"] = membership_auc(preds["forget"].loss, outside.loss)
        results["mia_nonmembers"] = "audit users"
        forget_rows = unplanted(read_split(data_dir, "forget"))
        scores = ModelScores(GroupScores.of(forget_rows, preds["forget"]),
                             GroupScores.of(audit_rows, outside), list(lifts.values()))
        preds["scores"] = scores  # what a bench saves for the closures' intervals
        lira = None
        if references:
            lira = (user_scores(references[0], preds["forget"].loss),
                    user_scores(references[1], outside.loss))
            results["lira"] = lira_summary(*lira)
        results["verdict"] = verdict(scores.forget, scores.audit, scores.canary, options,
                                     lira)
    return results


def lira_summary(forget: dict[str, float], audit: dict[str, float]) -> dict[str, Any]:
    """What the per-user test sees under one model (5% false alarms, two-sided)."""
    test = per_user_test(forget, audit)
    return {"flagged": test["flagged"] / test["forgotten_users"],
            "remembered": test["remembered"] / test["forgotten_users"],
            "false_alarm_rate": test["false_alarm_rate"],
            "pooled_5": pooled_rate(forget, audit, size=5),
            "pooled": pooled_test(forget, audit)}


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
    if "ranking" in results:
        r = results["ranking"]
        lines.append(f"ranking: HR@10 {r['hr@10']:.4f}  NDCG@10 {r['ndcg@10']:.4f} "
                     f"({r['positives']} liked test samples, {r['candidates'] - 1} unrated "
                     "movies each)")
    if "popularity" in results:
        r = results["popularity"]
        lines.append(f"most-rated list on the same candidates: HR@10 {r['hr@10']:.4f}  "
                     f"NDCG@10 {r['ndcg@10']:.4f}")
    if "mia_auc" in results:
        lines.append(f"membership attack AUC (forget vs audit users): {results['mia_auc']:.4f}")
    if "canary" in results:
        c = results["canary"]
        lines.append(f"canary success {c['success']:.4f} (without the trigger "
                     f"{c['base_rate']:.4f})")
    if "verdict" in results:
        v = results["verdict"]
        lines.append(f"verdict (forgotten against audit users): {verdict_summary(v)}")
        for name, m in v["measures"].items():
            lines.append(f"  {name:<11}{m['value']:+.4f}  [{m['low']:+.4f}, {m['high']:+.4f}]")
    return "\n".join(lines)
