"""Process-wide settings: torch's CPU thread count (a run records it), the device that
scores, quiet logs.

On a small machine the thread count matters more than anything else: two
busy processes with two threads each on two cores ran scoring 5x slower than
with one thread each. By default a run takes the cores that are idle when it
starts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_threads(window: float = 0.3) -> int:
    """The cores this process may use, less those other processes keep busy right now.

    Reads the machine's idle time over ``window`` seconds (``/proc/stat``); the
    1-minute load average, used where that is missing, lags by a minute.
    """
    cores = available_cores()
    idle = _idle_share(window)
    if idle is None:
        try:
            busy = round(os.getloadavg()[0])
        except OSError:
            busy = 0
        return max(1, min(cores, cores - busy))
    return max(1, min(cores, round(idle * (os.cpu_count() or cores))))


def _idle_share(window: float) -> float | None:
    """The share of all CPU time spent idle over ``window`` seconds, or None off Linux."""

    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            return None
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    first = sample()
    time.sleep(window)
    second = sample()
    if first is None or second is None or second[1] == first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1])


def set_threads(requested: int | None) -> int:
    """Set torch's CPU threads (None: :func:`auto_threads`); return the number set."""
    threads = requested if requested else auto_threads()
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def quiet_progress_bars() -> None:
    """No transformers progress bars (weight loading, saving) when stderr is not a terminal:
    logs of commands and studies keep only what they say themselves."""
    import sys

    from transformers.utils import logging

    if not sys.stderr.isatty():
        logging.disable_progress_bar()


def pick_device(name: str = "auto") -> torch.device:
    """The device a run scores on: ``auto`` (the GPU when there is one), ``cpu`` or ``cuda``
    (a ValueError when no GPU is visible)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is visible")
    return torch.device(name)
