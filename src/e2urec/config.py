"""Typed configuration: dataclasses in, unknown keys and wrong types rejected.

Configuration flows one way: command line or YAML file -> these dataclasses ->
code. Nothing reads the environment or global state behind the config's back,
except the documented data search path (see :mod:`e2urec.data.sources`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message says which and why."""


@dataclass
class PrepareConfig:
    """How raw MovieLens ratings become prompt samples (method.md section 2)."""

    dataset: Literal["ml-100k", "ml-1m"] = "ml-100k"
    data_dir: str | None = None
    window: int = 100_000
    history: int = 10
    min_history: int = 5
    forget_fraction: float = 0.2
    forget_users: list[str] | None = None
    shards: int = 4
    seed: int = 42

    def validate(self) -> None:
        _check(self.window > 0, "window must be positive")
        _check(self.history > 0, "history must be positive")
        _check(self.min_history >= 1, "min_history must be at least 1")
        _check(0.0 < self.forget_fraction < 1.0, "forget_fraction must lie in (0, 1)")
        _check(self.shards >= 1, "shards must be at least 1")


@dataclass
class BackboneConfig:
    """Which language model scores the prompts.

    ``name`` is ``tiny-llama``, ``tiny-t5``, ``smollm2-135m``, a hub id or a
    local folder. The ``tiny_*`` fields size the compact random-initialised
    models; they are ignored for pretrained backbones.
    """

    name: str = "tiny-llama"
    tiny_hidden: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 4
    tiny_intermediate: int = 128
    tiny_vocab: int = 4000
    max_prompt_tokens: int = 512

    def validate(self) -> None:
        _check(self.tiny_hidden % self.tiny_heads == 0, "tiny_hidden must divide by tiny_heads")
        _check(self.max_prompt_tokens >= 16, "max_prompt_tokens must be at least 16")


@dataclass
class LoraConfig:
    """LoRA adapter settings (paper: r 16, alpha 32, dropout 0.05 on q and v)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q", "v"])

    def validate(self) -> None:
        _check(self.r > 0, "lora r must be positive")
        _check(bool(self.targets), "lora targets must not be empty")


@dataclass
class TrainConfig:
    """Fine-tuning a backbone on one split (Original, Retrain, shard models)."""

    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 16
    eval_batch_size: int = 64
    weight_decay: float = 0.0
    patience: int = 1
    early_stopping: bool = True
    use_lora: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    max_samples: int | None = None
    seed: int = 42

    def validate(self) -> None:
        _check(self.epochs >= 1, "epochs must be at least 1")
        _check(self.lr > 0, "lr must be positive")
        _check(self.batch_size >= 1, "batch_size must be at least 1")
        _check(self.patience >= 0, "patience must be non-negative")
        self.lora.validate()


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    data = dict(data or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        key = unknown[0]
        hint = difflib.get_close_matches(key, known, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(
            f"{where}: unknown key {key!r}{suggestion} (known: {', '.join(sorted(known))})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    return _coerce_scalar(tp, value, where)


def _coerce_scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Turn ``["a=1", "lora.r=8"]`` into a nested dict of strings (typed later)."""
    result: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like key=value")
        key, value = pair.split("=", 1)
        node = result
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value.strip()
    return result


def to_dict(obj: Any) -> Any:
    """A JSON-ready view of (nested) dataclasses, dicts and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def config_hash(*parts: Any) -> str:
    """A short stable digest of configs, used to key cached stages."""
    text = json.dumps([to_dict(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]

