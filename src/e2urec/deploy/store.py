"""A deployment store: the serving model's versions, the data, and the ledger.

Layout of a store folder::

    store.json        what it is (format), and the backbone/training settings
    backbone/         a tiny backbone's untrained start and word tokenizer (built once);
                      the frozen base of an ensemble's LoRA shards (never sees a user)
    ledger.sqlite     requests, versions, forgotten users (see ledger.py)
    data/             the prepared data minus every forgotten user's rows
    versions/<id>/    complete model folders; the ledger says which is current
    work/<request>/   a running request's scratch (request data, augmented model,
                      teacher caches, candidate model); deleted when it ends
    references/       the auditor's reference models (deploy/auditor.py): trained on
                      halves of the users, read by verification only, trained again
                      without a user when they are forgotten

Every version is a whole model (an unlearned adapter is merged into its base), or an
ensemble whose members (and slice checkpoints) are all inside it, LoRA shards as
adapters on ``backbone/``, so an older version can be deleted without breaking a
newer one. What the
store keeps and why is in the README ("Serving deletion requests").
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from e2urec.backbones.registry import TINY
from e2urec.checkpoints.folders import (
    META_FILE,
    check_model_folder,
    load_model,
    read_meta,
    repoint_adapters,
    save_model,
)
from e2urec.config import BackboneConfig, TrainConfig, from_dict, to_dict
from e2urec.data.samples import read_manifest
from e2urec.deploy.auditor import train_auditor
from e2urec.deploy.ledger import LEDGER_FILE, Ledger, LedgerError, Version, now
from e2urec.deploy.redaction import copy_data, data_users
from e2urec.deploy.teacher import check_teacher, train_teacher
from e2urec.fileio import atomic_dir, check_output, folder_sha256, write_json
from e2urec.training.finetune import initial_backbone
from e2urec.training.references import MIN_REFERENCES, check_count

STORE_FILE = "store.json"
STORE_KIND = "e2urec-store"
FORMAT = 1
FIRST_VERSION = "v0000"
BACKBONE_DIR = "backbone"  # a tiny backbone's starting point, kept from creation
# A request id names a folder (work/<id>): letters, digits, ".", "_", "-", a letter or digit
# first (so never "." or ".."), at most 64 characters.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# What an interrupted atomic write leaves beside its target (see fileio.atomic_dir).
LEFTOVER = re.compile(r"\..+\.(tmp|old)[A-Za-z0-9_]*")


class StoreError(ValueError):
    """The store cannot be used as asked; the message says why."""


@dataclass
class Store:
    """An opened store: its folder, settings and ledger."""

    root: Path
    backbone: BackboneConfig
    train: TrainConfig
    ledger: Ledger
    # What it serves: {"kind": "model"}, or {"kind": "ensemble", "method": ..., "options":
    # ...}, an ensemble a shard method trained in the store and retrains on a request.
    serving: dict[str, Any] = field(default_factory=lambda: {"kind": "model"})

    @property
    def serves_ensemble(self) -> bool:
        return self.serving.get("kind") == "ensemble"

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

    # A store used in a `with` closes its ledger on the way out, so that SQLite folds the
    # write-ahead log back into the ledger file then, not whenever the connection is
    # collected (which would change the file under a later, read-only command).
    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_request_id(request_id: str) -> None:
    """A request id that cannot name anything but a folder of its own in ``work/``."""
    if not REQUEST_ID.fullmatch(request_id or ""):
        raise StoreError(f"request id {request_id!r} is not allowed: use 1-64 letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit")


def delete_inside(root: Path, path: Path) -> bool:
    """Delete ``path`` (a file or folder) when it lies inside the store ``root``.

    The one way the store deletes: the entry itself (not what a link points to)
    must sit below ``root``, and a symbolic link is never deleted through.
    Returns whether something was there.
    """
    base = Path(root).resolve()
    entry = Path(path).parent.resolve() / Path(path).name
    if entry == base or base not in entry.parents:
        raise StoreError(f"refusing to delete {path}: it is not inside the store {base}")
    if entry.is_symlink():
        raise StoreError(f"refusing to delete {path}: it is a symbolic link (to "
                         f"{os.readlink(entry)}); the store never deletes through a link")
    if not entry.exists():
        return False
    if entry.is_dir():
        shutil.rmtree(entry)
    else:
        entry.unlink()
    return True


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
    return Store(root, backbone, from_dict(TrainConfig, info["train"], "store train"), ledger,
                 info.get("serving") or {"kind": "model"})


def init_store(original: str | Path, data_dir: str | Path, root: str | Path,
               backbone: BackboneConfig, train: TrainConfig, overwrite: bool = False,
               references: int = MIN_REFERENCES, teacher: bool = False) -> Store:
    """Create a store serving ``original`` (merged into one model) trained on ``data_dir``.

    Checks everything first; the store appears whole (one rename) or not at all.
    Over an existing store (``overwrite``) its ledger is carried forward: every
    user it forgot stays forgotten, and data that holds one is refused.
    ``references``: the auditor's reference models (deploy/auditor.py; 0: none).
    ``teacher``: train the user-sharded teacher of E2URec's shards path (deploy/teacher.py).
    """
    meta = check_model_folder(original)
    if meta["kind"] == "ensemble":
        raise StoreError(f"{original} is a shard ensemble; serve an ensemble with "
                         "`e2urec deploy init --method sisa|receraser`, which trains it "
                         "in the store")
    original = str(Path(original).resolve())

    def first_version(folder: Path, _: BackboneConfig, __: Path) -> Path:
        return save_model(load_model(original, merged=True), folder,
                          {"role": "deployed", "original": original})

    return create_store(root, data_dir, backbone, train, overwrite, {"kind": "model"},
                        first_version, original=original, references=references,
                        teacher=teacher)


def create_store(root: str | Path, data_dir: str | Path, backbone: BackboneConfig,
                 train: TrainConfig, overwrite: bool, serving: dict[str, Any],
                 first_version: Callable[[Path, BackboneConfig, Path], Path],
                 original: str | None = None, references: int = MIN_REFERENCES,
                 teacher: bool = False) -> Store:
    """The one way a store is made: checks, data, backbone, first version, ledger, all
    in one folder that replaces ``root`` by one rename.

    ``first_version(folder, backbone, data)`` writes the served model (or ensemble)
    into ``folder``; ``backbone`` then names the store's own backbone folder and
    ``data`` its copy of the data. ``references``: the auditor's reference models, trained
    last, on the store's data (0: none; else even and at least 4).
    """
    if references:
        check_count(references)
    read_manifest(data_dir)
    if teacher:
        check_teacher(Path(data_dir), train)
    check_store_path(Path(root))
    check_output(root, STORE_FILE, overwrite, flag="--store")
    old = _old_ledger(Path(root), overwrite)
    forgotten = old.forgotten() if old else {}
    if forgotten and (readmitted := sorted(data_users(Path(data_dir)) & set(forgotten))):
        old.close()
        raise StoreError(f"{data_dir} holds user(s) {readmitted[:10]} that {root} forgot "
                         f"(request {forgotten[readmitted[0]]}); prepare the data without "
                         "them, train the Original on it, and deploy that")
    first = f"v{len(old.versions()):04d}" if old else FIRST_VERSION
    sources = [*(read_info(Path(root)).get("sources", []) if old else []),
               {"original": original, "data": str(Path(data_dir).resolve()), "at": now()}]
    with atomic_dir(root) as tmp:
        copy_data(Path(data_dir), tmp / "data", drop_users=set())
        built = backbone
        lora_shards = serving["kind"] == "ensemble" and train.use_lora
        if backbone.name in TINY or lora_shards:
            # A tiny backbone's word tokenizer, kept as built at creation, so that every
            # later version (and a retrain) shares one vocabulary. It is learnt from the
            # data's public words only (backbones.registry.create_backbone). LoRA shards
            # sit on this folder: the frozen base, which never sees a user's row.
            save_model(initial_backbone(backbone, data_dir, train.seed, merged=True),
                       tmp / BACKBONE_DIR, {"role": "backbone"})
            built = dataclasses.replace(backbone, name=str(tmp / BACKBONE_DIR))
        folder = first_version(tmp / "versions" / first, built, tmp / "data")
        if old and (held := old.held_forgotten(folder_sha256(folder))):
            version, users = held
            old.close()
            raise StoreError(f"the model given has the weights of version {version.id}, "
                             f"which held user(s) {users[:10]} forgotten since (request "
                             f"{forgotten[users[0]]}); {root} is unchanged: deploy a model "
                             "trained without them")
        if lora_shards:  # relative: the base moves (or is copied) with the store
            repoint_adapters(folder, tmp / BACKBONE_DIR, tmp / BACKBONE_DIR)
        write_json(folder / META_FILE, {**read_meta(folder), "role": "deployed",
                                         "version": first})
        auditor = train_auditor(tmp, folder, tmp / "data", built, train, references) \
            if references else None
        clean_teacher = train_teacher(tmp, tmp / "data", built, train) if teacher else None
        ledger = Ledger.create(tmp / LEDGER_FILE)
        with ledger.transaction() as db:
            if old:
                ledger.carry_history(db, old)
            ledger.add_version(db, Version(first, None, None, now(), folder_sha256(folder),
                                           sorted(forgotten), "retired"))
            ledger.make_current(db, first)
        ledger.close()
        if old:
            old.close()
        write_json(tmp / STORE_FILE, {
            "kind": STORE_KIND, "format": FORMAT, "created": now(),
            "original": sources[-1]["original"], "data": sources[-1]["data"],
            "sources": sources, "backbone": to_dict(backbone), "train": to_dict(train),
            "serving": serving, "auditor": auditor, "teacher": clean_teacher,
            "torch_threads": torch.get_num_threads(),
            "backbone_sha256": folder_sha256(tmp / BACKBONE_DIR)
            if (tmp / BACKBONE_DIR).is_dir() else None})
    return open_store(root)


def check_store_path(root: Path) -> None:
    """A store is a folder of its own, replaced by one rename: never a link (the rename
    would replace the link and leave the store it points to behind), never "." or ".."."""
    if root.is_symlink():
        raise StoreError(f"--store {root} is a symbolic link (to {os.readlink(root)}); give "
                         "the store's own folder")
    if root.name in ("", ".", "..") or root.resolve() == Path(root.resolve().anchor):
        raise StoreError(f"--store {root} does not name a folder of its own; name the store's "
                         "folder (e.g. stores/demo)")


def _old_ledger(root: Path, overwrite: bool) -> Ledger | None:
    """The ledger of the store ``root`` replaces, or None when there is none."""
    if not (root / STORE_FILE).is_file():
        return None
    if not overwrite:
        raise StoreError(f"{root} is already a store; pass --overwrite to replace it (its "
                         "versions are deleted; its ledger and forgotten users carry forward)")
    try:
        return Ledger.open(root / LEDGER_FILE)
    except LedgerError as err:
        raise StoreError(f"{root} is a store whose ledger cannot be read ({err}); it is not "
                         "replaced, since its forgotten users would be lost") from None


def read_info(root: Path) -> dict[str, Any]:
    """The store's ``store.json`` ({} when it cannot be read)."""
    try:
        info = json.loads((root / STORE_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


