"""The store's auditor: reference models of its own, their stated power, their upkeep.

At ``deploy init`` the store trains its references (training/references.py: the
store's recipe on seeded halves of its users, in ``references/``) and states their
power on the served model: how often the per-user test (evaluation/lira.py) tells a
training user from never-trained users, alone and in requests of 2 to 5 users.
Verification then tests each request's users against them (deploy/verify.py).

No method reads these models. They hold users like any model: when a request's
users are forgotten, every reference that trained on one of them is trained again
on the store's data without them, within the request's purge (its seconds are
recorded), and the users' draw is dropped from ``references.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from e2urec.checkpoints.scorers import load_scorer
from e2urec.config import BackboneConfig, TrainConfig
from e2urec.data.samples import read_split, unplanted
from e2urec.evaluation.lira import (
    ReferenceLevels,
    per_user_test,
    pooled_rate,
    reference_levels,
    user_scores,
)
from e2urec.evaluation.predict import predict
from e2urec.fileio import atomic_dir, write_json
from e2urec.training.references import (
    REFERENCES_FILE,
    read_references,
    train_reference,
    train_references,
)

if TYPE_CHECKING:
    from e2urec.deploy.store import Store

AUDITOR_DIR = "references"
# The stated power covers requests of 1 to this many users (a larger one: this size's).
POWER_SIZES = 5
# Training users scored for the stated power (a seeded draw).
POWER_USERS = 200


def train_auditor(root: Path, model: Path, data_dir: Path, backbone: BackboneConfig,
                  train: TrainConfig, count: int, alpha: float = 0.05,
                  cpu: bool = False) -> dict[str, Any]:
    """Train ``count`` references into ``root/references`` and state their power on
    ``model``; what ``store.json`` records of the auditor."""
    record = train_references(data_dir, backbone, train, root / AUDITOR_DIR, count,
                              seed=train.seed, cpu=cpu)
    # the data it was drawn for is the store's own (trained here in a folder renamed since)
    write_json(root / AUDITOR_DIR / REFERENCES_FILE, {**record, "data": "data"})
    return {"count": count, "seconds": record["seconds"],
            "power": stated_power(model, data_dir, root / AUDITOR_DIR, alpha, train.seed)}


def stated_power(model: Path, data_dir: Path, references: Path, alpha: float = 0.05,
                 seed: int = 0) -> dict[str, Any]:
    """How often the per-user test flags a training user (the users the store may be asked
    to forget) on ``model``: one by one, and pooled in requests of 2 to 5 users."""
    audit = read_split(data_dir, "audit")
    if len({r["user_id"] for r in audit}) < 4:
        return {"by_size": {}, "reason": "fewer than 4 audit users: the test cannot be "
                "calibrated"}
    train = unplanted(read_split(data_dir, "train"))
    users = sorted({r["user_id"] for r in train})
    drawn = set(np.random.default_rng(seed).permutation(users)[:POWER_USERS].tolist())
    rows = [r for r in train if r["user_id"] in drawn]
    scorer = load_scorer(model)
    members, outsiders = (user_scores(levels, predict(scorer, group).loss)
                          for group, levels in zip((rows, audit),
                                                   reference_levels(references, rows, audit),
                                                   strict=True))
    test = per_user_test(members, outsiders, alpha)
    by_size = {"1": test["flagged"] / test["forgotten_users"]}
    by_size.update({str(k): pooled_rate(members, outsiders, k, alpha=alpha, seed=seed)
                    for k in range(2, POWER_SIZES + 1) if k <= len(members)})
    return {"by_size": by_size, "alpha": alpha, "users": len(members),
            "audit_users": len(outsiders), "false_alarm_rate": test["false_alarm_rate"]}


def power_for(stated: dict[str, Any] | None, users: int) -> float | None:
    """The stated power for a request of ``users`` users (None: not stated)."""
    by_size = (stated or {}).get("by_size") or {}
    if not by_size:
        return None
    return by_size.get(str(min(users, POWER_SIZES)), by_size[max(by_size, key=int)])


def folder(store: Store) -> Path | None:
    """The store's references folder, or None for a store without an auditor."""
    path = store.root / AUDITOR_DIR
    return path if (path / REFERENCES_FILE).is_file() else None


def request_levels(store: Store, forget_rows: Sequence[dict[str, Any]],
                   audit_rows: Sequence[dict[str, Any]]
                   ) -> tuple[ReferenceLevels, ReferenceLevels] | None:
    """The references' levels on a request's forget rows and audit rows (None without an
    auditor, or with too few audit users to calibrate)."""
    references = folder(store)
    if references is None or not forget_rows or len({r["user_id"] for r in audit_rows}) < 4:
        return None
    forget, audit = reference_levels(references, forget_rows, audit_rows)
    return forget, audit


def holding(record: dict[str, Any], forgotten: set[str]) -> dict[int, list[str]]:
    """Per reference, the forgotten users it trained on."""
    trained = set(record.get("trained_users", ()))
    held: dict[int, list[str]] = {}
    for user in sorted(forgotten & trained & set(record["assignment"])):
        for k in record["assignment"][user]:
            held.setdefault(k, []).append(user)
    return held


def problems(store: Store) -> list[str]:
    """What is wrong with the auditor: a missing reference, or one that holds a user
    forgotten since (only while no request is purging)."""
    references = folder(store)
    if references is None:
        return []
    try:
        record = read_references(references)
    except FileNotFoundError as err:
        return [str(err)]
    held = holding(record, set(store.ledger.forgotten()))
    return [f"reference {k} holds forgotten user(s) {users[:10]}" for k, users in held.items()]


def refresh(store: Store, log: Callable[[str], None]) -> list[str]:
    """Train every reference that holds a forgotten user again without them (the store's
    data holds none), one at a time, each replaced whole; what was done."""
    references = folder(store)
    if references is None:
        return []
    record = read_references(references)
    forgotten = set(store.ledger.forgotten())
    done = []
    for k, users in sorted(holding(record, forgotten).items()):
        began = time.perf_counter()
        with atomic_dir(references / f"ref_{k}") as tmp:
            train_reference(store.data_dir, read_split(store.data_dir, "train"),
                            record["assignment"], k, store.backbone, store.train, tmp)
        seconds = time.perf_counter() - began
        for user in users:  # this reference no longer holds them
            record["assignment"][user] = [j for j in record["assignment"][user] if j != k]
        record["upkeep"] = [*record.get("upkeep", []), {"reference": k, "seconds": seconds}]
        write_json(references / REFERENCES_FILE, record)
        done.append(f"reference {k}: trained again without {len(users)} forgotten user(s) "
                    f"({seconds:.1f}s)")
        log(f"[forget] {done[-1]}")
    # No draw of a forgotten user stays: nothing holds them, and nothing needs their draw.
    kept = {u: ks for u, ks in record["assignment"].items() if u not in forgotten}
    if len(kept) != len(record["assignment"]):
        record["assignment"] = kept
        record["trained_users"] = [u for u in record.get("trained_users", [])
                                   if u not in forgotten]
        write_json(references / REFERENCES_FILE, record)
    return done
