"""RecEraser: user-balanced shards (a user never spans two) and a learned attention
aggregator; unlearning retrains the affected shards and the aggregator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from e2urec.backbones.ensemble import AttentionAggregator, EnsembleScorer
from e2urec.backbones.scoring import yes_no_logits
from e2urec.evaluation.evaluate import subsample
from e2urec.evaluation.predict import batches
from e2urec.methods.base import register
from e2urec.methods.shards import ShardEnsembleMethod
from e2urec.training.checkpoints import load_model


@dataclass
class RecEraserOptions:
    initial: str | None = None
    aggregator_epochs: int = 30
    aggregator_lr: float = 1e-2
    aggregator_hidden: int = 16
    aggregator_max_samples: int | None = 2000
    seed: int = 42


@register
class RecEraser(ShardEnsembleMethod):
    name = "receraser"
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
            for batch in batches(scorer.encoder(), rows, 64):
                batch = {k: v.to(device) for k, v in batch.items()}
                member = scorer.member_logits(batch)
                features.append(torch.stack([yes_no_logits(member[:, k], scorer.tokens)
                                             for k in range(member.shape[1])], 1).cpu())
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
