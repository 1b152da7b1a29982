"""A study's configuration: data, backbone, training, methods, seeds."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2urec.config import (
    BackboneConfig,
    ConfigError,
    PrepareConfig,
    TrainConfig,
    from_dict,
    merge_dicts,
    option,
    read_config_file,
    to_dict,
)
from e2urec.methods import get_method
from e2urec.methods.registry import parse_options


@dataclass
class StudyConfig:
    """One comparison: data, backbone, training of Original/Retrain/shards, methods."""

    name: str = "study"
    data: PrepareConfig = field(default_factory=PrepareConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: dict[str, Any] = field(default_factory=dict)
    eval_batch_size: int = option(64, help="samples a forward pass when scoring")
    eval_max_samples: int | None = option(None, help="score at most this many samples of "
                                          "every split but test and forget")
    ranking_positives: int = option(100, help="liked test samples ranked against 99 "
                                    "unrated movies for HR@10 / NDCG@10 (0: none)")
    cpu: bool = option(False, help="train and score on the CPU even with a GPU")
    references: int = option(4, help="the auditor's reference models a seed (the Original's "
                             "recipe on seeded halves of the users; even, at least 4; 0: "
                             "none, and the verdict's membership measure is the loss "
                             "threshold attack's); no method reads them")
    seeds: list[int] | None = option(None, help="run every stage once per seed (data, "
                                     "training and method seeds); the table shows mean ± std")
    threads: int | None = option(None, help="torch CPU threads (None: the cores not busy)")

    def validate(self) -> None:
        if not self.methods:
            raise ConfigError("methods: name at least one unlearning method")
        for name, options in self.methods.items():
            parse_options(method_of(name), options, f"methods.{name}")
        if self.eval_max_samples is not None and self.eval_max_samples < 10:
            raise ConfigError("eval_max_samples must be at least 10")


def method_of(entry: str) -> str:
    """``e2urec/answer`` names a variant of ``e2urec``: the part before the slash."""
    return entry.split("/", 1)[0]


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """A study from YAML; ``extends: other.yaml`` starts from another study's settings,
    and ``overrides`` (nested, as :func:`parse_overrides` gives) go over the file's.
    A method's ``grid`` becomes one variant per combination (:func:`expand_grids`)."""
    path = Path(path)
    data = merge_dicts(read_config_file(path), overrides or {})
    if isinstance(data.get("methods"), dict):
        data["methods"] = expand_grids(data["methods"])
    return from_dict(StudyConfig, data, path.name)


def expand_grids(methods: dict[str, Any]) -> dict[str, Any]:
    """``npo: {grid: {schedule.lr_scale: [0.3, 1]}, stop: {kind: none}}`` becomes
    ``npo/lr_scale=0.3`` and ``npo/lr_scale=1``, each with the other options: a sweep
    is a study (every variant a method stage, scored and judged like any other)."""
    out: dict[str, Any] = {}
    for name, options in methods.items():
        options = dict(options or {})
        grid = options.pop("grid", None)
        if grid is None:
            out[name] = options
            continue
        if not isinstance(grid, dict) or not grid or not all(
                isinstance(v, list) and v for v in grid.values()):
            raise ConfigError(f"methods.{name}.grid: give each option key (dotted for a "
                              "nested one) a non-empty list of values")
        for values in itertools.product(*grid.values()):
            label = ",".join(f"{key.rsplit('.', 1)[-1]}={value}"
                             for key, value in zip(grid, values, strict=True))
            variant = options
            for key, value in zip(grid, values, strict=True):
                variant = merge_dicts(variant, _nested(key, value))
            out[f"{name}/{label}"] = variant
    return out


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    *parents, leaf = dotted.split(".")
    node: dict[str, Any] = {leaf: value}
    for part in reversed(parents):
        node = {part: node}
    return node


def seeded(study: StudyConfig, seed: int | None) -> StudyConfig:
    """The study with every seed (data, training, each method's) set to ``seed``."""
    if seed is None:
        return study
    methods = {}
    for name, options in study.methods.items():
        methods[name] = get_method(method_of(name)).with_seed(options or {}, seed)
    return dataclasses.replace(study, data=dataclasses.replace(study.data, seed=seed),
                               train=dataclasses.replace(study.train, seed=seed),
                               methods=methods)


def method_stage_key(base_key: dict[str, Any], name: str, options: dict[str, Any] | None
                     ) -> dict[str, Any]:
    """A method's stage key: its resolved options, defaults included, so a stage made
    under other defaults (an older version) is never reused for this one."""
    resolved = to_dict(parse_options(method_of(name), options or {}))
    return {**base_key, "method": name, "options": resolved}


SECOND_RETRAIN = "retrain-2"


SECOND_SEED_OFFSET = 1000  # the second Retrain's training seed: the study's plus this


def second_retrain(study: StudyConfig) -> StudyConfig:
    """The study with the training seed moved: the second Retrain's settings."""
    return dataclasses.replace(study, train=dataclasses.replace(
        study.train, seed=study.train.seed + SECOND_SEED_OFFSET))
