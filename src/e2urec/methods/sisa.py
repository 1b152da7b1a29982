"""SISA: K random shards, one model each, logits averaged; unlearning retrains
only the shards that hold forgotten samples.

With ``slices: R`` each shard trains slice by slice: its users are placed by
their first row in time (newer users in later slices, bounds drawn once and
recorded), slice r continues from slice r - 1's checkpoint over slice r's rows
for the training epochs (so a sliced shard costs what an unsliced one does),
and every checkpoint is kept; a deletion restarts a shard from the checkpoint
before the first slice that held the users."""

from __future__ import annotations

from dataclasses import dataclass

from e2urec.methods.base import ShardEnsembleUnlearner, ShardOptions, register


@dataclass
class SisaOptions(ShardOptions):
    pass


@register
class Sisa(ShardEnsembleUnlearner):
    name = "sisa"
    Options = SisaOptions
    scheme = "sisa"
