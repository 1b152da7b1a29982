"""The methods by name: registered on import, with their typed options."""


from __future__ import annotations

import dataclasses
from typing import Any

from e2urec.config import (
    ConfigError,
    from_dict,
    merge_dicts,
)
from e2urec.methods.base import Unlearner

REGISTRY: dict[str, type[Unlearner]] = {}


def register(cls: type[Unlearner]) -> type[Unlearner]:
    """Class decorator: make a method available by its ``name``."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise TypeError(f"{cls.__name__} needs a string `name`")
    if name in REGISTRY and REGISTRY[name] is not cls:
        raise ValueError(f"two methods are named {name!r}")
    if not dataclasses.is_dataclass(getattr(cls, "Options", None)):
        raise TypeError(f"{cls.__name__}.Options must be a dataclass")
    REGISTRY[name] = cls
    return cls


def get_method(name: str) -> type[Unlearner]:
    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def parse_options(name: str, options: dict[str, Any] | None, where: str = "") -> Any:
    """A method's options, typed; ``preset: NAME`` starts from one of its presets."""
    method_cls = get_method(name)
    options = dict(options or {})
    preset = options.pop("preset", None)
    if preset is not None:
        if preset not in method_cls.presets:
            known = ", ".join(sorted(method_cls.presets)) or "none"
            raise ConfigError(f"{where or 'method ' + name}: unknown preset {preset!r} "
                              f"(presets of {name}: {known})")
        options = merge_dicts(method_cls.presets[preset], options)
    return from_dict(method_cls.Options, options, where or f"method {name}")
