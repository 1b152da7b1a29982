"""Ranking metrics: HR@K and NDCG@K of one liked movie among sampled unrated ones.

For a test sample the user liked, the same prompt is asked about ``negatives``
movies the user never rated (a seeded draw from the catalogue); the liked
movie's rank among the ``negatives + 1`` by P(yes) gives the hit rate and the
NDCG at ``k``. Ties count against the liked movie.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2urec.checkpoints.scorers import Scorer
from e2urec.data.catalog import read_catalog, swap_target
from e2urec.data.samples import read_split, subsample
from e2urec.evaluation.predict import predict, predict_groups


def candidate_groups(data_dir: str | Path, negatives: int = 99,
                     max_positives: int | None = 100, seed: int = 0
                     ) -> list[list[dict[str, Any]]] | None:
    """For each liked test sample (a seeded subset), its prompt asked about the liked
    movie first and then about ``negatives`` unrated ones; None without a catalogue."""
    catalog = read_catalog(data_dir)
    if catalog is None:
        return None
    liked = [r for r in read_split(data_dir, "test") if r["label"] == 1
             and r["user_id"] in catalog.users]
    liked = subsample(liked, max_positives, seed)
    rng = np.random.default_rng(seed)
    groups = []
    for row in liked:
        title = catalog.titles[row["item_id"]]
        items = [row["item_id"], *catalog.sample_unrated(row["user_id"], negatives, rng)]
        groups.append([{**row, "item_id": item,
                        "prompt": swap_target(row["prompt"], title, catalog.titles[item])}
                       for item in items])
    return groups or None


def candidate_scores(scorer: Scorer, groups: list[list[dict[str, Any]]],
                     batch_size: int = 32, device: torch.device | None = None,
                     shared_prefix: bool = True) -> np.ndarray:
    """``[positives, candidates]`` P(yes). With ``shared_prefix`` a causal model reads
    each positive's prompt once for all its candidates; without, every prompt whole."""
    if shared_prefix:
        return np.stack(predict_groups(scorer, groups, batch_size, device=device))
    flat = [candidate for group in groups for candidate in group]
    return predict(scorer, flat, batch_size, device=device).p_yes.reshape(len(groups), -1)


def rank_metrics(scores: np.ndarray, k: int = 10) -> dict[str, Any]:
    """HR@k and NDCG@k of column 0 (the liked movie) among each row's candidates."""
    # Rank of the liked movie: the candidates scoring at least as high.
    ranks = (scores[:, 1:] >= scores[:, :1]).sum(axis=1)
    hits = ranks < k
    ndcg = np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {f"hr@{k}": float(hits.mean()), f"ndcg@{k}": float(ndcg.mean()),
            "positives": int(scores.shape[0]), "candidates": int(scores.shape[1])}


def popularity_scores(data_dir: str | Path, groups: list[list[dict[str, Any]]]
                      ) -> np.ndarray:
    """``[positives, candidates]`` of how often each candidate was rated in the training
    rows: the most-rated list, the baseline a recommender must beat (no model)."""
    counts = Counter(row["item_id"] for row in read_split(data_dir, "train"))
    return np.array([[counts[c["item_id"]] for c in group] for group in groups], dtype=float)


def popularity(data_dir: str | Path, k: int = 10, negatives: int = 99,
               max_positives: int | None = 100, seed: int = 0) -> dict[str, Any] | None:
    """:func:`ranking`'s metrics on the same candidates, ranked by :func:`popularity_scores`
    (a tie with the liked movie counts against it, as for a model)."""
    groups = candidate_groups(data_dir, negatives, max_positives, seed)
    if groups is None:
        return None
    return rank_metrics(popularity_scores(data_dir, groups), k)


def ranking(scorer: Scorer, data_dir: str | Path, k: int = 10, negatives: int = 99,
            max_positives: int | None = 100, seed: int = 0, batch_size: int = 32,
            device: torch.device | None = None) -> dict[str, Any] | None:
    """HR@k and NDCG@k over the test split's liked samples; None without a catalogue."""
    groups = candidate_groups(data_dir, negatives, max_positives, seed)
    if groups is None:
        return None
    return rank_metrics(candidate_scores(scorer, groups, batch_size, device), k)
