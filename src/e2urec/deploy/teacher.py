"""The store's clean teacher: user-sharded models for E2URec's ``forget_teacher: shards``.

At ``deploy init --teacher`` the store trains one model per user shard of its data
(the data's ``shards.json``, ``user_balanced``) into ``teacher/``, before any
request. An E2URec request with ``forget_teacher: shards`` distils each forget
row toward the members that never held its user (methods/e2urec.py), and the
store hands it this folder, never one from outside: a folder outside could hold
a user the store forgot.

A member holds every user of its shard, so after a request the member that
held a forgotten user still holds them. The request's purge therefore trains
that member again on the store's data (which no longer holds them), replaced
whole, and records the seconds (``upkeep`` in ``teacher.json``, and the purge
list): a later request's teacher never includes a user already forgotten,
whichever path forgot them. A teacher member that still holds a forgotten user
outside a purge makes the store inconsistent (:func:`problems`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2urec.config import BackboneConfig, TrainConfig
from e2urec.data.samples import SHARDS_FILE, read_split
from e2urec.fileio import atomic_dir, write_json
from e2urec.methods.e2urec import SHARD_TEACHERS
from e2urec.training.loop import make_accelerator
from e2urec.training.shards import ShardTrainer, member_name, save_initial_ensemble

if TYPE_CHECKING:
    from e2urec.deploy.store import Store

TEACHER_DIR = "teacher"
TEACHER_FILE = "teacher.json"  # which member trained on which user, and the upkeep
SCHEME = "user_balanced"


def check_teacher(data_dir: Path, train: TrainConfig) -> None:
    """Before any work: the data has user shards, and the recipe trains whole models."""
    if train.use_lora:
        raise ValueError("--teacher trains whole shard models: a LoRA recipe (train.use_lora) "
                         "is not supported for the store's teacher yet")
    path = data_dir / SHARDS_FILE
    if not path.is_file() or not json.loads(path.read_text()).get(SCHEME):
        raise ValueError(f"--teacher needs user shards: {data_dir} has no {SHARDS_FILE} with "
                         f"{SCHEME}; prepare it with `e2urec prepare --shards K`")


def train_teacher(root: Path, data_dir: Path, backbone: BackboneConfig, train: TrainConfig,
                  cpu: bool = False) -> dict[str, Any]:
    """Train the user-sharded teacher into ``root/teacher``; what ``store.json`` records."""
    began = time.perf_counter()
    folder = root / TEACHER_DIR
    trainer = ShardTrainer(data_dir, backbone, train, make_accelerator(cpu=cpu), folder)
    members = save_initial_ensemble(trainer, SCHEME, folder, meta={"method": "store teacher"})
    seconds = time.perf_counter() - began
    assignment = _assignment(data_dir)
    trained = {str(u) for u in (r["user_id"] for r in read_split(data_dir, "train"))}
    write_json(folder / TEACHER_FILE, {
        "scheme": SCHEME, "members": len(members), "seconds": seconds,
        "assignment": {u: k for u, k in assignment.items() if u in trained}, "upkeep": []})
    return {"members": len(members), "seconds": seconds}


def _assignment(data_dir: Path) -> dict[str, int]:
    return {str(u): int(k) for u, k in
            json.loads((data_dir / SHARDS_FILE).read_text())[SCHEME].items()}


def folder(store: Store) -> Path | None:
    """The store's teacher folder, or None for a store without one."""
    path = store.root / TEACHER_DIR
    return path if (path / TEACHER_FILE).is_file() else None


def read_record(path: Path) -> dict[str, Any]:
    return json.loads((path / TEACHER_FILE).read_text())


def holding(record: dict[str, Any], forgotten: set[str]) -> dict[int, list[str]]:
    """Per member, the forgotten users it trained on."""
    held: dict[int, list[str]] = {}
    for user in sorted(forgotten & set(record["assignment"])):
        held.setdefault(record["assignment"][user], []).append(user)
    return held


def problems(store: Store) -> list[str]:
    """A teacher member that still holds a user forgotten since."""
    path = folder(store)
    if path is None:
        return []
    held = holding(read_record(path), set(store.ledger.forgotten()))
    return [f"teacher member {k} holds forgotten user(s) {users[:10]}"
            for k, users in held.items()]


def refresh(store: Store, log: Callable[[str], None], cpu: bool = False) -> list[str]:
    """Train every member that holds a forgotten user again on the store's data (which holds
    none of them), each replaced whole; what was done."""
    path = folder(store)
    if path is None:
        return []
    record = read_record(path)
    held = holding(record, set(store.ledger.forgotten()))
    if not held:
        return []
    done, train = [], read_split(store.data_dir, "train")  # read once for every member
    trainer = ShardTrainer(store.data_dir, store.backbone, store.train,
                           make_accelerator(cpu=cpu), path)
    for k, users in sorted(held.items()):
        began = time.perf_counter()
        rows = [r for r in train if record["assignment"].get(str(r["user_id"])) == k]
        with atomic_dir(path / member_name(k)) as tmp:
            trainer.train_shard(k, rows, tmp)
        seconds = time.perf_counter() - began
        record["assignment"] = {u: j for u, j in record["assignment"].items()
                                if u not in users}
        record["upkeep"].append({"member": k, "users": len(users), "seconds": seconds})
        write_json(path / TEACHER_FILE, record)
        done.append(f"teacher member {k}: trained again without {len(users)} forgotten "
                    f"user(s) ({seconds:.1f}s)")
        log(f"[forget] {done[-1]}")
    return done


def request_options(store: Store, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """A request's method options with the store's teacher filled in where E2URec asks for
    the shards teacher (a ValueError where the store has none, or the request names its
    own)."""
    if method != "e2urec" or options.get("forget_teacher") not in SHARD_TEACHERS:
        return options
    if options.get("shards"):
        raise ValueError("shards: the store's teacher is its own (teacher/, kept free of every "
                         "forgotten user); drop the option")
    path = folder(store)
    if path is None:
        raise ValueError(f"{store.root} has no teacher for forget_teacher: "
                         f"{options['forget_teacher']}; make the store with `e2urec deploy "
                         "init --teacher`")
    return {**options, "shards": str(path.resolve())}
