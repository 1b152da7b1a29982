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

import contextlib
import dataclasses
import resource
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from e2urec.backbones.registry import Backbone
from e2urec.checkpoints.folders import (
    META_FILE,
    check_model_folder,
    library_versions,
    load_model,
    read_meta,
    save_ensemble,
    save_model,
)
from e2urec.checkpoints.scorers import AttentionAggregator
from e2urec.config import (
    BackboneConfig,
    ConfigError,
    TrainConfig,
    from_dict,
    merge_dicts,
    option,
    to_dict,
)
from e2urec.data.samples import read_manifest, read_split
from e2urec.fileio import check_output, write_json
from e2urec.training.loop import loader, make_accelerator, resolve_lora_targets
from e2urec.training.shards import (
    ShardTrainer,
    affected_shards,
    ensemble_params,
    retrain_affected,
    save_initial_ensemble,
    shard_assignment,
    split_by_shard,
)
from e2urec.training.slices import draw_slice_bounds, per_shard
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


REGISTRY: dict[str, type[Unlearner]] = {}


def register(cls: type[Unlearner]) -> type[Unlearner]:
    """Class decorator: make a method available by its ``name``."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise TypeError(f"{cls.__name__} needs a string `name`")
    if name in REGISTRY and REGISTRY[name] is not cls:
        raise ValueError(f"two methods are named {name!r}")
    if not dataclasses.is_dataclass(getattr(cls, "Options", None)):
        raise TypeError(f"{cls.__name__}.Options must be a dataclass")
    REGISTRY[name] = cls
    return cls


def get_method(name: str) -> type[Unlearner]:
    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


class PeakMemory:
    """Peak memory of one stretch of work: CUDA allocations, or resident memory on Linux.

    On Linux the kernel's resident high-water mark is reset at the start
    (``/proc/self/clear_refs``), so a method's peak is its own, not the
    process's peak so far. Elsewhere the process's peak RSS is reported, and
    its kind says so.
    """

    CLEAR = Path("/proc/self/clear_refs")
    STATUS = Path("/proc/self/status")

    def start(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with contextlib.suppress(OSError):
            self.CLEAR.write_text("5")

    def read(self) -> dict[str, Any]:
        if torch.cuda.is_available():
            return {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20,
                    "peak_memory_kind": "cuda_max_allocated"}
        with contextlib.suppress(OSError, StopIteration, ValueError):
            line = next(x for x in self.STATUS.read_text().splitlines()
                        if x.startswith("VmHWM:"))
            return {"peak_memory_mb": int(line.split()[1]) / 1024,
                    "peak_memory_kind": "rss_high_water_mark"}
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024
        return {"peak_memory_mb": rss_mb, "peak_memory_kind": "process_peak_rss"}


@contextlib.contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """Wall seconds of the block (after the device's queued work is done)."""
    result = {"seconds": 0.0}
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        yield result
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        result["seconds"] = time.perf_counter() - start


def parse_options(name: str, options: dict[str, Any] | None, where: str = "") -> Any:
    """A method's options, typed; ``preset: NAME`` starts from one of its presets."""
    method_cls = get_method(name)
    options = dict(options or {})
    preset = options.pop("preset", None)
    if preset is not None:
        if preset not in method_cls.presets:
            known = ", ".join(sorted(method_cls.presets)) or "none"
            raise ConfigError(f"{where or 'method ' + name}: unknown preset {preset!r} "
                              f"(presets of {name}: {known})")
        options = merge_dicts(method_cls.presets[preset], options)
    return from_dict(method_cls.Options, options, where or f"method {name}")


def check_method_inputs(name: str, data_dir: str | Path, original: str | Path | None,
                        options: dict[str, Any] | None, out_dir: str | Path,
                        overwrite: bool = False) -> tuple[type[Unlearner], Any]:
    """Every check that can fail before work: method, options, data, Original, output."""
    method_cls = get_method(name)
    parsed = parse_options(name, options)
    read_manifest(data_dir)
    if method_cls.needs_original and original is None:
        raise ConfigError(f"method {name!r} needs the Original model (--original)")
    if original is not None:
        check_model_folder(original)
    check_output(out_dir, META_FILE, overwrite)
    return method_cls, parsed


def original_lr(original: Path | None, train: TrainConfig) -> dict[str, Any]:
    """The lr the Original was trained at: from its model folder, else the training config."""
    recorded = ((read_meta(original).get("train_record") or {}).get("train") or {}).get("lr") \
        if original is not None else None
    if recorded:
        return {"lr": float(recorded), "from": "the Original's training record"}
    return {"lr": train.lr, "from": "train.lr (the Original's folder records no training)"}


def with_resolved_lr(options: Any, original: Path | None, train: TrainConfig
                     ) -> tuple[Any, dict[str, Any] | None]:
    """``options`` with ``schedule.lr`` set from ``lr_scale`` where no absolute lr is given,
    and the base it was scaled from (None for a method that takes no unlearning steps)."""
    schedule = getattr(options, "schedule", None)
    if schedule is None:
        return options, None
    base = original_lr(original, train)
    if schedule.lr is None:
        schedule = dataclasses.replace(schedule, lr=schedule.lr_scale * base["lr"])
    return dataclasses.replace(options, schedule=schedule), base


def run_method(name: str, data_dir: str | Path, original: str | Path | None,
               backbone: BackboneConfig, train: TrainConfig, options: dict[str, Any] | None,
               out_dir: str | Path, cpu: bool = False, accelerator: Accelerator | None = None,
               overwrite: bool = False) -> dict[str, Any]:
    """Run one method end to end and write its record beside its model."""
    method_cls, parsed = check_method_inputs(name, data_dir, original, options, out_dir,
                                             overwrite)
    ctx = UnlearnContext(Path(data_dir), Path(original) if original else None, backbone, train,
                         Path(out_dir), accelerator or make_accelerator(cpu=cpu))
    parsed, lr_base = with_resolved_lr(parsed, ctx.original_dir, train)
    method = method_cls(parsed, ctx)
    method.setup()
    loaded = method.load_original()
    lora = getattr(parsed, "lora", None)
    if loaded is not None and lora is not None:
        # A LoRA target this architecture lacks fails here, before any training.
        resolve_lora_targets(loaded.model, lora.targets)
    # Everything a method draws (adapter init, dropout) follows from its seed alone, not
    # from what ran earlier in the process: two runs give the same bytes.
    set_seed(method_cls.seed_of(parsed, train))
    memory = PeakMemory()
    memory.start()
    with stopwatch() as clock:
        result = method.unlearn(loaded)
        if ctx.accelerator.is_main_process:
            method.save(result)
        ctx.accelerator.wait_for_everyone()
    trainable, total = method.parameter_counts(result)
    extra = {k: v for k, v in result.record.items() if k not in ("members", "aggregator")}
    record = {
        "method": name, "unlearn_seconds": clock["seconds"],
        "timing": "from the Original loaded to the result saved",
        **extra, "trainable_params": trainable, "total_params": total,
        "trainable_share": trainable / max(total, 1), **memory.read(),
        "options": to_dict(parsed), "preset": (options or {}).get("preset"),
        "lr_base": lr_base,
        "train": to_dict(train), "backbone": to_dict(backbone),
        "data": str(Path(data_dir).resolve()),
        "original": str(Path(original).resolve()) if original else None,
        "device": str(ctx.accelerator.device), "num_processes": ctx.accelerator.num_processes,
        "torch_threads": torch.get_num_threads(), "versions": library_versions(),
    }
    if ctx.accelerator.is_main_process:
        write_json(Path(out_dir) / RECORD_FILE, record)
    return record


__all__ = ["FullCopyUnlearner", "REGISTRY", "RECORD_FILE", "ShardEnsembleUnlearner",
           "UnlearnContext", "Unlearned", "Unlearner", "affected_shards", "get_method",
           "register", "run_method"]
