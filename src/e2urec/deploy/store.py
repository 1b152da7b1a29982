"""A deployment store: the serving model's versions, the data, and the ledger.

Layout of a store folder::

    store.json        what it is (format), and the backbone/training settings
    backbone/         a tiny backbone's untrained start and word tokenizer (built once)
    ledger.sqlite     requests, versions, forgotten users (see ledger.py)
    data/             the prepared data minus every forgotten user's rows
    versions/<id>/    complete model folders; the ledger says which is current
    work/<request>/   a running request's scratch (request data, augmented model,
                      teacher caches, candidate model); deleted when it ends

Every version is a whole model (an unlearned adapter is merged into its base),
so an older version can be deleted without breaking a newer one. What the
store keeps and why is in the README ("Serving deletion requests").
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2urec.backbones.registry import TINY, create_backbone
from e2urec.checkpoints.folders import check_model_folder, load_model, save_model
from e2urec.config import BackboneConfig, TrainConfig, from_dict, to_dict
from e2urec.data.catalog import ITEMS_FILE, USERS_FILE
from e2urec.data.samples import SPLITS, read_json_lines, read_jsonl, read_manifest, write_jsonl
from e2urec.deploy.ledger import LEDGER_FILE, Ledger, LedgerError, Version, now
from e2urec.fileio import atomic_dir, check_output, folder_sha256, write_json

STORE_FILE = "store.json"
STORE_KIND = "e2urec-store"
FORMAT = 1
FIRST_VERSION = "v0000"
BACKBONE_DIR = "backbone"  # a tiny backbone's starting point, kept from creation


class StoreError(ValueError):
    """The store cannot be used as asked; the message says why."""


@dataclass
class Store:
    """An opened store: its folder, settings and ledger."""

    root: Path
    backbone: BackboneConfig
    train: TrainConfig
    ledger: Ledger

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def version_dir(self, version_id: str) -> Path:
        return self.root / "versions" / version_id

    def work_dir(self, request_id: str) -> Path:
        return self.root / "work" / request_id

    def current_dir(self) -> Path:
        return self.version_dir(self.ledger.current().id)

    def close(self) -> None:
        self.ledger.close()


def open_store(root: str | Path) -> Store:
    """Open a store, with one clear error if the folder is not one (or is newer)."""
    root = Path(root)
    info_file = root / STORE_FILE
    if not info_file.is_file():
        raise StoreError(f"{root} is not a deployment store (no {STORE_FILE}); "
                         "create one with `e2urec deploy init`")
    try:
        info = json.loads(info_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{info_file}: damaged ({err})") from None
    if not isinstance(info, dict) or info.get("kind") != STORE_KIND:
        raise StoreError(f"{info_file}: not an e2urec store description")
    if info.get("format", 0) > FORMAT:
        raise StoreError(f"{root}: store format {info['format']} is newer than this e2urec "
                         f"reads ({FORMAT}); upgrade e2urec")
    try:
        ledger = Ledger.open(root / LEDGER_FILE)
    except LedgerError as err:
        raise StoreError(str(err)) from None
    backbone = from_dict(BackboneConfig, info["backbone"], "store backbone")
    if (root / BACKBONE_DIR).is_dir():
        backbone = dataclasses.replace(backbone, name=str((root / BACKBONE_DIR).resolve()))
    return Store(root, backbone, from_dict(TrainConfig, info["train"], "store train"), ledger)


def init_store(original: str | Path, data_dir: str | Path, root: str | Path,
               backbone: BackboneConfig, train: TrainConfig, overwrite: bool = False) -> Store:
    """Create a store serving ``original`` (merged into one model) trained on ``data_dir``.

    Checks everything first; the store appears whole (one rename) or not at all.
    """
    meta = check_model_folder(original)
    if meta["kind"] == "ensemble":
        raise StoreError(f"{original} is a shard ensemble; the store serves one model")
    read_manifest(data_dir)
    check_output(root, STORE_FILE, overwrite)
    if (Path(root) / STORE_FILE).is_file() and not overwrite:
        raise StoreError(f"{root} is already a store; pass --overwrite to replace it "
                         "(its versions and ledger are deleted)")
    model = load_model(original, merged=True)
    with atomic_dir(root) as tmp:
        copy_data(Path(data_dir), tmp / "data", drop_users=set())
        if backbone.name in TINY:
            # A tiny backbone's word tokenizer is trained on the prompts: kept as built at
            # creation, so every later version (and a retrain) shares one vocabulary.
            save_model(create_backbone(backbone, data_dir, train.seed), tmp / BACKBONE_DIR,
                       {"role": "backbone"})
        folder = save_model(model, tmp / "versions" / FIRST_VERSION,
                            {"role": "deployed", "version": FIRST_VERSION,
                             "original": str(Path(original).resolve())})
        ledger = Ledger.create(tmp / LEDGER_FILE)
        with ledger.transaction() as db:
            ledger.add_version(db, Version(FIRST_VERSION, None, None, now(),
                                           folder_sha256(folder), [], "retired"))
            ledger.make_current(db, FIRST_VERSION)
        ledger.close()
        write_json(tmp / STORE_FILE, {
            "kind": STORE_KIND, "format": FORMAT, "created": now(),
            "original": str(Path(original).resolve()), "data": str(Path(data_dir).resolve()),
            "backbone": to_dict(backbone), "train": to_dict(train)})
    return open_store(root)


def copy_data(source: Path, target: Path, drop_users: set[str]) -> dict[str, int]:
    """Copy a prepared data folder without the rows of ``drop_users``; rows dropped per file.

    Samples, holdout ids, canary lists and the user catalogue all lose the
    users; ``target`` is written whole and replaces what was there.
    """
    dropped: dict[str, int] = {}
    manifest = read_manifest(source)
    with atomic_dir(target) as tmp:
        for split in SPLITS:
            path = source / f"{split}.jsonl"
            if path.is_file():
                rows = read_jsonl(path)
                kept = [r for r in rows if r["user_id"] not in drop_users]
                dropped[split] = len(rows) - len(kept)
                write_jsonl(tmp / path.name, kept)
        if (source / USERS_FILE).is_file():
            users = read_json_lines(source / USERS_FILE, ("user_id",))
            kept_users = [u for u in users if u["user_id"] not in drop_users]
            dropped["users"] = len(users) - len(kept_users)
            write_jsonl(tmp / USERS_FILE, kept_users)
        if (source / ITEMS_FILE).is_file():
            shutil.copy2(source / ITEMS_FILE, tmp / ITEMS_FILE)
        if (source / "shards.json").is_file():
            shutil.copy2(source / "shards.json", tmp / "shards.json")
        write_json(tmp / "manifest.json", without_users(manifest, drop_users, dropped))
    return {k: v for k, v in dropped.items() if v}


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
        canaries["users"] = [u for u in canaries["users"] if u not in users]
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


def status(store: Store) -> dict[str, Any]:
    """Whether the store is consistent, and what is unfinished.

    Consistent: the current version's files are whole and match their
    recorded hashes, and the data holds no forgotten user's row unless a
    request is between applying and purging (it is then listed as unfinished).
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
    unfinished = ledger.unfinished()
    purging = {u for r in unfinished if r["status"] == "applied" for u in r["users"]}
    leftover = (data_users(store.data_dir) & set(ledger.forgotten())) - purging
    if leftover:
        problems.append(f"data still holds forgotten users {sorted(leftover)[:10]}")
    known = {v.id for v in ledger.versions() if v.state != "purged"}
    versions = store.root / "versions"
    on_disk = {p.name for p in versions.iterdir() if not p.name.startswith(".")} \
        if versions.is_dir() else set()
    return {
        "consistent": not problems, "problems": problems, "current": current.id,
        "versions": len(known), "forgotten_users": len(ledger.forgotten()),
        "unfinished": [{"id": r["id"], "status": r["status"], "users": r["users"]}
                       for r in unfinished],
        "unrecorded_versions": sorted(on_disk - known),
        "leftover_work": sorted(p.name for p in (store.root / "work").glob("*"))
        if (store.root / "work").is_dir() else [],
    }
