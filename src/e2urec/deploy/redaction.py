"""A store's data without some users: the purge's copy, and a request's own data."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2urec.data.catalog import ITEMS_FILE, USERS_FILE, VOCABULARY_FILE, items_rated_by
from e2urec.data.samples import (
    MANIFEST_FILE,
    OPTIONAL_SPLITS,
    SHARDS_FILE,
    SPLITS,
    read_json_lines,
    read_jsonl,
    read_manifest,
    read_split,
    write_jsonl,
)
from e2urec.fileio import atomic_dir, write_json


def copy_data(source: Path, target: Path, drop_users: set[str]) -> dict[str, int]:
    """Copy a prepared data folder without anything of ``drop_users``; rows dropped per file.

    Samples, holdout ids, canary entries, shard maps, the user catalogue and the
    movies only they rated all lose the users; ``target`` is written whole and
    replaces what was there.
    """
    dropped: dict[str, int] = {}
    manifest = read_manifest(source)
    gone_samples: set[int] = set()
    with atomic_dir(target) as tmp:
        for split in SPLITS:
            path = source / f"{split}.jsonl"
            if path.is_file():
                rows = read_jsonl(path)
                kept = [r for r in rows if r["user_id"] not in drop_users]
                gone_samples.update(r["sample_id"] for r in rows if r["user_id"] in drop_users)
                dropped[split] = len(rows) - len(kept)
                write_jsonl(tmp / path.name, kept)
        if (source / USERS_FILE).is_file():
            users = read_json_lines(source / USERS_FILE, ("user_id",))
            kept_users = [u for u in users if u["user_id"] not in drop_users]
            dropped["users"] = len(users) - len(kept_users)
            write_jsonl(tmp / USERS_FILE, kept_users)
        if (source / ITEMS_FILE).is_file() and (source / USERS_FILE).is_file():
            items = read_json_lines(source / ITEMS_FILE, ("item_id", "title"))
            kept_items = items_rated_by(items, kept_users)
            dropped["movies only they rated"] = len(items) - len(kept_items)
            write_jsonl(tmp / ITEMS_FILE, kept_items)
        if (source / VOCABULARY_FILE).is_file():
            shutil.copy2(source / VOCABULARY_FILE, tmp / VOCABULARY_FILE)
        if (source / SHARDS_FILE).is_file():
            shards = json.loads((source / SHARDS_FILE).read_text())
            write_json(tmp / SHARDS_FILE, without_users_in_shards(shards, drop_users,
                                                                    gone_samples))
        write_json(tmp / MANIFEST_FILE, without_users(manifest, drop_users, dropped))
    return {k: v for k, v in dropped.items() if v}


def without_users_in_shards(shards: dict[str, Any], users: set[str],
                            samples: set[int]) -> dict[str, Any]:
    """The shard maps without ``users`` (user shards) and their ``samples`` (SISA)."""
    out = dict(shards)
    out["sisa"] = {k: v for k, v in shards.get("sisa", {}).items() if int(k) not in samples}
    out["user_balanced"] = {u: v for u, v in shards.get("user_balanced", {}).items()
                            if u not in users}
    return out


def without_users(manifest: dict[str, Any], users: set[str],
                  dropped: dict[str, int]) -> dict[str, Any]:
    """The manifest with ``users`` gone from every user list and the counts updated."""
    out = dict(manifest)
    out["counts"] = {k: v - dropped.get(k, 0) for k, v in manifest.get("counts", {}).items()}
    out["forget_user_ids"] = [u for u in manifest.get("forget_user_ids", []) if u not in users]
    holdout = manifest.get("holdout_user_ids") or {}
    out["holdout_user_ids"] = {k: [u for u in v if u not in users] for k, v in holdout.items()}
    if manifest.get("canaries"):
        canaries = dict(manifest["canaries"])
        canaries["users"] = {u: v for u, v in canaries["users"].items() if u not in users}
        out["canaries"] = canaries if canaries["users"] else None
    return out


def data_users(data_dir: Path) -> set[str]:
    """Every user with a row anywhere in the data (samples or catalogue)."""
    users: set[str] = set()
    for split in SPLITS:
        path = data_dir / f"{split}.jsonl"
        if path.is_file():
            users.update(r["user_id"] for r in read_jsonl(path))
    if (data_dir / USERS_FILE).is_file():
        users.update(u["user_id"] for u in read_json_lines(data_dir / USERS_FILE, ("user_id",)))
    return users


def request_data(data_dir: Path, users: Sequence[str], out: Path) -> Path:
    """The request's prepared data: forget = the users' training rows, retain = the rest.

    Valid, test, probe and audit are the store's, without the users; canary
    keeps only the users' own canary prompts; the catalogue loses the users.
    """
    users = set(users)
    manifest = read_manifest(data_dir)
    train = read_split(data_dir, "train")
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "train.jsonl", train)
        write_jsonl(tmp / "forget.jsonl", [r for r in train if r["user_id"] in users])
        write_jsonl(tmp / "retain.jsonl", [r for r in train if r["user_id"] not in users])
        for split in ("valid", "test", *OPTIONAL_SPLITS):
            rows = read_split(data_dir, split)
            keep = [r for r in rows if (r["user_id"] in users) == (split == "canary")]
            if rows:
                write_jsonl(tmp / f"{split}.jsonl", keep)
        others = {u for u in manifest.get("forget_user_ids", []) if u not in users}
        request_manifest = without_users(manifest, others, {})
        request_manifest["forget_user_ids"] = sorted(users)
        if request_manifest.get("canaries"):
            canaries = request_manifest["canaries"]
            canaries["users"] = {u: v for u, v in canaries["users"].items() if u in users}
            if not canaries["users"]:
                request_manifest["canaries"] = None
        write_json(tmp / MANIFEST_FILE, request_manifest)
        if (data_dir / VOCABULARY_FILE).is_file():
            shutil.copy2(data_dir / VOCABULARY_FILE, tmp / VOCABULARY_FILE)
        if (data_dir / SHARDS_FILE).is_file():  # where the users' rows sit (exact path)
            shutil.copy2(data_dir / SHARDS_FILE, tmp / SHARDS_FILE)
        if (data_dir / ITEMS_FILE).is_file():  # the catalogue, for the ranking metrics
            shutil.copy2(data_dir / ITEMS_FILE, tmp / ITEMS_FILE)
            write_jsonl(tmp / USERS_FILE, [u for u in read_json_lines(data_dir / USERS_FILE,
                                                                 ("user_id",))
                                           if u["user_id"] not in users])
    return out
