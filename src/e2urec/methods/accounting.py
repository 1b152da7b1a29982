"""What a run costs: peak memory (GPU or process) and a stopwatch."""


from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


class PeakMemory:
    """Peak memory of one stretch of work: CUDA allocations, or resident memory on Linux.

    On Linux the kernel's resident high-water mark is reset at the start
    (``/proc/self/clear_refs``), so a method's peak is its own, not the
    process's peak so far. Elsewhere the process's peak RSS is reported, and
    its kind says so.
    """

    CLEAR = Path("/proc/self/clear_refs")
    STATUS = Path("/proc/self/status")
    peak_mb: float = float("nan")  # after a ``with`` block: its peak

    def __enter__(self) -> PeakMemory:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_mb = self.read()["peak_memory_mb"]

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


class Phases(dict):
    """Seconds spent per named phase of a run (``with phases.timed(name):``), summed over
    the phase's spans; a plain dict for the record."""

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start
