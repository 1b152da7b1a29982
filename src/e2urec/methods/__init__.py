"""Unlearning methods, one module each, found and registered on import."""

import importlib
import pkgutil

from e2urec.methods.base import Unlearner
from e2urec.methods.registry import REGISTRY, get_method, register
from e2urec.methods.run import run_method

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Unlearner", "get_method", "register", "run_method"]
