"""SISA: K random shards, one model each, logits averaged; unlearning retrains
only the shards that hold forgotten samples."""

from __future__ import annotations

from dataclasses import dataclass

from e2urec.config import option
from e2urec.methods.base import ShardEnsembleUnlearner, register


@dataclass
class SisaOptions:
    initial: str | None = option(None, help="an initial ensemble folder; trained (untimed) "
                                 "inside the output when absent")


@register
class Sisa(ShardEnsembleUnlearner):
    name = "sisa"
    Options = SisaOptions
    scheme = "sisa"
