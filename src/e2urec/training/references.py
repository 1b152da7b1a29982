"""The auditor's reference models: the Original's recipe on seeded halves of the users.

Each user (training users, and the never-trained probe and audit users alike) is
drawn into exactly half of the references. A reference trains on the training rows
of the users drawn into it, so every training user is in some references and out of
the others. Probe and audit users are drawn too but never trained on by anyone:
their draw only says which references play "out" for them, so that a never-trained
user is scored against as many out-references as a forgotten user is, and the audit
users calibrate the test exactly (evaluation/lira.py).

No method ever reads these models: an auditor whose references a method learnt from
would pass that method by construction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from e2urec.checkpoints.folders import repoint_adapters
from e2urec.config import BackboneConfig, ConfigError, TrainConfig
from e2urec.data.samples import read_manifest, read_split
from e2urec.fileio import atomic_dir, write_json
from e2urec.training.finetune import initial_backbone, lora_base_dir, save_base, train_and_save
from e2urec.training.loop import make_accelerator

REFERENCES_FILE = "references.json"
MIN_REFERENCES = 4


def assign_users(users: Sequence[str], count: int, seed: int, holding: int | None = None
                 ) -> dict[str, list[int]]:
    """Each user in exactly ``holding`` of ``count`` references (default: half), a seeded
    draw each; every user is out of at least 2, the fewest a row's level can be read from."""
    holding = check_holding(count, holding)
    rng = np.random.default_rng(seed)
    return {u: sorted(int(k) for k in rng.choice(count, size=holding, replace=False))
            for u in sorted(set(users))}


def check_holding(count: int, holding: int | None) -> int:
    """How many of ``count`` references hold each user (default: half), refused in one line
    when a user would be out of fewer than 2."""
    check_count(count)
    holding = count // 2 if holding is None else holding
    if not 1 <= holding <= count - 2:
        raise ConfigError(f"references holding each user: {holding}; use 1 to {count - 2} "
                          f"of {count} (each user must be out of at least 2)")
    return holding


def check_count(count: int) -> None:
    if count < MIN_REFERENCES or count % 2:
        raise ConfigError(f"references {count}: use an even number, at least {MIN_REFERENCES} "
                          "(each user is in half of them and out of the other half)")


def data_users(data_dir: Path) -> list[str]:
    """Every user the references are drawn for: training users and held-out users."""
    users = {r["user_id"] for r in read_split(data_dir, "train")}
    for group in (read_manifest(data_dir).get("holdout_user_ids") or {}).values():
        users.update(group)
    return sorted(users)


def train_references(data_dir: str | Path, backbone: BackboneConfig, train: TrainConfig,
                     out_dir: str | Path, count: int = MIN_REFERENCES, seed: int = 0,
                     cpu: bool = False, holding: int | None = None) -> dict[str, Any]:
    """Train ``count`` references into ``out_dir`` (``ref_<k>`` and ``references.json``),
    written whole or not at all; returns the record."""
    data_dir = Path(data_dir)
    assignment = assign_users(data_users(data_dir), count, seed, holding)
    rows = read_split(data_dir, "train")
    began = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        seconds = [train_reference(data_dir, rows, assignment, k, backbone, train,
                                   tmp / f"ref_{k}", cpu) for k in range(count)]
        record = {"count": count, "seed": seed, "assignment": assignment,
                  # whom they trained on: the purge retrains only what held a forgotten user
                  "trained_users": sorted({r["user_id"] for r in rows}),
                  "train_seconds": seconds, "seconds": time.perf_counter() - began,
                  "data": str(data_dir.resolve()),
                  "manifest_config": read_manifest(data_dir).get("config")}
        write_json(tmp / REFERENCES_FILE, record)
    return record


def train_reference(data_dir: Path, rows: Sequence[dict[str, Any]],
                    assignment: dict[str, list[int]], k: int, backbone: BackboneConfig,
                    train: TrainConfig, out: Path, cpu: bool = False) -> float:
    """Train reference ``k`` into ``out`` on the training ``rows`` of the users drawn into
    it (users with no draw, e.g. forgotten since, are left out); its seconds."""
    held = [r for r in rows if k in assignment.get(r["user_id"], ())]
    accelerator = make_accelerator(cpu=cpu)
    start = initial_backbone(backbone, data_dir, train.seed)
    base = save_base(start, lora_base_dir(out), accelerator, "backbone") \
        if train.use_lora else None
    record = train_and_save(data_dir, held, backbone, train, out, accelerator, start, base,
                            meta={"role": "reference"}, desc=f"reference {k + 1}")
    if base:  # by a relative path: the folder is renamed into place
        repoint_adapters(out, base, base)
    return record["history"]["seconds"]


def read_references(folder: str | Path) -> dict[str, Any]:
    """A references folder's record, with one clear error when it is not one."""
    path = Path(folder) / REFERENCES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no reference models (no {REFERENCES_FILE}); "
                                "train them with `e2urec audit --references DIR`")
    record = json.loads(path.read_text())
    missing = [k for k in range(record["count"]) if not (Path(folder) / f"ref_{k}").is_dir()]
    if missing:
        raise FileNotFoundError(f"{folder}: reference(s) {missing} missing; train them again")
    return record
