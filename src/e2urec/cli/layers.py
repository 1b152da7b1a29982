"""A run's settings, layered: defaults < --config file < --set overrides < flags."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from e2urec.config import (
    BackboneConfig,
    ConfigError,
    TrainConfig,
    from_dict,
    merge_dicts,
    parse_overrides,
    read_config_file,
)

# What `train` and `unlearn` read from a --config file; a study's other sections are skipped.
RUN_SECTIONS = ("backbone", "train", "method")


def load_sections(args: argparse.Namespace) -> dict[str, Any]:
    """Config layers, lowest first: defaults < --config file < --set overrides.

    Explicit flags come last, in :func:`run_configs`. A study file is read for
    its backbone and train sections (and, for ``unlearn``, the options of the
    method named by --method under ``methods:``).
    """
    from e2urec.bench.config import StudyConfig

    study_sections = {f.name for f in dataclasses.fields(StudyConfig)}
    sections: dict[str, Any] = {}
    if getattr(args, "config", None):
        loaded = read_config_file(args.config)
        unknown = sorted(set(loaded) - set(RUN_SECTIONS) - study_sections)
        if unknown:
            raise ConfigError(f"{args.config}: unknown section(s) {unknown}; a run reads "
                              f"{', '.join(RUN_SECTIONS)} (and skips a study's other sections)")
        methods = loaded.get("methods") or {}
        method = getattr(args, "method", None)
        if "method" not in loaded and isinstance(methods, dict) and method in methods:
            loaded["method"] = methods[method] or {}
        sections = {k: v for k, v in loaded.items() if k in RUN_SECTIONS}
    for key, value in parse_overrides(getattr(args, "set", [])).items():
        if key not in RUN_SECTIONS:
            raise ConfigError(f"--set {key}...: unknown section {key!r}; use "
                              f"{', '.join(RUN_SECTIONS)}")
        if isinstance(value, dict) and isinstance(sections.get(key), dict):
            sections[key] = merge_dicts(sections[key], value)
        else:
            sections[key] = value
    return sections


def run_configs(args: argparse.Namespace) -> tuple[BackboneConfig, TrainConfig, dict]:
    """The backbone, training and method settings of ``train``/``unlearn``: flags win."""
    sections = load_sections(args)
    backbone = dict(sections.get("backbone") or {})
    if args.model is not None:
        backbone["name"] = args.model
    train = dict(sections.get("train") or {})
    flags = {"epochs": getattr(args, "epochs", None), "lr": getattr(args, "lr", None),
             "batch_size": getattr(args, "batch_size", None), "seed": args.seed}
    train.update({k: v for k, v in flags.items() if v is not None})
    if getattr(args, "lora", False):
        train["use_lora"] = True
    option_flags = parse_overrides(getattr(args, "option", []))
    options = merge_dicts(sections.get("method") or {}, option_flags)
    return (from_dict(BackboneConfig, backbone, "backbone"),
            from_dict(TrainConfig, train, "train"), options)
