"""Ranking evaluation: every candidate prompt scored whole against each positive's
shared prefix read once, side by side in one run on the same candidates.

    python -m benchmarks.ranking_speed --data runs/demo/stages/data-*/data \
        --models runs/demo/stages/original-*/model,runs/demo/stages/method-sisa-*/model
    python -m benchmarks.ranking_speed --data DATA --models smollm2-135m \
        --positives 3 --negatives 19

For each model the table gives the seconds of both ways, their ratio, the
largest difference in P(yes) over all candidates, and HR@10 / NDCG@10 of
both (equal unless a difference flips a tie). The last line is the smallest
ratio: ``ranking speed-up: X``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import device_of, print_table, scorers_of
from e2urec.data.samples import read_manifest
from e2urec.evaluation.ranking import candidate_groups, candidate_scores, rank_metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a prepared folder with a catalogue")
    parser.add_argument("--models", required=True, help="comma-separated model folders "
                        "(a model, an adapter or a shard ensemble), or a pretrained "
                        "backbone as it is (smollm2-135m, a local or hub folder)")
    parser.add_argument("--positives", type=int, default=100,
                        help="liked test samples")
    parser.add_argument("--negatives", type=int, default=99,
                        help="unrated movies each liked one is ranked against")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="rows a batch when every prompt is scored whole (the old way)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    read_manifest(args.data)
    models = scorers_of(args.models)
    device = device_of(args)
    groups = candidate_groups(args.data, args.negatives, args.positives)
    if groups is None:
        raise SystemExit(f"{args.data} has no catalogue to rank from")
    rows, ratios = [], []
    for folder, scorer in models:
        timed = {}
        for shared in (False, True):
            began = time.perf_counter()
            scores = candidate_scores(scorer, groups, args.batch_size if not shared else 32,
                                      device, shared_prefix=shared)
            if device.type == "cuda":
                torch.cuda.synchronize()
            timed[shared] = (time.perf_counter() - began, scores)
        (old_s, old), (new_s, new) = timed[False], timed[True]
        before, after = rank_metrics(old), rank_metrics(new)
        ratios.append(old_s / new_s)
        rows.append([folder, f"{old_s:.1f}", f"{new_s:.1f}", f"{old_s / new_s:.1f}x",
                     f"{np.abs(old - new).max():.1e}",
                     f"{before['hr@10']:.3f}/{after['hr@10']:.3f}",
                     f"{before['ndcg@10']:.3f}/{after['ndcg@10']:.3f}"])
    print(f"{len(groups)} positives x {len(groups[0])} candidates, torch threads "
          f"{torch.get_num_threads()}, {device}")
    print_table(["model", "whole s", "shared-prefix s", "speed-up", "max |dP|",
                 "HR@10 whole/shared", "NDCG@10 whole/shared"], rows)
    print(f"ranking speed-up: {min(ratios):.1f}")


if __name__ == "__main__":
    main()
