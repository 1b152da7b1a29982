"""Typed configuration: dataclasses in, unknown keys and wrong types rejected.

Configuration flows one way: command line or YAML file -> these dataclasses ->
code. Nothing reads the environment or global state behind the config's back,
except the documented data search path (see :mod:`e2urec.data.sources`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from e2urec.config.typed import (
    MERGED_SECTIONS,
    ConfigError,
    check,
    config_hash,
    from_dict,
    help_of,
    merge_dicts,
    option,
    parse_overrides,
    read_config_file,
    to_dict,
)

__all__ = ["MERGED_SECTIONS", "BackboneConfig", "ConfigError", "LoraConfig", "PrepareConfig",
           "TrainConfig", "config_hash", "from_dict", "help_of", "merge_dicts", "option",
           "parse_overrides", "read_config_file", "to_dict"]


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
        check(self.window is None or self.window > 0, "window must be positive")
        check(self.history > 0, "history must be positive")
        check(self.min_history >= 1, "min_history must be at least 1")
        check(0.0 < self.forget_fraction < 1.0, "forget_fraction must lie in (0, 1)")
        check(self.shards >= 1, "shards must be at least 1")
        check(0.0 <= self.holdout_fraction < 1.0, "holdout_fraction must lie in [0, 1)")
        check(self.canaries >= 0, "canaries must be non-negative")
        check(self.min_holdout_users >= 4, "min_holdout_users must be at least 4 (2 probe, "
               "2 audit)")
        check(self.min_canary_users >= 2, "min_canary_users must be at least 2 (1 user is "
               "no group to measure a rate on)")
        if self.protocol == "users":
            check(self.window is None, "window belongs to the paper protocol; the users "
                   "protocol sizes the data by users and train_rows (or set protocol: paper)")
            check(self.users >= 4, "users must be at least 4")
            check(min(self.train_rows, self.valid_rows, self.test_rows) >= 1,
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
        check(self.tiny_hidden % self.tiny_heads == 0, "tiny_hidden must divide by tiny_heads")
        check(self.max_prompt_tokens >= 16, "max_prompt_tokens must be at least 16")


@dataclass
class LoraConfig:
    """LoRA adapter settings (paper: r 16, alpha 32, dropout 0.05 on q and v)."""

    r: int = option(16, help="adapter rank")
    alpha: int = option(32, help="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = option(0.05, help="dropout on the adapter input")
    targets: list[str] = option(help="layers to adapt: short names (q, v, ...) or all-linear",
                                factory=lambda: ["q", "v"])

    def validate(self) -> None:
        check(self.r > 0, "lora r must be positive")
        check(bool(self.targets), "lora targets must not be empty")


@dataclass
class TrainConfig:
    """Fine-tuning a backbone on one split (Original, Retrain, shard models).

    The defaults are the demo's: 3 epochs at lr 1e-3 without early stopping and
    the loss on the Yes/No token, which makes the Original a real recommender
    that memorises its training users (docs/history.md, "Choosing the regime").
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
        check(self.epochs >= 1, "epochs must be at least 1")
        check(self.lr > 0, "lr must be positive")
        check(self.batch_size >= 1, "batch_size must be at least 1")
        check(self.patience >= 0, "patience must be non-negative")
        self.lora.validate()


