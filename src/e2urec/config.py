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


@dataclass
class PrepareConfig:
    """How raw MovieLens ratings become prompt samples (docs/architecture.md, "Protocol")."""

    dataset: Literal["ml-100k", "ml-1m"] = option("ml-100k", help="which MovieLens")
    protocol: Literal["users", "paper"] = option(
        "users", help="users: a seeded draw of users, each with the same rows (their last "
        "test_rows test, valid_rows before, train_rows before that), so that no one person "
        "decides a group's figure; paper: the paper's newest window split 60/20/20 in time "
        "(docs/architecture.md, \"Protocol\")")
    users: int = option(500, help="users protocol: users drawn (among those with enough "
                        "rated rows)")
    train_rows: int = option(8, help="users protocol: training-period rows a user")
    valid_rows: int = option(1, help="users protocol: valid rows a user")
    test_rows: int = option(2, help="users protocol: test rows a user (their newest)")
    min_group_users: int = option(50, help="users protocol: the forgotten, probe and audit "
                                  "groups each hold at least this many users (fewer and one "
                                  "person moves a group's figure)")
    data_dir: str | None = option(None, help="folder with the raw files; None searches "
                                  "$E2UREC_DATA_DIR, the cache, the recbole wheel, GroupLens")
    window: int | None = option(None, help="keep the newest this many samples (None: all; "
                                "the paper takes 100,000 of ML-1M)")
    history: int = option(10, help="past ratings shown in a prompt")
    min_history: int = option(5, help="a rating becomes a sample once its user has this many "
                              "earlier ratings")
    forget_fraction: float = option(0.2, help="share of training users to forget")
    forget_users: list[str] | None = option(None, help="explicit user ids to forget "
                                            "(instead of forget_fraction)")
    shards: int = option(4, help="shards for SISA and RecEraser")
    holdout_fraction: float = option(0.2, help="share of training-period users no model "
                                     "trains on, split into probe (stop decisions) and audit "
                                     "(membership audit) halves; 0 keeps none")
    min_holdout_users: int = option(8, help="hold out at least this many users whatever the "
                                    "fraction (a store verifies a request against the audit "
                                    "half, so each half needs a few users)")
    canaries: int = option(0, help="forgotten users whose training prompts get a planted "
                           "trigger with a fixed answer (the canary audit)")
    canary_answer: Literal["Yes.", "No.", "mixed"] = option(
        "mixed", help="the planted answer; mixed: half the canary users Yes., half No. (a "
        "made-up title alone then predicts no answer: only a user's own trigger does)")
    min_canary_users: int = option(8, help="with canaries: plant at least this many users "
                                   "(each has a trigger of their own)")
    min_canary_rows: int = option(40, help="with canaries: the canary probe (the canary "
                                  "users' unplanted rows, asked with and without the "
                                  "trigger) holds at least this many rows")
    seed: int = option(42, help="seed of the holdout, forget-user and canary draws and the "
                       "shards")
    allow_modified_data: bool = option(False, help="accept raw files whose checksums differ "
                                       "from the published dataset (changed on purpose)")

    def validate(self) -> None:
        _check(self.window is None or self.window > 0, "window must be positive")
        _check(self.history > 0, "history must be positive")
        _check(self.min_history >= 1, "min_history must be at least 1")
        _check(0.0 < self.forget_fraction < 1.0, "forget_fraction must lie in (0, 1)")
        _check(self.shards >= 1, "shards must be at least 1")
        _check(0.0 <= self.holdout_fraction < 1.0, "holdout_fraction must lie in [0, 1)")
        _check(self.canaries >= 0, "canaries must be non-negative")
        _check(self.min_holdout_users >= 4, "min_holdout_users must be at least 4 (2 probe, "
               "2 audit)")
        _check(self.min_canary_users >= 2, "min_canary_users must be at least 2 (1 user is "
               "no group to measure a rate on)")
        if self.protocol == "users":
            _check(self.window is None, "window belongs to the paper protocol; the users "
                   "protocol sizes the data by users and train_rows (or set protocol: paper)")
            _check(self.users >= 4, "users must be at least 4")
            _check(min(self.train_rows, self.valid_rows, self.test_rows) >= 1,
                   "train_rows, valid_rows and test_rows must each be at least 1")


@dataclass
class BackboneConfig:
    """Which language model scores the prompts.

    ``name`` is ``tiny-llama``, ``tiny-t5``, ``smollm2-135m``, a hub id or a
    local folder. The ``tiny_*`` fields size the compact random-initialised
    models (defaults: the demo's); they are ignored for pretrained backbones.
    """

    name: str = option("tiny-llama", help="tiny-llama, tiny-t5, smollm2-135m, a hub id or a "
                       "local model folder")
    tiny_hidden: int = option(128, help="hidden size of a tiny model")
    tiny_layers: int = option(2, help="layers of a tiny model")
    tiny_heads: int = option(4, help="attention heads of a tiny model")
    tiny_intermediate: int = option(256, help="feed-forward size of a tiny model")
    tiny_vocab: int = option(4000, help="vocabulary of a tiny model's word-level tokenizer")
    tiny_title_tokens: bool = option(True, help="a tiny tokenizer also holds each catalogue "
                                     "title as one token: movies as their own tokens")
    tiny_tie_embeddings: bool = option(True, help="a tiny model's output layer shares the "
                                       "input embeddings")
    max_prompt_tokens: int = option(512, help="longer prompts lose their oldest history")

    def validate(self) -> None:
        _check(self.tiny_hidden % self.tiny_heads == 0, "tiny_hidden must divide by tiny_heads")
        _check(self.max_prompt_tokens >= 16, "max_prompt_tokens must be at least 16")


@dataclass
class LoraConfig:
    """LoRA adapter settings (paper: r 16, alpha 32, dropout 0.05 on q and v)."""

    r: int = option(16, help="adapter rank")
    alpha: int = option(32, help="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = option(0.05, help="dropout on the adapter input")
    targets: list[str] = option(help="layers to adapt: short names (q, v, ...) or all-linear",
                                factory=lambda: ["q", "v"])

    def validate(self) -> None:
        _check(self.r > 0, "lora r must be positive")
        _check(bool(self.targets), "lora targets must not be empty")


@dataclass
class TrainConfig:
    """Fine-tuning a backbone on one split (Original, Retrain, shard models).

    The defaults are the demo's: 3 epochs at lr 1e-3 without early stopping and
    the loss on the Yes/No token, which makes the Original a real recommender
    that memorises its training users (docs/results.md, "Choosing the regime").
    """

    epochs: int = option(3, help="passes over the training split")
    lr: float = option(1e-3, help="AdamW learning rate")
    batch_size: int = option(16, help="samples a step")
    eval_batch_size: int = option(64, help="samples a forward pass when scoring")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    patience: int = option(1, help="epochs without a better valid loss before stopping")
    early_stopping: bool = option(False, help="keep the epoch with the lowest valid loss and "
                                  "stop after `patience` worse ones")
    answer_loss: Literal["answer", "decision"] = option(
        "decision", help="answer: cross-entropy over every answer token; decision: the Yes/No "
        "token only")
    use_lora: bool = option(False, help="train LoRA adapters on a frozen backbone")
    lora: LoraConfig = option(help="adapter settings when use_lora", factory=LoraConfig)
    max_samples: int | None = option(None, help="train on at most this many samples")
    max_steps: int | None = option(None, help="stop after this many steps (a budget in steps, "
                                   "as the reference code's checkpoints)")
    seed: int = option(42, help="seed of initialisation, shuffling and dropout")

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
