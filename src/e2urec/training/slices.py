"""Slices in time inside a shard: SISA's checkpoints, so that a deletion retrains a shard
only from the slice that first held the users.

A user sits in exactly one slice of a shard: the one whose time range holds the user's
first row there (newer users sit in later slices). The bounds between a shard's slices
are a setting, drawn once per shard when an ensemble is first built (so that its slices
hold about equal rows; each bound rounded down to the hour) and recorded with it, so a
user's slice depends on that user's rows alone, never on who else is in the data.

A shard trains slice by slice: slice r starts from the checkpoint after slice r - 1 and
passes over the rows of slice r's users (``slice_data: own``, so a sliced shard costs
what an unsliced one does) or of slices 0..r (``cumulative``, SISA's recipe) for the
slice's epochs. Each slice's checkpoint is kept in the
member folder (``slices/slice_<r>``; the last is the member itself). A deletion whose
users first appear in slice j restarts from checkpoint j - 1 and trains slices j and
later without them; the checkpoints before j never saw them and are copied as they are.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2urec.checkpoints.folders import copy_model_tree

SLICES_DIR = "slices"
HOUR = 3600


def draw_slice_bounds(rows: Sequence[dict[str, Any]], slices: int) -> list[int]:
    """``slices - 1`` time bounds that cut the users, ordered by their first row, into
    slices of about equal rows (one slice: no bounds)."""
    if slices < 1:
        raise ValueError(f"slices must be at least 1, got {slices}")
    first, count = first_times(rows), {}
    for row in rows:
        count[row["user_id"]] = count.get(row["user_id"], 0) + 1
    users = sorted(first, key=lambda u: (first[u], u))
    total, seen, bounds = len(rows), 0, []
    for user in users:
        if len(bounds) == slices - 1:
            break
        if seen >= total * (len(bounds) + 1) / slices:
            bounds.append(first[user] // HOUR * HOUR)
        seen += count[user]
    return bounds


def per_shard(bounds: Sequence[Any], shards: int) -> list[list[int]]:
    """Recorded slice bounds as one list a shard; an older ensemble recorded one list
    for all its shards."""
    if bounds and all(isinstance(b, list) for b in bounds):
        return [list(b) for b in bounds]
    return [list(bounds) for _ in range(shards)]


def first_times(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Each user's earliest row time."""
    first: dict[str, int] = {}
    for row in rows:
        user, time = row["user_id"], int(row["timestamp"])
        first[user] = min(first.get(user, time), time)
    return first


def split_by_slice(rows: Sequence[dict[str, Any]], bounds: Sequence[int]
                   ) -> list[list[dict[str, Any]]]:
    """The rows of each slice (a user's rows all go to the slice of their first row)."""
    slice_of = {u: bisect.bisect_right(bounds, t) for u, t in first_times(rows).items()}
    parts: list[list[dict[str, Any]]] = [[] for _ in range(len(bounds) + 1)]
    for row in rows:
        parts[slice_of[row["user_id"]]].append(row)
    return parts


def first_slice_of(users: set[str], rows: Sequence[dict[str, Any]],
                   bounds: Sequence[int]) -> int | None:
    """The earliest slice holding any of ``users`` among ``rows`` (None: none of them)."""
    held = [bisect.bisect_right(bounds, t) for u, t in first_times(rows).items() if u in users]
    return min(held) if held else None


def checkpoint_dir(member: Path, index: int) -> Path:
    """Where a member folder keeps its checkpoint after slice ``index``."""
    return Path(member) / SLICES_DIR / f"slice_{index}"


def copy_checkpoints(member: Path, target: Path, count: int) -> None:
    """Copy a member's first ``count`` slice checkpoints into ``target`` (a new member)."""
    for index in range(count):
        copy_model_tree(checkpoint_dir(member, index), checkpoint_dir(target, index))
