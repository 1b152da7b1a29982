"""The unlearning-method interface, its registry and the run record every method writes.

A method is one class in one module of this package: it declares its options
as a dataclass, and ``unlearn`` does the work inside ``self.timed()`` (the
unlearning step alone, loading excluded) and saves a model folder to
``ctx.out_dir``. Registering takes the ``@register`` decorator, nothing more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import resource
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import Accelerator

from e2urec.config import BackboneConfig, ConfigError, TrainConfig, from_dict, to_dict
from e2urec.data.samples import read_manifest, read_split
from e2urec.fileio import atomic_write_text
from e2urec.training.checkpoints import library_versions

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


class Unlearner(ABC):
    """One unlearning method. Subclasses set ``name`` and ``Options`` and implement ``unlearn``."""

    name: ClassVar[str]
    Options: ClassVar[type]
    needs_original: ClassVar[bool] = True

    def __init__(self, options: Any, ctx: UnlearnContext):
        self.options = options
        self.ctx = ctx
        self.seconds = 0.0

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Count the enclosed block as unlearning time (may be entered several times)."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - start

    @abstractmethod
    def unlearn(self) -> dict[str, Any]:
        """Unlearn, save the model to ``ctx.out_dir``; return record entries.

        The returned dict must hold ``trainable_params`` and ``total_params``.
        """


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


def peak_memory() -> dict[str, Any]:
    """Peak memory: CUDA allocations where a GPU ran, else the process's peak RSS."""
    if torch.cuda.is_available():
        return {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20,
                "peak_memory_kind": "cuda_max_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024
    return {"peak_memory_mb": rss_mb, "peak_memory_kind": "process_peak_rss"}


def run_method(name: str, data_dir: str | Path, original: str | Path | None,
               backbone: BackboneConfig, train: TrainConfig, options: dict[str, Any] | None,
               out_dir: str | Path, cpu: bool = False,
               accelerator: Accelerator | None = None) -> dict[str, Any]:
    """Run one method end to end and write its record beside its model."""
    method_cls = get_method(name)
    parsed = from_dict(method_cls.Options, options, f"method {name}")
    read_manifest(data_dir)
    if method_cls.needs_original and original is None:
        raise ConfigError(f"method {name!r} needs the Original model (--original)")
    if original is not None and not Path(original).exists():
        raise FileNotFoundError(f"Original model folder {original} does not exist")
    ctx = UnlearnContext(Path(data_dir), Path(original) if original else None, backbone, train,
                         Path(out_dir), accelerator or Accelerator(cpu=cpu))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    method = method_cls(parsed, ctx)
    extra = method.unlearn()
    record = {
        "method": name, "unlearn_seconds": method.seconds,
        "trainable_share": extra["trainable_params"] / max(extra["total_params"], 1),
        **extra, **peak_memory(),
        "options": to_dict(parsed), "train": to_dict(train), "backbone": to_dict(backbone),
        "data": str(data_dir), "original": str(original) if original else None,
        "device": str(ctx.accelerator.device), "num_processes": ctx.accelerator.num_processes,
        "versions": library_versions(),
    }
    if ctx.accelerator.is_main_process:
        atomic_write_text(Path(out_dir) / RECORD_FILE,
                          json.dumps(record, indent=2, default=str) + "\n")
    return record
