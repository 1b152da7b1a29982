"""Ranking metrics: HR@K and NDCG@K of one liked movie among sampled unrated ones.

For a test sample the user liked, the same prompt is asked about ``negatives``
movies the user never rated (a seeded draw from the catalogue); the liked
movie's rank among the ``negatives + 1`` by P(yes) gives the hit rate and the
NDCG at ``k``. Ties count against the liked movie.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2urec.checkpoints.scorers import Scorer
from e2urec.data.catalog import read_catalog, swap_target
from e2urec.data.samples import read_split, subsample
from e2urec.evaluation.predict import predict


def ranking(scorer: Scorer, data_dir: str | Path, k: int = 10, negatives: int = 99,
            max_positives: int | None = 100, seed: int = 0, batch_size: int = 64,
            device: torch.device | None = None) -> dict[str, Any] | None:
    """HR@k and NDCG@k over the test split's liked samples; None without a catalogue."""
    catalog = read_catalog(data_dir)
    if catalog is None:
        return None
    liked = [r for r in read_split(data_dir, "test") if r["label"] == 1
             and r["user_id"] in catalog.users]
    liked = subsample(liked, max_positives, seed)
    if not liked:
        return None
    rng = np.random.default_rng(seed)
    rows = []
    for row in liked:
        title = catalog.titles[row["item_id"]]
        for item in [row["item_id"], *catalog.sample_unrated(row["user_id"], negatives, rng)]:
            rows.append({**row, "item_id": item,
                         "prompt": swap_target(row["prompt"], title, catalog.titles[item])})
    scores = predict(scorer, rows, batch_size, device=device).p_yes.reshape(len(liked), -1)
    # Rank of the liked movie (column 0): the candidates scoring at least as high.
    ranks = (scores[:, 1:] >= scores[:, :1]).sum(axis=1)
    hits = ranks < k
    ndcg = np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {f"hr@{k}": float(hits.mean()), f"ndcg@{k}": float(ndcg.mean()),
            "positives": len(liked), "candidates": scores.shape[1]}
