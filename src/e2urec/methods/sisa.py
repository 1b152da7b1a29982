"""SISA: K random shards, one model each, logits averaged; unlearning retrains
only the shards that hold forgotten samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e2urec.methods.base import Unlearner, register
from e2urec.methods.shards import (
    ShardTrainer,
    ensemble_params,
    initial_ensemble,
    resolve_initial,
    retrain_affected,
    save_ensemble,
)


@dataclass
class SisaOptions:
    initial: str | None = None  # an initial ensemble folder; trained (untimed) when absent


@register
class Sisa(Unlearner):
    name = "sisa"
    Options = SisaOptions
    needs_original = False
    scheme = "sisa"

    def unlearn(self) -> dict[str, Any]:
        ctx = self.ctx
        initial_dir = resolve_initial(self.options.initial, ctx, self.name)
        trainer = ShardTrainer(ctx, initial_dir)
        initial = initial_ensemble(trainer, self.scheme, initial_dir)
        if not (initial_dir / "e2urec_model.json").is_file():
            save_ensemble(initial_dir, initial, meta={"method": self.name, "role": "initial"})
        with self.timed():
            members, retrained, trained = retrain_affected(
                ShardTrainer(ctx, initial_dir), self.scheme, initial, ctx.out_dir)
        save_ensemble(ctx.out_dir, members, meta={"method": self.name,
                                                  "retrained_shards": retrained})
        return {"trainable_params": trained, "total_params": ensemble_params(members),
                "retrained_shards": retrained, "shards": len(members),
                "shard_models": "lora" if ctx.train.use_lora else "full",
                "initial": str(initial_dir)}
