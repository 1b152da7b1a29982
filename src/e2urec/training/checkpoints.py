"""Model folders on disk: atomic safetensors saves, adapters on a base, run records.

A model folder holds ``save_pretrained`` output (safetensors) and
``e2urec_model.json``: the family, the kind (``model``, ``adapter`` on a base
folder, or ``ensemble`` of member folders) and whatever the writer adds. A
folder is written under a temporary name and renamed into place, so a crash
leaves either the old folder or the new one, never half of one.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from e2urec.backbones.registry import Backbone, family_of, load_pretrained
from e2urec.fileio import atomic_dir, write_json

META_FILE = "e2urec_model.json"


class CheckpointError(FileNotFoundError):
    """A model folder is missing or incomplete."""


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
    info = {"kind": "adapter" if is_adapter else "model", "family": backbone.family,
            "max_prompt_tokens": backbone.max_prompt_tokens,
            "base": str(Path(base_dir).resolve()) if is_adapter else None,
            "versions": library_versions(), **(meta or {})}
    with atomic_dir(out_dir) as tmp:
        backbone.model.save_pretrained(tmp)
        backbone.tokenizer.save_pretrained(tmp)
        write_json(tmp / META_FILE, info)
    return Path(out_dir)


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise CheckpointError(f"{path} is not an e2urec model folder (no {META_FILE}); "
                              "train one with `e2urec train` or `e2urec unlearn`")
    return json.loads(meta_file.read_text())


def load_model(path: str | Path, trainable_adapter: bool = False,
               merged: bool = False) -> Backbone:
    """Load a model folder; an adapter folder comes back on its (reloaded) base.

    With ``merged`` an adapter is folded into its base and a plain model comes
    back: what a method needs that trains on top of a LoRA-tuned Original.
    """
    path = Path(path)
    meta = read_meta(path)
    if meta["kind"] == "ensemble":
        raise CheckpointError(f"{path} is an ensemble; load it with load_scorer")
    if meta["kind"] == "adapter":
        base = load_model(meta["base"], merged=True)  # an adapter may sit on an adapter
        model = PeftModel.from_pretrained(base.model, path, is_trainable=trainable_adapter)
        if merged:
            model = model.merge_and_unload()
        return Backbone(model, base.tokenizer, base.family, meta["max_prompt_tokens"])
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: incomplete model folder (no config.json)")
    try:
        backbone = load_pretrained(path, meta["max_prompt_tokens"])
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: incomplete model folder ({err})") from err
    if backbone.family != family_of(backbone.model.config):
        raise CheckpointError(f"{path}: family mismatch")
    return backbone
