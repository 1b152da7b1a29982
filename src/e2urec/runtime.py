"""Process-wide settings a run records: torch's CPU thread count.

On a small machine the thread count matters more than anything else: two
busy processes with two threads each on two cores ran scoring 5x slower than
with one thread each. ``auto`` takes the cores that are not already busy.
"""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_threads() -> int:
    """The cores this process may use, less those other processes keep busy (1-min load)."""
    cores = available_cores()
    try:
        busy = round(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


def set_threads(requested: int | None) -> int:
    """Set torch's CPU threads (None: :func:`auto_threads`); return the number set."""
    threads = requested if requested else auto_threads()
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
