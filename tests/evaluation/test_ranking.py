"""Ranking: a shared prefix read once gives the scores of every prompt read whole."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from e2urec.checkpoints.folders import load_model
from e2urec.checkpoints.scorers import (
    AttentionAggregator,
    EnsembleScorer,
    ModelScorer,
    load_scorer,
)
from e2urec.config import LoraConfig
from e2urec.data.samples import read_split
from e2urec.evaluation.predict import predict, predict_groups
from e2urec.evaluation.ranking import (
    candidate_groups,
    candidate_scores,
    popularity,
    popularity_scores,
    rank_metrics,
)
from e2urec.training.loop import add_lora


def test_rank_metrics_count_ties_against_the_liked_movie():
    scores = np.array([[0.9, 0.1, 0.2],    # first of 3: hit, NDCG 1
                       [0.5, 0.5, 0.1],    # tied with one: rank 1
                       [0.1, 0.9, 0.8]])   # last: rank 2
    got = rank_metrics(scores, k=2)
    assert got["hr@2"] == pytest.approx(2 / 3)
    assert got["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 3)
    assert (got["positives"], got["candidates"]) == (3, 3)


def test_shared_prefix_scores_equal_whole_prompt_scores(original_dir, prepared_dir):
    groups = candidate_groups(prepared_dir, negatives=15, max_positives=6)
    assert groups and all(len(g) == 16 for g in groups)
    scorer = load_scorer(original_dir)
    whole = candidate_scores(scorer, groups, batch_size=7, shared_prefix=False)
    shared = candidate_scores(scorer, groups, batch_size=5, shared_prefix=True)
    assert whole.shape == shared.shape == (len(groups), 16)
    assert np.abs(whole - shared).max() < 1e-5
    assert rank_metrics(whole) == rank_metrics(shared)
    assert whole.std() > 1e-4  # the model tells the candidates apart


def test_a_prompt_split_at_its_shared_prefix_reads_the_tokens_it_reads_whole(
        original_dir, prepared_dir):
    scorer = load_scorer(original_dir)
    encoder = scorer.encoder()
    if encoder.family != "causal":
        with pytest.raises(ValueError, match="causal"):
            encoder.split_prefix(candidate_groups(prepared_dir, 3, 1)[0])
        return
    for group in candidate_groups(prepared_dir, negatives=15, max_positives=4):
        prefix, tails = encoder.split_prefix(group)
        whole = encoder.encode(group)
        assert prefix.shape[1] > len(max(tails, key=lambda t: len(t["prompt"]))["prompt"])
        for tail, row in zip(tails, whole, strict=True):
            assert tail["prompt"] and prefix[0].tolist() + tail["prompt"] == row["prompt"]
            assert tail["answer"] == row["answer"] and tail["label"] == row["label"]


def test_prompts_cut_to_the_token_limit_still_score_as_whole(original_dir, prepared_dir):
    # Cut from the left, prompts of different lengths lose different history, so
    # the split falls back to the tokens the cut prompts share.
    scorer = load_scorer(original_dir)
    if scorer.encoder().family != "causal":
        pytest.skip("seq2seq models score whole prompts")
    scorer.backbone = dataclasses.replace(scorer.backbone, max_prompt_tokens=40)
    group = candidate_groups(prepared_dir, negatives=15, max_positives=1)[0]
    prefix, tails = scorer.encoder().split_prefix(group)
    assert prefix.shape[1] + max(len(t["prompt"]) for t in tails) <= 40
    shared = predict_groups(scorer, [group], batch_size=4)[0]
    assert np.abs(shared - predict(scorer, group).p_yes).max() < 1e-5


def test_an_adapter_over_a_base_reads_the_prefix_as_the_whole_prompt(original_dir,
                                                                      prepared_dir):
    backbone = add_lora(load_model(original_dir), LoraConfig(r=4, targets=["all-linear"]))
    with torch.no_grad():  # a trained adapter: its B matrices are not zero
        for name, p in backbone.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.05 * torch.randn_like(p))
    scorer = ModelScorer(backbone)
    groups = candidate_groups(prepared_dir, negatives=9, max_positives=3)
    whole = candidate_scores(scorer, groups, shared_prefix=False)
    assert np.abs(whole - candidate_scores(scorer, groups)).max() < 1e-5
    assert np.abs(whole - candidate_scores(load_scorer(original_dir), groups)).max() > 1e-4


def test_an_ensemble_reads_the_prefix_once_per_member(original_dir, prepared_dir):
    members = [load_model(original_dir), load_model(original_dir)]
    with torch.no_grad():
        for p in members[1].model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    aggregator = AttentionAggregator(2)
    ensemble = EnsembleScorer(members, aggregator)
    groups = candidate_groups(prepared_dir, negatives=9, max_positives=3)
    whole = candidate_scores(ensemble, groups, shared_prefix=False)
    assert np.abs(whole - candidate_scores(ensemble, groups)).max() < 1e-5
    # Each member matters: the ensemble is not its first member.
    assert np.abs(whole - candidate_scores(load_scorer(original_dir), groups)).max() > 1e-4


def test_popularity_ranks_the_same_candidates_by_their_training_rows(prepared_dir):
    groups = candidate_groups(prepared_dir, negatives=15, max_positives=6)
    scores = popularity_scores(prepared_dir, groups)
    train = [row["item_id"] for row in read_split(prepared_dir, "train")]
    assert scores.tolist() == [[train.count(c["item_id"]) for c in group] for group in groups]
    assert scores.max() > 0
    assert popularity(prepared_dir, negatives=15, max_positives=6) == rank_metrics(scores)
