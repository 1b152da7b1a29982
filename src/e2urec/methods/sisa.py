"""SISA: K random shards, one model each, logits averaged; unlearning retrains
only the shards that hold forgotten samples.

With ``shard_by: user`` a user's rows all live in one shard (the data's
user-balanced shards, as RecEraser's), so a one-user request retrains one shard
instead of every shard that drew one of the user's rows.

With ``slices: R`` each shard trains slice by slice: its users are placed by
their first row in time (newer users in later slices, bounds drawn once and
recorded), slice r continues from slice r - 1's checkpoint over slice r's rows
for the training epochs (so a sliced shard costs what an unsliced one does),
and every checkpoint is kept; a deletion restarts a shard from the checkpoint
before the first slice that held the users.

With ``train.use_lora`` every shard, and every slice checkpoint, is a LoRA adapter on
one frozen base (a pretrained backbone, as APA's shards): a deletion retrains adapters
only, and the base never sees a user's row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from e2urec.config import option
from e2urec.methods.ensemble_base import ShardEnsembleUnlearner, ShardOptions
from e2urec.methods.registry import register


@dataclass
class SisaOptions(ShardOptions):
    shard_by: Literal["sample", "user"] = option(
        "sample", help="sample: the paper's random shards of rows; user: every user's rows "
        "in one shard (a one-user request retrains one shard)")


@register
class Sisa(ShardEnsembleUnlearner):
    name = "sisa"
    Options = SisaOptions
    scheme = "sisa"

    @classmethod
    def scheme_for(cls, options: Any) -> str:
        return "user_balanced" if options.shard_by == "user" else "sisa"
