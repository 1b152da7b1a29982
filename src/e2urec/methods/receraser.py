"""RecEraser: user-balanced shards (a user never spans two) and a learned attention
aggregator; unlearning retrains the affected shards and the aggregator.

``slices: R`` slices each shard in time as SISA does (see ``sisa``); a user then
lives in one slice of one shard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from e2urec.checkpoints.folders import load_model
from e2urec.checkpoints.scorers import AttentionAggregator, EnsembleScorer
from e2urec.config import option
from e2urec.data.samples import subsample
from e2urec.methods.ensemble_base import ShardEnsembleUnlearner, ShardOptions
from e2urec.methods.registry import register


@dataclass
class RecEraserOptions(ShardOptions):
    aggregator_epochs: int = option(30, help="passes of the aggregator over its samples")
    aggregator_lr: float = option(1e-2, help="Adam learning rate of the aggregator")
    aggregator_hidden: int = option(16, help="hidden size of the attention aggregator")
    aggregator_max_samples: int | None = option(2000, help="fit the aggregator on at most "
                                                "this many samples")
    seed: int = option(42, help="seed of the aggregator's samples and initialisation")


@register
class RecEraser(ShardEnsembleUnlearner):
    name = "receraser"
    seed_option = ("seed",)
    Options = RecEraserOptions
    scheme = "user_balanced"

    def aggregate(self, members: list[Path], rows: list[dict]) -> AttentionAggregator:
        """Fit the attention weights on the members' Yes/No logits for (a subset of) ``rows``."""
        opts = self.options
        rows = subsample(rows, opts.aggregator_max_samples, opts.seed)
        device = self.ctx.accelerator.device
        scorer = EnsembleScorer([load_model(m) for m in members]).to(device).eval()
        features, labels = [], []
        with torch.no_grad():
            for batch in scorer.encoder().batches(rows, 64):
                batch = {k: v.to(device) for k, v in batch.items()}
                features.append(scorer.member_yes_no(scorer.member_logits(batch)).cpu())
                labels.append(batch["labels"].cpu())
        yes_no, target = torch.cat(features), torch.cat(labels)
        torch.manual_seed(opts.seed)
        aggregator = AttentionAggregator(len(members), opts.aggregator_hidden)
        optimizer = torch.optim.Adam(aggregator.parameters(), lr=opts.aggregator_lr)
        for _ in range(opts.aggregator_epochs):
            for chunk in torch.randperm(len(target)).split(256):
                weights = aggregator.weights(yes_no[chunk])
                combined = (weights.unsqueeze(-1) * yes_no[chunk]).sum(1)
                loss = F.cross_entropy(combined, target[chunk])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return aggregator.eval()
