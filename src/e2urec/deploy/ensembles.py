"""A store that serves a shard ensemble (SISA or RecEraser, with slices): the exact path.

The store trains the ensemble itself (``deploy init --method``), from its own backbone
folder and its own copy of the data. A deletion request retrains the shards that held
the users, each from the checkpoint before the first slice that held them
(training/slices.py); the new version is a self-contained copy of every member, so
the purge can delete every earlier version (and with it every checkpoint that held
the users). :func:`rebuild_and_compare` is the proof: it trains the ensemble again
from the store's data, which no longer holds any forgotten user, with the recorded
settings, and compares every tensor with the served ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from e2urec.checkpoints.folders import META_FILE, copy_model_tree, read_meta
from e2urec.config import BackboneConfig, ConfigError, TrainConfig, to_dict
from e2urec.deploy.store import Store, StoreError, create_store, delete_inside, read_info
from e2urec.fileio import atomic_dir, write_json
from e2urec.methods.base import UnlearnContext
from e2urec.methods.ensemble_base import ShardEnsembleUnlearner
from e2urec.methods.registry import get_method, parse_options
from e2urec.training.loop import make_accelerator
from e2urec.training.shards import check_slice_training, shard_assignment

REBUILD_DIR = ".rebuild"  # inside work/: never a request id (they start with a letter or digit)
AGGREGATOR_FILE = "aggregator.safetensors"


def ensemble_methods() -> list[str]:
    """The methods whose result is a shard ensemble, the exact path a store can serve."""
    from e2urec.methods.registry import REGISTRY

    return sorted(n for n, c in REGISTRY.items() if issubclass(c, ShardEnsembleUnlearner))


def check_ensemble_settings(method: str, options: dict[str, Any], data_dir: Path,
                            train: TrainConfig, shards: int | None) -> dict[str, Any]:
    """The options a store's ensemble keeps, checked before any work (one clear line)."""
    if method not in ensemble_methods():
        raise StoreError(f"--method {method!r} does not train a shard ensemble; use one of "
                         f"{', '.join(ensemble_methods())} (or --original for one model)")
    parsed = parse_options(method, options)
    if parsed.initial:
        raise StoreError("the store trains its own ensemble: drop the initial option")
    if parsed.lora_base:
        raise StoreError("the store's LoRA shards sit on its own backbone folder: drop the "
                         "lora_base option")
    check_slice_training(train, parsed.slices, exact=True)
    k, _ = shard_assignment(data_dir, get_method(method).scheme_for(parsed))
    if shards is not None and shards != k:
        raise StoreError(f"--shards {shards}: {data_dir} was prepared with {k} shards; prepare "
                         f"it again with `e2urec prepare --shards {shards}`")
    return to_dict(parsed)


def in_store(options: dict[str, Any], backbone: BackboneConfig,
             train: TrainConfig) -> dict[str, Any]:
    """A store's ensemble options as a run takes them: LoRA shards sit on the store's
    backbone folder (``backbone.name`` once the store is made), never on a copy."""
    return {**options, "lora_base": backbone.name} if train.use_lora else dict(options)


def shard_method(method: str, options: dict[str, Any], data_dir: Path,
                 backbone: BackboneConfig, train: TrainConfig,
                 out_dir: Path) -> ShardEnsembleUnlearner:
    """The shard method, ready to build a store's ensemble from ``data_dir``."""
    ctx = UnlearnContext(Path(data_dir), None, backbone, train, Path(out_dir),
                         make_accelerator())
    return get_method(method)(parse_options(method, in_store(options, backbone, train)), ctx)


def init_ensemble_store(method: str, options: dict[str, Any], data_dir: str | Path,
                        root: str | Path, backbone: BackboneConfig, train: TrainConfig,
                        overwrite: bool = False, shards: int | None = None) -> Store:
    """Create a store that trains and serves ``method``'s shard ensemble on ``data_dir``.

    It has no auditor: its deletions are exact by construction (each proved by
    ``deploy verify --rebuild``), and references of one model each are another model
    class than the served ensemble, which a likelihood-ratio test misreads (measured:
    a LoRA SISA ensemble's forgotten user scored -37 spreads against them)."""
    kept = check_ensemble_settings(method, options, Path(data_dir), train, shards)

    def first_version(folder: Path, built: BackboneConfig, data: Path) -> Path:
        shard_method(method, kept, data, built, train, folder).build_initial(folder)
        return folder

    return create_store(root, data_dir, backbone, train, overwrite,
                        {"kind": "ensemble", "method": method, "options": kept},
                        first_version, references=0)


def self_contained(ensemble: Path, target: Path) -> Path:
    """Copy an ensemble whose members may lie elsewhere into ``target``, every member
    inside it (a version must not depend on a folder the purge deletes)."""
    meta = read_meta(ensemble)
    with atomic_dir(target) as tmp:
        names = []
        for member in meta["members"]:
            source = Path(member) if Path(member).is_absolute() else ensemble / member
            copy_model_tree(source, tmp / source.name)
            names.append(source.name)
        if (ensemble / AGGREGATOR_FILE).is_file():
            shutil.copy2(ensemble / AGGREGATOR_FILE, tmp / AGGREGATOR_FILE)
        write_json(tmp / META_FILE, {**meta, "members": names})
    return target


def rebuild_and_compare(store: Store) -> dict[str, Any]:
    """Train the served ensemble again from the store's data and compare every tensor.

    The store's data holds no forgotten user, so an exact deletion means the served
    weights equal the rebuild's. Returns ``exact``, the first differing tensor (or
    what could not be compared) and the thread counts of both builds.
    """
    if not store.serves_ensemble:
        raise StoreError(f"{store.root} serves one model: only an ensemble store (deploy init "
                         "--method sisa|receraser) can be rebuilt exactly")
    current = store.current_dir()
    served = read_meta(current)
    scratch = store.work_dir(REBUILD_DIR)
    delete_inside(store.root, scratch)  # an interrupted rebuild's files
    threads = {"served": read_info(store.root).get("torch_threads"),
               "rebuild": torch.get_num_threads()}
    try:
        method = shard_method(store.serving["method"], store.serving["options"],
                              store.data_dir, store.backbone, store.train, scratch)
        try:
            method.build_initial(scratch / "ensemble", method.slice_bounds(current))
        except (ValueError, ConfigError) as err:
            return {"exact": False, "difference": f"cannot rebuild: {err}", "threads": threads}
        rebuilt = read_meta(scratch / "ensemble")
        found = compare(current, served, scratch / "ensemble", rebuilt)
    finally:
        delete_inside(store.root, scratch)
    return {"exact": found is None, "difference": found, "threads": threads,
            "members": len(served["members"])}


def weight_files(member: Path) -> set[str]:
    """The safetensors files below a member folder, relative to it."""
    return {str(p.relative_to(member)) for p in member.rglob("*.safetensors")}


def compare(a: Path, a_meta: dict[str, Any], b: Path, b_meta: dict[str, Any]) -> str | None:
    """The first difference between two ensembles' weights, or None when equal."""
    if sorted(a_meta["members"]) != sorted(b_meta["members"]):
        return f"members differ: {a_meta['members']} vs {b_meta['members']}"
    # Every weights file of every member: the model (or adapter) and each slice checkpoint
    # a later deletion resumes from.
    files = [(f"{m}/{name}", a / m / name, b / m / name) for m in sorted(a_meta["members"])
             for name in sorted({*weight_files(a / m), *weight_files(b / m)})]
    if (a / AGGREGATOR_FILE).is_file() or (b / AGGREGATOR_FILE).is_file():
        files.append((AGGREGATOR_FILE, a / AGGREGATOR_FILE, b / AGGREGATOR_FILE))
    for name, mine, theirs in files:
        if not mine.is_file() or not theirs.is_file():
            return f"{name}: present in only one of the two"
        left, right = load_file(mine), load_file(theirs)
        if left.keys() != right.keys():
            return f"{name}: tensor names differ"
        for key in sorted(left):
            if not torch.equal(left[key], right[key]):
                delta = (left[key].float() - right[key].float()).abs().max().item()
                return f"{name}: tensor {key} differs (largest difference {delta:.3g})"
    return None
