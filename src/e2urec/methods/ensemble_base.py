"""The family base of shard ensembles (SISA, RecEraser): retrain what held the users."""


from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from e2urec.backbones.registry import Backbone
from e2urec.checkpoints.folders import (
    META_FILE,
    read_meta,
    save_ensemble,
)
from e2urec.checkpoints.scorers import AttentionAggregator
from e2urec.config import (
    ConfigError,
    option,
)
from e2urec.methods.base import Unlearned, Unlearner
from e2urec.training.shards import (
    ShardTrainer,
    ensemble_params,
    retrain_affected,
    save_initial_ensemble,
    shard_assignment,
    split_by_shard,
)
from e2urec.training.slices import draw_slice_bounds, per_shard


@dataclass
class ShardOptions:
    """What every shard-ensemble method takes."""

    initial: str | None = option(None, help="an initial ensemble folder; trained (untimed) "
                                 "inside the output when absent")
    slices: int = option(1, help="slices in time per shard, each with a checkpoint (SISA); "
                         "a deletion retrains a shard from the slice that first held the "
                         "users (training/slices.py)")
    slice_data: Literal["own", "cumulative"] = option(
        "own", help="what slice r trains on: own, its own users' rows (a sliced shard costs "
        "what an unsliced one does); cumulative, every slice up to r (SISA's recipe)")
    slice_epochs: int | None = option(None, help="epochs a slice trains (default: "
                                      "train.epochs); fewer suit cumulative slices")
    lora_base: str | None = option(None, help="with train.use_lora: a model folder the shard "
                                   "adapters sit on, used where it lies (a store passes its "
                                   "own); default: a copy of the backbone inside the initial "
                                   "ensemble")


class ShardEnsembleUnlearner(Unlearner):
    """SISA-style unlearning; subclasses pick the shard ``scheme`` and may learn an aggregator."""

    scheme: ClassVar[str]  # how rows map to shards (training/shards.SCHEMES)
    needs_original = False
    serves_one_model = False
    exact = True

    @classmethod
    def scheme_for(cls, options: Any) -> str:
        """The shard scheme these options choose (the class's, unless an option picks)."""
        return cls.scheme

    def aggregate(self, members: list[Path], rows: list[dict]) -> AttentionAggregator | None:
        """The aggregator over ``members`` fitted on ``rows``; None averages logits."""
        return None

    def initial_dir(self) -> Path:
        """Where the initial ensemble lives: the ``initial`` option, else inside the output."""
        return Path(self.options.initial) if self.options.initial else self.ctx.out_dir / "initial"

    def trainer(self, root: Path, slice_bounds: list[list[int]]) -> ShardTrainer:
        ctx, opts = self.ctx, self.options
        base = Path(opts.lora_base) if opts.lora_base else None
        return ShardTrainer(ctx.data_dir, ctx.backbone, ctx.train, ctx.accelerator, root,
                            slice_bounds, base, opts.slice_data, opts.slice_epochs)

    def setup(self) -> None:
        folder = self.initial_dir()
        if (folder / META_FILE).is_file():
            self.slice_bounds(folder)  # a slices option the folder does not match fails here
            return
        if self.options.initial:
            raise FileNotFoundError(f"initial ensemble folder {folder} holds no ensemble")
        self.build_initial(folder)

    def build_initial(self, folder: Path, bounds: list[list[int]] | None = None) -> None:
        """Train the ensemble on all of train into ``folder`` (before any request).

        Each shard's slice bounds are drawn here, once, on its own rows (so its slices
        hold about equal rows), unless given (a rebuild passes the recorded ones), and
        recorded: a user's slice never moves after.
        """
        scheme = self.scheme_for(self.options)
        if bounds is None:
            k, assign = shard_assignment(self.ctx.data_dir, scheme)
            bounds = [draw_slice_bounds(part, self.options.slices)
                      for part in split_by_shard(self.ctx.rows("train"), k, assign)]
        save_initial_ensemble(self.trainer(folder, bounds), scheme, folder,
                              lambda members: self.aggregate(members, self.ctx.rows("train")),
                              meta={"method": self.name, "slices": self.options.slices,
                                    "slice_bounds": bounds})

    def slice_bounds(self, folder: Path) -> list[list[int]]:
        """The initial ensemble's recorded slice bounds per shard, checked against ``slices``."""
        meta = read_meta(folder)
        bounds = per_shard(meta.get("slice_bounds", []), len(meta["members"]))
        recorded = meta.get("slices", 1 + max(map(len, bounds), default=0))
        if recorded != self.options.slices:
            raise ConfigError(f"slices: {self.options.slices}, but the initial ensemble "
                              f"{folder} was trained with {recorded}")
        return bounds

    def unlearn(self, original: Backbone | None) -> Unlearned:
        folder = self.initial_dir()
        initial = [folder / m for m in read_meta(folder)["members"]]
        trainer = self.trainer(folder, self.slice_bounds(folder))
        members, retrained, trained = retrain_affected(
            trainer, self.scheme_for(self.options), initial, self.ctx.out_dir)
        aggregator = self.aggregate(members, self.ctx.rows("retain"))
        extra = sum(p.numel() for p in aggregator.parameters()) if aggregator else 0
        return Unlearned(record={"slice_bounds": trainer.slice_bounds,
            "members": members, "aggregator": aggregator, "retrained_shards": retrained,
            "trainable_params": trained + extra,
            "total_params": ensemble_params(members, aggregator), "shards": len(members),
            "shard_models": "lora" if self.ctx.train.use_lora else "full",
            "initial": str(folder)})

    def save(self, result: Unlearned) -> None:
        record = result.record
        save_ensemble(self.ctx.out_dir, record["members"], record["aggregator"],
                      meta={"method": self.name, "retrained_shards": record["retrained_shards"],
                            "scheme": self.scheme_for(self.options),
                            "slices": self.options.slices,
                            "slice_bounds": record["slice_bounds"]})

    def parameter_counts(self, result: Unlearned) -> tuple[int, int]:
        return result.record["trainable_params"], result.record["total_params"]
