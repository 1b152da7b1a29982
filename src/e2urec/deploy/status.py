"""Whether a store is consistent, and the scratch no request needs (purged)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from e2urec.data.samples import (
    read_manifest,
)
from e2urec.deploy.auditor import AUDITOR_DIR
from e2urec.deploy.auditor import problems as auditor_problems
from e2urec.deploy.ledger import now
from e2urec.deploy.redaction import data_users
from e2urec.deploy.store import BACKBONE_DIR, LEFTOVER, Store, delete_inside, read_info
from e2urec.deploy.teacher import problems as teacher_problems
from e2urec.deploy.verify import (
    Verification,
)
from e2urec.fileio import LOCK_FILE as LOCK_NAME
from e2urec.fileio import folder_sha256


def links_in(root: Path) -> list[str]:
    """Symbolic links anywhere in the store: a store holds none of its own making."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            if (Path(folder) / name).is_symlink():
                found.append(str((Path(folder) / name).relative_to(root)))
    return sorted(found)


def leftovers(root: Path) -> list[Path]:
    """Temporary copies an interrupted write left (``.data.tmp*``, ``.data.old*``, ...).

    They may hold rows of users forgotten since, so they are reported and purged.
    """
    places = [root, root / "versions", root / "work", root / AUDITOR_DIR]
    return sorted(p for place in places if place.is_dir() for p in place.iterdir()
                  if LEFTOVER.fullmatch(p.name))


def stale_scratch(store: Store) -> list[Path]:
    """Scratch no unfinished request needs: an interrupted rebuild's shard models, a
    failed or ended request's folder, an interrupted write's copies. Any of it may hold
    forgotten users' rows or models trained on them, so it is purged."""
    wanted = {r["id"] for r in store.ledger.unfinished()}
    work = store.root / "work"
    scratch = [p for p in work.iterdir() if p.name not in wanted and p.name != LOCK_NAME] \
        if work.is_dir() else []
    return sorted({*scratch, *leftovers(store.root)})


def purge_scratch(store: Store) -> list[str]:
    """Delete :func:`stale_scratch` (the caller holds the store's lock); what went."""
    gone = []
    for path in stale_scratch(store):
        delete_inside(store.root, path)
        gone.append(f"{path.relative_to(store.root)} (stale scratch)")
    return gone


def backbone_altered(store: Store) -> str | None:
    """Why ``backbone/`` cannot be trusted (its files differ from the recorded hashes)."""
    recorded = read_info(store.root).get("backbone_sha256")
    if recorded and folder_sha256(store.root / BACKBONE_DIR) != recorded:
        return (f"{BACKBONE_DIR}/ differs from its recorded hashes (altered or damaged): "
                "every version's start, or its LoRA shards' base, is it")
    return None


def audit_users(data_dir: Path) -> list[str]:
    """The never-trained users the store verifies against."""
    return list((read_manifest(data_dir).get("holdout_user_ids") or {}).get("audit", []))


def status(store: Store) -> dict[str, Any]:
    """Whether the store is consistent, and what is unfinished.

    Consistent: the current version's files are whole and match their
    recorded hashes, the data holds no forgotten user's row unless a request
    is between applying and purging (it is then listed as unfinished), no
    interrupted write left a temporary copy behind, and nothing is a link.
    """
    problems: list[str] = []
    ledger = store.ledger
    current = ledger.current()
    folder = store.version_dir(current.id)
    if not folder.is_dir():
        problems.append(f"current version {current.id}: folder {folder} is missing")
    elif folder_sha256(folder) != current.model_sha256:
        problems.append(f"current version {current.id}: files differ from their recorded "
                        "hashes (altered or damaged)")
    if altered := backbone_altered(store):
        problems.append(altered)
    if links := links_in(store.root):
        problems.append(f"the store holds symbolic links ({', '.join(links[:5])}); it never "
                        "makes one and never deletes through one: remove them")
    unfinished = ledger.unfinished()
    purging = {u for r in unfinished if r["status"] == "applied" for u in r["users"]}
    leftover = (data_users(store.data_dir) & set(ledger.forgotten())) - purging
    if leftover:
        problems.append(f"data still holds forgotten users {sorted(leftover)[:10]}")
    if not purging:  # a purge trains the references and teacher that hold its users again
        problems += auditor_problems(store) + teacher_problems(store)
    known = {v.id for v in ledger.versions() if v.state != "purged"}
    versions = store.root / "versions"
    on_disk = {p.name for p in versions.iterdir() if not p.name.startswith(".")} \
        if versions.is_dir() else set()
    copies = [str(p.relative_to(store.root)) for p in leftovers(store.root)]
    stale = [str(p.relative_to(store.root)) for p in stale_scratch(store)
             if str(p.relative_to(store.root)) not in copies]
    return {
        "consistent": not problems and not copies and not stale, "problems": problems,
        "stale_scratch": stale,
        "current": current.id, "versions": len(known),
        "audit_users": len(audit_users(store.data_dir)),
        "auditor": read_info(store.root).get("auditor"),
        "min_audit_users": Verification().min_audit_users,
        "forgotten_users": len(ledger.forgotten()),
        "unfinished": [{"id": r["id"], "status": r["status"], "users": r["users"]}
                       for r in unfinished],
        # A queued request is consistent (it waits, by design); one past due is reported
        # for `e2urec deploy flush` to forget on the exact path.
        "queued": [{"id": r["id"], "users": r["users"], "due": r["due"],
                    "overdue": r["due"] <= now()} for r in ledger.queued()],
        "unrecorded_versions": sorted(on_disk - known),
        "leftover_copies": copies,
        "leftover_work": sorted(p.name for p in (store.root / "work").glob("*")
                                if not LEFTOVER.fullmatch(p.name))
        if (store.root / "work").is_dir() else [],
    }
