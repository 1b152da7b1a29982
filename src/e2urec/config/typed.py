"""Typed configuration machinery: dataclasses in, unknown keys and wrong types rejected.

``from_dict`` builds a dataclass from a mapping (typo hints, types coerced),
``read_config_file`` reads YAML with ``extends:``, ``parse_overrides`` and
``merge_dicts`` layer ``--set`` over a file; ``config_hash`` keys cached stages.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message says which and why."""


def option(default: Any = dataclasses.MISSING, *, help: str, factory: Any = None) -> Any:
    """A dataclass field with its help text (shown by ``docs/methods.md`` and ``--help``)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def help_of(cls: type, name: str) -> str:
    """The help text of field ``name`` of dataclass ``cls`` ("" when it has none)."""
    return next((f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name),
                "")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    data = dict(data or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    hints = typing.get_type_hints(cls)
    if unknown:
        key = unknown[0]
        nested = [f"{name}.{key}" for name, tp in hints.items() if dataclasses.is_dataclass(tp)
                  and key in {f.name for f in dataclasses.fields(tp)}]
        hint = nested or difflib.get_close_matches(key, known, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(
            f"{where}: unknown key {key!r}{suggestion} (known: {', '.join(sorted(known))})"
        )
    for key, value in data.items():
        # A nested block given in part keeps this class's defaults for the rest (NegGrad's
        # schedule starts from NegGrad's lr and epochs, not from Schedule's own defaults).
        default = known[key].default_factory
        if isinstance(value, dict) and default is not dataclasses.MISSING:
            instance = default()
            if dataclasses.is_dataclass(instance):
                data[key] = {**dataclasses.asdict(instance), **value}
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """``value`` as type ``tp``, or a ConfigError naming ``where``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(typing.get_args(tp), value, where)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is list:
        return _coerce_list(typing.get_args(tp), value, where)
    if origin is dict or dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(tp) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where) if dataclasses.is_dataclass(tp) else dict(value)
    scalar = SCALARS.get(tp)
    return scalar(value, where) if scalar else value


def _coerce_union(args: tuple[Any, ...], value: Any, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _coerce(arg, value, where)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")


def _coerce_list(args: tuple[Any, ...], value: Any, where: str) -> list[Any]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return [_coerce(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(value)]


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
        return value.lower() in {"true", "1", "yes"}
    raise ConfigError(f"{where}: expected true/false, got {value!r}")


def _to_int(value: Any, where: str) -> int:
    number = _to_float(value, where, "an integer")
    if not number.is_integer():
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return int(number)


def _to_float(value: Any, where: str, what: str = "a number") -> float:
    if isinstance(value, bool):  # True is an int to Python, never a number to a config
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {what}, got {value!r}") from None


def _to_str(value: Any, where: str) -> str:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}: expected a string, got {value!r}")


SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


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


def merge_dicts(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = merge_dicts(base[key], value) if both else value
    return merged


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


MERGED_SECTIONS = ("data", "backbone", "train")


def read_config_file(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as a dict; ``extends: other.yaml`` starts from another file.

    Sections named in ``MERGED_SECTIONS`` merge key by key; anything else (a
    study's method list, say) is replaced whole by the extending file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' takes the path of one config file")
    base = read_config_file(path.parent / parent, (*seen, path.resolve()))
    merged = {**base, **raw}
    for section in MERGED_SECTIONS:
        if isinstance(base.get(section), dict) and isinstance(raw.get(section), dict):
            merged[section] = {**base[section], **raw[section]}
    return merged
