"""Would a student that matched its forgetting teacher on every forget row pass the verdict?

E2URec distils the forgotten users' rows toward a teacher, so its best case is
the teacher itself. This scores those rows (unplanted, as every forgetting
measure reads them) with each teacher E2URec can build from a user-sharded
ensemble trained before the request, scores the audit users' rows with the
Original (what the student answers for users it never saw), and gives each the
bench's verdict on ranking and membership (the loss-threshold attack; the
canary is a property of a model, not of a teacher's answers):

* ``original``: no unlearning;
* ``shards``: per row, the mean log-odds of the members that never held its user;
* ``shards, own audit``: the same, with the audit rows under every member too
  (the teacher's model class judged against itself);
* ``shard-gain``: the Original moved away from the label by alpha times the
  user's own member's gain over the others, alpha calibrated to the probe
  users' loss (E2URec's ``forget_teacher: shard-gain``).

    python -m benchmarks.teacher_verdict --data D --original O --shards S
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import print_table
from e2urec.checkpoints.folders import load_model, read_meta
from e2urec.checkpoints.scorers import ModelScorer, load_scorer
from e2urec.data.samples import read_split, subsample, unplanted
from e2urec.evaluation.metrics import utility
from e2urec.evaluation.predict import predict
from e2urec.evaluation.verdict import GroupScores, VerdictOptions, summary, verdict
from e2urec.training.losses import calibrate_alpha, decision_loss
from e2urec.training.shards import shard_assignment

# Rows the bench's evaluation scores of the audit split (evaluate(max_samples=400)).
AUDIT_ROWS = 400


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a prepared folder with user shards")
    parser.add_argument("--original", required=True, help="the Original's model folder")
    parser.add_argument("--shards", required=True, help="a user-sharded ensemble trained on "
                        "the data (a receraser run's initial/, a bench's user-shards stage's "
                        "ensemble/, or a store's teacher/)")
    args = parser.parse_args(argv)
    data = Path(args.data)
    forget = unplanted(read_split(data, "forget"))
    audit = subsample(read_split(data, "audit"), AUDIT_ROWS)
    _, assign = shard_assignment(data, "user_balanced")
    holder = np.array([assign(row) for row in forget])
    original = load_scorer(args.original)
    members = [ModelScorer(load_model(Path(args.shards) / m))
               for m in read_meta(args.shards)["members"]]
    on_forget = np.array([log_odds(m, forget) for m in members])
    held_out = masked_mean(on_forget, holder)
    own = on_forget[holder, np.arange(len(forget))]
    labels = np.array([int(r["label"]) for r in forget])
    z_original = log_odds(original, forget)
    audit_original = log_odds(original, audit)
    gain, alpha = shard_gain(z_original, own - held_out, labels,
                             probe_loss(original, read_split(data, "probe")))
    teachers = {"original": (z_original, audit_original),
                "shards": (held_out, audit_original),
                "shards, own audit": (held_out, np.array([log_odds(m, audit)
                                                          for m in members]).mean(0)),
                f"shard-gain (alpha {alpha:.2f})": (gain, audit_original)}
    rows = []
    for name, (on_rows, on_audit) in teachers.items():
        forgotten, outside = group(forget, on_rows), group(audit, on_audit)
        result = verdict(forgotten, outside, [], VerdictOptions())
        rows.append([name, f"{auc(forgotten):.3f}", f"{auc(outside):.3f}",
                     *(interval(result["measures"][m]) for m in ("ranking", "membership")),
                     summary(result)])
    print_table(["teacher", "forget AUC", "audit AUC", "ranking", "membership", "verdict"],
                rows)


def log_odds(scorer, rows: list[dict]) -> np.ndarray:
    """Each row's Yes-vs-No log-odds under a model."""
    p = np.clip(predict(scorer, rows, 64).p_yes, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def masked_mean(per_member: np.ndarray, holder: np.ndarray) -> np.ndarray:
    """Per row, the mean over the members that never held its user."""
    use = np.arange(len(per_member))[:, None] != holder[None, :]
    return (per_member * use).sum(0) / use.sum(0)


def probe_loss(scorer, probe: list[dict]) -> float:
    labels = torch.tensor([int(r["label"]) for r in probe])
    return float(decision_loss(torch.tensor(log_odds(scorer, probe)), labels))


def shard_gain(z: np.ndarray, gain: np.ndarray, labels: np.ndarray, target: float
               ) -> tuple[np.ndarray, float]:
    """The shard-gain teacher's log-odds at its calibrated alpha, and that alpha."""
    sign = labels * 2 - 1
    shift = np.maximum(sign * gain, 0) * sign  # only ever away from the label
    alpha = calibrate_alpha(torch.tensor(z), torch.tensor(shift), torch.tensor(labels),
                            target, 32.0)
    return z - alpha * shift, alpha


def group(rows: list[dict], z: np.ndarray) -> GroupScores:
    labels = np.array([int(r["label"]) for r in rows])
    p = 1 / (1 + np.exp(-z))
    return GroupScores(np.array([r["user_id"] for r in rows]), labels, p,
                       -np.log(np.where(labels == 1, p, 1 - p)))


def auc(scores: GroupScores) -> float:
    return utility(scores.labels, scores.p_yes)["auc"]


def interval(measure: dict) -> str:
    return f"{measure['value']:+.3f} [{measure['low']:+.3f}, {measure['high']:+.3f}]"


if __name__ == "__main__":
    main()
