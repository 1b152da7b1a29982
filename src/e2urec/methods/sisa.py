"""SISA: K random shards, one model each, logits averaged; unlearning retrains
only the shards that hold forgotten samples."""

from __future__ import annotations

from dataclasses import dataclass

from e2urec.methods.base import register
from e2urec.methods.shards import ShardEnsembleMethod


@dataclass
class SisaOptions:
    initial: str | None = None  # an initial ensemble folder; trained (untimed) when absent


@register
class Sisa(ShardEnsembleMethod):
    name = "sisa"
    Options = SisaOptions
    scheme = "sisa"
