"""The unlearning-method interface, its registry, and the run every method shares.

A method is one class in one module of this package: its ``Options``
dataclass and ``unlearn(original)``, which returns the unlearned model. The
base does the rest, once for every method: checks before any work, loading
the Original, the timer, saving on the main process, parameter counts, peak
memory and the run record. One timing boundary for all: ``unlearn_seconds``
runs from "the Original is loaded" to "the result is saved".

Two bases cover families of methods: :class:`FullCopyUnlearner` (train every
weight of a copy of the Original with a stated loss and data) and
:class:`ShardEnsembleUnlearner` (retrain the shards that hold the forgotten
users).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from accelerate import Accelerator

from e2urec.backbones.registry import Backbone
from e2urec.checkpoints.folders import (
    load_model,
    save_model,
)
from e2urec.config import (
    BackboneConfig,
    TrainConfig,
)
from e2urec.data.samples import read_split
from e2urec.training.loop import loader
from e2urec.training.stop_rule import make_probe
from e2urec.training.unlearn_loop import LossFn, run_unlearning

RECORD_FILE = "unlearn_record.json"


@dataclass
class UnlearnContext:
    """Everything a method may read; it writes only below ``out_dir``."""

    data_dir: Path
    original_dir: Path | None
    backbone: BackboneConfig
    train: TrainConfig
    out_dir: Path
    accelerator: Accelerator

    def rows(self, split: str) -> list[dict[str, Any]]:
        return read_split(self.data_dir, split)


@dataclass
class Unlearned:
    """What ``unlearn`` returns: the model and what the record should say about it."""

    model: Backbone | None = None  # None for methods that save themselves (ensembles)
    base_dir: Path | None = None  # the folder an adapter sits on
    record: dict[str, Any] = field(default_factory=dict)  # goes into unlearn_record.json
    meta: dict[str, Any] = field(default_factory=dict)  # goes into the model's metadata


class Unlearner(ABC):
    """One unlearning method. Subclasses set ``name`` and ``Options`` and implement ``unlearn``."""

    name: ClassVar[str]
    Options: ClassVar[type]
    needs_original: ClassVar[bool] = True
    # Named sets of options (``preset: paper``); explicit options override them.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # Whether the result is one model (a store serves it) rather than a shard ensemble.
    serves_one_model: ClassVar[bool] = True
    # Whether the result never saw the forgotten rows (a model trained without them),
    # rather than a model that had them and was moved away from them.
    exact: ClassVar[bool] = False
    # Where the method's seed sits in its options (a path of field names); None: it has
    # none of its own and follows training's seed.
    seed_option: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def seed_of(cls, options: Any, train: TrainConfig) -> int:
        """The method's own seed in parsed ``options`` (else training's)."""
        if cls.seed_option is None:
            return train.seed
        for name in cls.seed_option:
            options = getattr(options, name)
        return options

    @classmethod
    def with_seed(cls, options: dict[str, Any], seed: int) -> dict[str, Any]:
        """Raw ``options`` with the method's seed set to ``seed`` (a copy)."""
        if cls.seed_option is None:
            return dict(options)
        *outer, last = cls.seed_option
        out = dict(options)
        level = out
        for name in outer:
            level[name] = dict(level.get(name) or {})
            level = level[name]
        level[last] = seed
        return out

    def __init__(self, options: Any, ctx: UnlearnContext):
        self.options = options
        self.ctx = ctx

    def setup(self) -> None:
        """Work that precedes any deletion request (untimed), e.g. an initial ensemble."""
        return None

    def load_original(self) -> Backbone | None:
        """The Original, merged into one plain model, ready to train."""
        if not self.needs_original:
            return None
        return load_model(self.ctx.original_dir, merged=True)

    @abstractmethod
    def unlearn(self, original: Backbone | None) -> Unlearned:
        """Make ``original`` forget ``ctx.rows("forget")``; return the result unsaved."""

    def save(self, result: Unlearned) -> None:
        """Write the result to ``ctx.out_dir`` (called on the main process only)."""
        save_model(result.model, self.ctx.out_dir, {"method": self.name, **result.meta},
                   base_dir=result.base_dir)

    def parameter_counts(self, result: Unlearned) -> tuple[int, int]:
        return result.model.parameter_counts()


class FullCopyUnlearner(Unlearner):
    """Trains every weight of a copy of the Original; a subclass states its loss and data."""

    seed_option = ("schedule", "seed")

    def forget_rows(self) -> list[dict[str, Any]]:
        return self.ctx.rows("forget")

    @abstractmethod
    def loss(self, student: Backbone) -> LossFn:
        """The loss over a forget batch and a retain batch (None in forget-only epochs)."""

    def unlearn(self, original: Backbone | None) -> Unlearned:
        student, schedule, stop = original, self.options.schedule, self.options.stop
        for param in student.model.parameters():
            param.requires_grad_(True)
        retain = self.ctx.rows("retain")
        # The stop rule reads the true forget rows (not a method's relabelled copy) and the
        # probe users' rows, never valid, test, audit or canary rows.
        probe = None if stop.kind == "none" else make_probe(
            student, self.ctx.rows("forget"), self.ctx.rows("probe"), stop.probe_size,
            schedule.seed)
        history = run_unlearning(
            student, loader(student, self.forget_rows(), schedule.batch_size, True, schedule.seed),
            loader(student, retain, schedule.batch_size, True, schedule.seed),
            self.loss(student), schedule, self.ctx.accelerator, stop, probe, desc=self.name)
        return Unlearned(student, record={"history": history})


__all__ = ["RECORD_FILE", "FullCopyUnlearner", "UnlearnContext", "Unlearned", "Unlearner"]
