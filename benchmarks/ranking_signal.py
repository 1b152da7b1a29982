"""How much of the most-rated list a model's ranking follows, and how far the liked
movie stands out from the unrated ones in popularity: why a model does or does
not beat popularity.

    python benchmarks/ranking_signal.py --data runs/demo-seeds/stages/data-15da7f5ff3e0/data \
        --models runs/negs-tt/original-0.0,runs/negs-tt2/original-0.5 --positives 100

The first lines give, on the ranking task's candidates (one liked test movie
and ``--negatives`` unrated ones a positive), how often the liked movie and
the other candidates were rated in the training rows, and the share never
rated there. Per model the table gives the mean P(yes) of the liked movie and
of the others, the mean Spearman correlation (a positive's candidates) of the
model's scores with those counts, and HR@10 / NDCG@10 beside popularity's; then
the most-rated list with its ties ordered by the model (what the model knows that
the count does not), beside the same list with its ties ordered at random.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, scorers_of

from e2urec.data.samples import read_manifest
from e2urec.evaluation.ranking import (
    candidate_groups,
    candidate_scores,
    popularity_scores,
    rank_metrics,
)


def popularity_following(scores: np.ndarray, counts: np.ndarray) -> float:
    """Mean over positives of the Spearman correlation of scores with training counts
    (a positive whose model scores are all equal counts as 0: it follows nothing)."""
    rhos = []
    for row_scores, row_counts in zip(scores, counts, strict=True):
        same = np.ptp(row_scores) == 0 or np.ptp(row_counts) == 0
        rhos.append(0.0 if same else float(spearmanr(row_scores, row_counts)[0]))
    return float(np.mean(rhos))


def random_ties(counts: np.ndarray, draws: int = 20) -> dict[str, float]:
    """The most-rated list with its ties ordered at random, averaged over ``draws``: what
    a tie-break that knows nothing gives."""
    rng = np.random.default_rng(0)
    metrics = [rank_metrics(counts + rng.random(counts.shape) * (1.0 - 1e-9))
               for _ in range(draws)]
    return {key: float(np.mean([m[key] for m in metrics])) for key in ("hr@10", "ndcg@10")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a prepared folder with a catalogue")
    parser.add_argument("--models", required=True,
                        help="comma-separated model folders, or a pretrained backbone as it "
                        "is (smollm2-135m)")
    parser.add_argument("--positives", type=int, default=100, help="liked test samples")
    parser.add_argument("--negatives", type=int, default=99,
                        help="unrated movies each liked one is ranked against")
    args = parser.parse_args(argv)
    read_manifest(args.data)
    models = scorers_of(args.models)
    groups = candidate_groups(args.data, args.negatives, args.positives)
    if groups is None:
        raise SystemExit(f"{args.data} has no catalogue to rank from")
    counts = popularity_scores(args.data, groups)
    print(f"{len(groups)} liked test rows x {counts.shape[1]} candidates; training-row "
          f"ratings a movie: liked {counts[:, 0].mean():.2f}, others "
          f"{counts[:, 1:].mean():.2f}; never rated there: liked "
          f"{(counts[:, 0] == 0).mean():.0%}, others {(counts[:, 1:] == 0).mean():.0%}")
    baseline = rank_metrics(counts)
    rows = []
    for folder, scorer in models:
        scores = candidate_scores(scorer, groups)
        ranked = rank_metrics(scores)
        # P(yes) < 1 orders only the movies rated equally often: what the model knows
        # that the count does not.
        tie_broken = rank_metrics(counts + np.clip(scores, 0.0, 1.0 - 1e-9))
        rows.append([folder, f"{scores[:, 0].mean():.3f}", f"{scores[:, 1:].mean():.3f}",
                     f"{popularity_following(scores, counts):.2f}",
                     f"{ranked['hr@10']:.3f}", f"{ranked['ndcg@10']:.3f}",
                     f"{tie_broken['hr@10']:.3f}", f"{tie_broken['ndcg@10']:.3f}"])
    rows.append(["popularity", "-", "-", "1.00", f"{baseline['hr@10']:.3f}",
                 f"{baseline['ndcg@10']:.3f}", "-", "-"])
    at_random = random_ties(counts)
    rows.append(["popularity, ties at random (20 draws)", "-", "-", "1.00", "-", "-",
                 f"{at_random['hr@10']:.3f}", f"{at_random['ndcg@10']:.3f}"])
    print_table(["model", "P(yes) liked", "P(yes) others", "Spearman with counts",
                 "HR@10", "NDCG@10", "HR@10 ties by model", "NDCG@10 ties by model"], rows)


if __name__ == "__main__":
    main()
