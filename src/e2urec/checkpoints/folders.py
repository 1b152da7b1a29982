"""Model folders on disk: models, adapters on a base, ensembles of members.

A model folder holds ``save_pretrained`` output (safetensors) and
``e2urec_model.json``: the family, the kind (``model``, ``adapter`` on a base
folder, or ``ensemble`` of member folders) and whatever the writer adds. A
folder is written under a temporary name and renamed into place, so a crash
leaves either the old folder or the new one, never half of one. Adapters
record their base as an absolute path (ours and peft's ``adapter_config.json``),
so they load from any working directory.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors import SafetensorError, safe_open

from e2urec.backbones.registry import Backbone, family_of, load_pretrained
from e2urec.fileio import atomic_dir, atomic_write_text, write_json

META_FILE = "e2urec_model.json"
KINDS = ("model", "adapter", "ensemble")


class CheckpointError(FileNotFoundError):
    """A model folder is missing, incomplete or damaged; the message names it."""


def library_versions() -> dict[str, str]:
    import accelerate
    import peft
    import transformers

    from e2urec import __version__

    return {"e2urec": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__}


def save_model(backbone: Backbone, out_dir: str | Path, meta: dict[str, Any] | None = None,
               base_dir: str | Path | None = None) -> Path:
    """Save a model (or, for a peft model, its adapter on ``base_dir``) atomically."""
    is_adapter = isinstance(backbone.model, PeftModel)
    if is_adapter and base_dir is None:
        raise ValueError("an adapter needs the folder of the model it sits on (base_dir)")
    base = str(Path(base_dir).resolve()) if is_adapter else None
    info = {"kind": "adapter" if is_adapter else "model", "family": backbone.family,
            "max_prompt_tokens": backbone.max_prompt_tokens, "base": base,
            "versions": library_versions(), **(meta or {})}
    with atomic_dir(out_dir) as tmp:
        backbone.model.save_pretrained(tmp)
        backbone.tokenizer.save_pretrained(tmp)
        if is_adapter:
            _point_adapter_at(tmp, base)
        write_json(tmp / META_FILE, info)
    return Path(out_dir)


def _point_adapter_at(folder: Path, base: str) -> None:
    """peft stores the base as the process saw it (often relative); store it absolute."""
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base
    atomic_write_text(config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")


def repoint_adapters(folder: str | Path, old_base: str | Path, new_base: str | Path) -> int:
    """Make every adapter below ``folder`` that sits on ``old_base`` name ``new_base`` by a
    path relative to the adapter's own folder.

    For a tree whose base moves with it (a store's versions and its ``backbone/``): only
    the recorded path changes, no weight, and a copied or moved tree keeps its base.
    Returns how many adapters were re-pointed.
    """
    old, new = Path(old_base).resolve(), Path(new_base).resolve()
    count = 0
    for meta_file in sorted(Path(folder).rglob(META_FILE)):
        meta = json.loads(meta_file.read_text())
        if meta.get("kind") == "adapter" and adapter_base(meta_file.parent, meta) == old:
            relative = os.path.relpath(new, meta_file.parent.resolve())
            write_json(meta_file, {**meta, "base": relative})
            _point_adapter_at(meta_file.parent, relative)
            count += 1
    return count


def copy_model_tree(source: str | Path, target: str | Path) -> Path:
    """Copy a model folder (and what lies below it: slice checkpoints, members); an
    adapter's base given relative to where it lay is recorded absolute in the copy, so
    the copy loads from wherever it is put."""
    source, target = Path(source), Path(target)
    shutil.copytree(source, target)
    for meta_file in sorted(target.rglob(META_FILE)):
        meta = json.loads(meta_file.read_text())
        if meta.get("kind") == "adapter" and not Path(meta["base"]).is_absolute():
            base = str(adapter_base(source / meta_file.parent.relative_to(target), meta))
            write_json(meta_file, {**meta, "base": base})
            _point_adapter_at(meta_file.parent, base)
    return target


def adapter_base(folder: str | Path, meta: dict[str, Any]) -> Path:
    """The folder an adapter sits on: its recorded base, a relative one read from the
    adapter's own folder."""
    base = Path(meta["base"])
    return base if base.is_absolute() else (Path(folder) / base).resolve()


def save_ensemble(out_dir: str | Path, member_dirs: Sequence[str | Path],
                  aggregator: torch.nn.Module | None = None,
                  meta: dict[str, Any] | None = None) -> Path:
    """Write an ensemble folder that points at existing member model folders.

    Members inside ``out_dir`` are stored relative to it, others absolute.
    ``aggregator`` (an attention aggregator) is saved with its sizes.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    members = []
    for member in member_dirs:
        read_meta(member)  # fail now, not at load time, if a member is missing
        member = Path(member).resolve()
        inside = member.is_relative_to(out_dir.resolve())
        members.append(str(member.relative_to(out_dir.resolve())) if inside else str(member))
    info: dict[str, Any] = {"kind": "ensemble", "members": members, "aggregation": "mean",
                            "versions": library_versions(), **(meta or {})}
    if aggregator is not None:
        info["aggregation"] = "attention"
        info["aggregator"] = aggregator.sizes()
    out_dir.mkdir(parents=True, exist_ok=True)
    if aggregator is not None:
        tmp = out_dir / ".aggregator.safetensors.tmp"
        save_file(aggregator.state_dict(), tmp)
        tmp.replace(out_dir / "aggregator.safetensors")
    # The metadata goes last: a folder without it is not (yet) an ensemble.
    write_json(out_dir / META_FILE, info)
    return out_dir


def read_meta(path: str | Path) -> dict[str, Any]:
    """The folder's ``e2urec_model.json``; a clear error when it is not a model folder."""
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise CheckpointError(f"{path} is not an e2urec model folder (no {META_FILE}); "
                              "train one with `e2urec train` or `e2urec unlearn`")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_file}: damaged metadata ({err})") from None
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
        raise CheckpointError(f"{meta_file}: not e2urec model metadata (kind must be one "
                              f"of {KINDS})")
    return meta


def check_model_folder(path: str | Path) -> dict[str, Any]:
    """Check a model, adapter or ensemble folder (and what it rests on) without loading it.

    Reads every safetensors header, so a missing or truncated weights file is
    named here, before any work. Returns the folder's metadata.
    """
    path = Path(path)
    meta = read_meta(path)
    if meta["kind"] == "ensemble":
        for member in meta["members"]:
            check_model_folder(member if Path(member).is_absolute() else path / member)
        if meta["aggregation"] == "attention":
            _check_weights(path / "aggregator.safetensors")
        return meta
    if meta["kind"] == "adapter":
        check_model_folder(adapter_base(path, meta))
        _check_weights(path / "adapter_model.safetensors")
        return meta
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: incomplete model folder (no config.json)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise CheckpointError(f"{path}: incomplete model folder (no *.safetensors weights)")
    for file in weights:
        _check_weights(file)
    return meta


def _check_weights(file: Path) -> None:
    if not file.is_file():
        raise CheckpointError(f"missing weights file {file}")
    try:
        with safe_open(str(file), framework="pt") as handle:
            list(handle.keys())
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{file}: damaged or truncated weights ({err}); "
                              "train or copy the model again") from None


def load_model(path: str | Path, trainable_adapter: bool = False,
               merged: bool = False) -> Backbone:
    """Load a model folder; an adapter folder comes back on its (reloaded) base.

    With ``merged`` an adapter is folded into its base and a plain model comes
    back: what a method needs that trains on top of a LoRA-tuned Original.
    """
    path = Path(path)
    meta = check_model_folder(path)
    if meta["kind"] == "ensemble":
        raise CheckpointError(f"{path} is an ensemble; load it with load_scorer")
    if meta["kind"] == "adapter":
        base = load_model(adapter_base(path, meta), merged=True)  # may be an adapter too
        model = PeftModel.from_pretrained(base.model, path, is_trainable=trainable_adapter)
        if merged:
            model = model.merge_and_unload()
        return Backbone(model, base.tokenizer, base.family, meta["max_prompt_tokens"])
    try:
        backbone = load_pretrained(path, meta["max_prompt_tokens"])
    except (OSError, ValueError, SafetensorError) as err:
        raise CheckpointError(f"{path}: incomplete model folder ({err})") from err
    if backbone.family != family_of(backbone.model.config):
        raise CheckpointError(f"{path}: family mismatch")
    return backbone
