"""Samples on disk: one JSON object a line, read back with line-numbered errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from e2urec.data.movielens import DataFormatError

REQUIRED_FIELDS = ("sample_id", "user_id", "item_id", "rating", "timestamp", "label",
                   "prompt", "answer")
SPLITS = ("train", "valid", "test", "forget", "retain", "probe", "audit", "canary")
OPTIONAL_SPLITS = ("probe", "audit", "canary")  # absent when prepare made none
MANIFEST_FILE = "manifest.json"  # what prepare made: counts, users by group, settings
SHARDS_FILE = "shards.json"  # which shard holds each sample (SISA) and each user


def subsample(rows: list[dict], max_samples: int | None, seed: int = 0) -> list[dict]:
    """At most ``max_samples`` rows, a seeded random subset in the original order."""
    if max_samples is None or len(rows) <= max_samples:
        return rows
    keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:max_samples])
    return [rows[i] for i in keep]


def unplanted(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without a planted canary trigger: what every forgetting measure reads.

    Planted rows are unlearned with their user, but no model without the trigger
    can answer them, so they are measured apart (the canary lift).
    """
    return [row for row in rows if not row.get("planted")]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with Path(path).open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read samples, naming the file and line of the first malformed one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing samples file {path}")
    return read_json_lines(path, REQUIRED_FIELDS, _type_problem)


def read_json_lines(path: str | Path, required: Sequence[str],
                    problem: Callable[[dict[str, Any]], str | None] | None = None
                    ) -> list[dict[str, Any]]:
    """JSON objects a line with ``required`` fields; a bad line is named with its number."""
    rows = []
    with Path(path).open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            missing = [f for f in required if not isinstance(row, dict) or f not in row]
            if missing:
                raise DataFormatError(f"{path}:{lineno}: missing field(s) {missing}")
            if problem and (what := problem(row)):
                raise DataFormatError(f"{path}:{lineno}: {what}; run `e2urec prepare` "
                                      "again or fix the line")
            rows.append(row)
    return rows


def _type_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with a sample's field types, if anything."""
    if row["label"] not in (0, 1) or isinstance(row["label"], bool):
        return f"label {row['label']!r} is not 0 or 1"
    for key in ("sample_id", "timestamp"):
        if not isinstance(row[key], int) or isinstance(row[key], bool):
            return f"{key} {row[key]!r} is not an integer"
    if not isinstance(row["rating"], int | float) or isinstance(row["rating"], bool):
        return f"rating {row['rating']!r} is not a number"
    for key in ("user_id", "item_id", "prompt", "answer"):
        if not isinstance(row[key], str):
            return f"{key} {row[key]!r} is not a string"
    return None


def read_split(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    read_manifest(data_dir)  # a clear error for a folder that `prepare` did not write
    path = Path(data_dir) / f"{split}.jsonl"
    if split in OPTIONAL_SPLITS and not path.is_file():
        return []
    return read_jsonl(path)


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{data_dir} is not a prepared data folder (no manifest.json); "
            "run `e2urec prepare` first"
        )
    return json.loads(path.read_text())
