"""The paper's data protocol: history, window, time split, forget set, shards.

``prepare`` is pure (data + config -> :class:`Prepared`); ``write_prepared``
puts the result on disk atomically. Same input and seed give the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from e2urec.config import ConfigError, PrepareConfig, to_dict
from e2urec.data.canaries import (
    ForgetRequestError,
    canary_manifest,
    check_canary_probe,
    plant_canaries,
    planted_answers,
    select_canary_users,
)
from e2urec.data.catalog import ITEMS_FILE, USERS_FILE, VOCABULARY_FILE, catalog_rows
from e2urec.data.movielens import MovieLens
from e2urec.data.prompts import (
    answer_for,
    build_prompt,
    canary_triggers,
)
from e2urec.data.samples import MANIFEST_FILE, SHARDS_FILE, write_jsonl
from e2urec.data.sources import RawSource, find_raw, read_raw
from e2urec.fileio import atomic_dir


@dataclass
class Prepared:
    splits: dict[str, list[dict[str, Any]]]
    shards: dict[str, Any]
    manifest: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)  # the movie catalogue
    users: list[dict[str, Any]] = field(default_factory=list)  # profiles and ratings
    vocabulary: dict[str, Any] = field(default_factory=dict)  # public words (no user's data)


def eligible_ratings(data: MovieLens, config: PrepareConfig
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All ratings in time order, and those with >= ``min_history`` earlier ratings."""
    ratings = data.ratings.sort_values(["timestamp", "user_id", "item_id"], kind="stable")
    ratings = ratings.reset_index(drop=True)
    ratings["n_history"] = ratings.groupby("user_id", sort=False).cumcount()
    return ratings, ratings[ratings.n_history >= config.min_history]


def paper_window(eligible: pd.DataFrame, config: PrepareConfig) -> pd.DataFrame:
    """The paper's protocol: the newest ``window`` eligible ratings."""
    if config.window is not None and config.window > len(eligible):
        raise ConfigError(f"window {config.window:,} exceeds the {len(eligible):,} samples "
                          f"{config.dataset} has (ratings with >= {config.min_history} earlier "
                          f"ratings); use a window of at most {len(eligible):,}")
    return eligible.tail(config.window or len(eligible))


def user_rows(eligible: pd.DataFrame, config: PrepareConfig) -> pd.DataFrame:
    """The users protocol: ``users`` users drawn with the seed, each user's newest
    ``train_rows + valid_rows + test_rows`` eligible ratings, in time order, with the
    split each row belongs to (``part``)."""
    per_user = config.train_rows + config.valid_rows + config.test_rows
    counts = eligible.user_id.value_counts()
    candidates = sorted(counts.index[counts >= per_user].map(str))
    if len(candidates) < config.users:
        raise ConfigError(f"users {config.users} asked for, but only {len(candidates)} users of "
                          f"{config.dataset} have {per_user} rated rows with >= "
                          f"{config.min_history} earlier ratings; ask for at most "
                          f"{len(candidates)} users or fewer rows a user")
    rng = np.random.default_rng([config.seed, 3])
    drawn = {candidates[i] for i in rng.permutation(len(candidates))[:config.users]}
    rows = eligible[eligible.user_id.astype(str).isin(drawn)]
    rows = rows.groupby("user_id", sort=False).tail(per_user)
    # Position from each user's newest row: test, then valid, then train.
    from_end = rows.groupby("user_id", sort=False).cumcount(ascending=False)
    part = np.where(from_end < config.test_rows, "test",
                    np.where(from_end < config.test_rows + config.valid_rows, "valid", "train"))
    return rows.assign(part=part)


def build_samples(data: MovieLens, config: PrepareConfig) -> pd.DataFrame:
    """The protocol's rows (newest window, or the drawn users' rows) with their prompts."""
    ratings, eligible = eligible_ratings(data, config)
    window = (user_rows(eligible, config) if config.protocol == "users"
              else paper_window(eligible, config)).reset_index(drop=True)

    titles = dict(zip(data.items.item_id, data.items.title, strict=True))
    users = data.users.set_index("user_id")
    by_user = {u: list(zip(g.item_id, g.rating, strict=True))
               for u, g in ratings.groupby("user_id", sort=False)}
    prompts, parts, answers = [], [], []
    for row in window.itertuples(index=False):
        past = by_user[row.user_id][max(0, row.n_history - config.history):row.n_history]
        user = users.loc[row.user_id]
        who = (str(user.gender), int(user.age), str(user.occupation))
        history = [(titles[item], rating) for item, rating in past]
        prompts.append(build_prompt(*who, history, titles[row.item_id]))
        parts.append((who, history, titles[row.item_id]))  # for a canary's triggered variant
        answers.append(answer_for(row.rating))
    window["prompt"] = prompts
    window["prompt_parts"] = parts
    window["answer"] = answers
    window["label"] = (window.rating > 3).astype(int)
    window["sample_id"] = np.arange(len(window))
    return window


def time_split(samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split in time order 60/20/20 into train/valid/test (the paper's protocol); the users
    protocol's rows carry their split already."""
    if "part" in samples:
        return {name: samples[samples.part == name] for name in ("train", "valid", "test")}
    n = len(samples)
    n_train, n_valid = int(n * 0.6), int(n * 0.2)
    return {
        "train": samples.iloc[:n_train],
        "valid": samples.iloc[n_train:n_train + n_valid],
        "test": samples.iloc[n_train + n_valid:],
    }


def select_holdout_users(train_users: list[str], config: PrepareConfig
                         ) -> tuple[list[str], list[str]]:
    """Training-period users no model trains on: (probe, audit), disjoint halves."""
    if config.holdout_fraction == 0:
        return [], []
    n = max(round(config.holdout_fraction * len(train_users)), config.min_holdout_users)
    if len(train_users) - n < 4:
        raise ForgetRequestError(
            f"the holdout ({n} of the training period's {len(train_users)} users: "
            f"holdout_fraction {config.holdout_fraction}, at least min_holdout_users "
            f"{config.min_holdout_users}) would leave fewer than 4 users to train on; "
            "lower them or widen the window")
    # A user who asked to be forgotten is never a holdout user.
    pool = [u for u in train_users if u not in set(config.forget_users or [])]
    rng = np.random.default_rng([config.seed, 1])
    held = [pool[i] for i in sorted(rng.permutation(len(pool))[:n])]
    return held[0::2], held[1::2]


def select_forget_users(train_users: list[str], config: PrepareConfig) -> list[str]:
    """The users to forget: an explicit list (validated) or a seeded fraction."""
    known = set(train_users)
    if config.forget_users is not None:
        requested = [str(u).strip() for u in config.forget_users if str(u).strip()]
        if not requested:
            raise ForgetRequestError("the forget request names no users")
        unknown = sorted(set(requested) - known)
        if unknown:
            raise ForgetRequestError(
                f"{len(unknown)} user id(s) in the forget request have no training samples: "
                f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}"
            )
        return sorted(set(requested), key=train_users.index)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(train_users))
    n_forget = max(1, round(config.forget_fraction * len(train_users)))
    if n_forget >= len(train_users):
        raise ForgetRequestError("the forget fraction would forget every training user")
    return [train_users[i] for i in sorted(order[:n_forget])]


def make_shards(train: pd.DataFrame, k: int, seed: int) -> dict[str, Any]:
    """SISA shards (random samples) and user-balanced shards (users never split)."""
    rng = np.random.default_rng(seed)
    random_shard = np.empty(len(train), dtype=int)
    random_shard[rng.permutation(len(train))] = np.arange(len(train)) % k
    counts = train.groupby("user_id", sort=False).size()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    loads = [0] * k
    user_shard: dict[str, int] = {}
    for user, count in order:
        shard = min(range(k), key=lambda s: (loads[s], s))
        user_shard[str(user)] = shard
        loads[shard] += int(count)
    return {
        "k": k,
        "sisa": {str(sid): int(s) for sid, s in zip(train.sample_id, random_shard, strict=True)},
        "user_balanced": user_shard,
    }


def prepare(data: MovieLens, config: PrepareConfig,
            provenance: dict[str, Any] | None = None) -> Prepared:
    """The protocol applied to ``data`` (pure); ``provenance`` goes into the manifest."""
    config.validate()
    samples = build_samples(data, config)
    if len(samples) < 10:
        raise ConfigError(f"only {len(samples)} samples have >= {config.min_history} history "
                          "items; the data is too small for the protocol")
    parts = time_split(samples)
    period = parts["train"]
    period_users = list(dict.fromkeys(period.user_id))
    probe_users, audit_users = select_holdout_users(period_users, config)
    held = set(probe_users) | set(audit_users)
    train_users = [u for u in period_users if u not in held]
    forget_users = select_forget_users(train_users, config)
    canary_users = select_canary_users(forget_users, period, config)
    triggers = canary_triggers(canary_users, data.items.title, config.seed)
    answers = planted_answers(canary_users, config)
    train, canary_probe = plant_canaries(period[~period.user_id.isin(held)], triggers, answers)
    check_canary_probe(canary_probe, canary_users, config)
    forgotten = train.user_id.isin(set(forget_users))
    parts.update(train=train, forget=train[forgotten], retain=train[~forgotten],
                 probe=period[period.user_id.isin(set(probe_users))],
                 audit=period[period.user_id.isin(set(audit_users))])
    if canary_users:
        parts["canary"] = canary_probe
    groups = group_shares(parts, forget_users, probe_users, audit_users)
    if config.protocol == "users":
        check_groups(groups, config)
    shards = make_shards(train, config.shards, config.seed)
    splits = {name: _records(df) for name, df in parts.items()}
    if canary_users:  # the probe is asked twice: as trained, and with the trigger
        for row, triggered in zip(splits["canary"], canary_probe.triggered_prompt, strict=True):
            row["triggered_prompt"] = triggered
    manifest = {
        "dataset": config.dataset,
        **(provenance or {}),
        "config": to_dict(config),
        "counts": {name: len(rows) for name, rows in splits.items()},
        "train_users": len(train_users),
        "groups": groups,
        "forget_user_ids": forget_users,
        "holdout_user_ids": {"probe": probe_users, "audit": audit_users},
        "canaries": canary_manifest(triggers, answers, train, canary_probe, config),
        "label_share_yes": {n: _share(rows) for n, rows in splits.items()},
    }
    items, users = catalog_rows(data, samples.user_id.unique())
    return Prepared(splits, shards, manifest, items, users, public_vocabulary(data))


def group_shares(parts: dict[str, pd.DataFrame], forget_users: list[str],
                 probe_users: list[str], audit_users: list[str]) -> dict[str, Any]:
    """Per group of users whose rows a verdict reads: its users, its rows (the forget
    group's unplanted ones) and the largest share of them one user holds."""
    forget = parts["forget"]
    if "planted" in forget:
        forget = forget[~forget.planted.astype(bool)]
    out = {}
    for name, frame, users in (("forget", forget, forget_users),
                               ("probe", parts["probe"], probe_users),
                               ("audit", parts["audit"], audit_users)):
        top = frame.user_id.value_counts().max() / len(frame) if len(frame) else None
        out[name] = {"users": len(users), "rows": len(frame),
                     "largest_user_share": None if top is None else round(float(top), 4)}
    return out


def check_groups(groups: dict[str, Any], config: PrepareConfig) -> None:
    """Refuse a users protocol whose forgotten, probe or audit group is too small."""
    for name, group in groups.items():
        if name != "forget" and config.holdout_fraction == 0:
            continue  # no holdout asked for: no stop rule and no verdict to feed
        if group["users"] < config.min_group_users:
            raise ConfigError(
                f"the {name} group would hold {group['users']} users, under min_group_users "
                f"{config.min_group_users} (users {config.users}, forget_fraction "
                f"{config.forget_fraction}, holdout_fraction {config.holdout_fraction}); "
                "draw more users or raise the fractions")


def public_vocabulary(data: MovieLens) -> dict[str, Any]:
    """The dataset's published movie titles and profile words: nobody's ratings.

    A tiny backbone's tokenizer learns from these and the prompt template only,
    so a store's tokenizer holds no word that only a forgotten user produced.
    """
    return {"about": "the dataset's published titles and occupations; no user's data",
            "titles": sorted(set(map(str, data.items.title))),
            "occupations": sorted(set(map(str, data.users.occupation)))}


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    planted = df.planted.astype(bool).tolist() if "planted" in df else [False] * len(df)
    return [
        {"sample_id": int(r.sample_id), "user_id": str(r.user_id), "item_id": str(r.item_id),
         "rating": float(r.rating), "timestamp": int(r.timestamp), "label": int(r.label),
         "prompt": r.prompt, "answer": r.answer, **({"planted": True} if mark else {})}
        for r, mark in zip(df.itertuples(index=False), planted, strict=True)
    ]


def _share(rows: list[dict[str, Any]]) -> float | None:
    return round(sum(r["label"] for r in rows) / len(rows), 4) if rows else None


def prepare_dataset(config: PrepareConfig, raw: RawSource | None = None) -> Prepared:
    """The one prepare path (CLI, bench, benchmarks): find, check, read, apply the protocol."""
    raw = raw or find_raw(config)
    return prepare(read_raw(raw, config), config,
                   {"source": str(raw.folder), "raw_sha256": raw.digest})


def write_prepared(prepared: Prepared, out_dir: str | Path) -> Path:
    """Write every split, the shards and the manifest; replace ``out_dir`` atomically."""
    with atomic_dir(out_dir) as tmp:
        for name, rows in prepared.splits.items():
            write_jsonl(tmp / f"{name}.jsonl", rows)
        write_jsonl(tmp / ITEMS_FILE, prepared.items)
        write_jsonl(tmp / USERS_FILE, prepared.users)
        (tmp / VOCABULARY_FILE).write_text(json.dumps(prepared.vocabulary, indent=1) + "\n")
        (tmp / SHARDS_FILE).write_text(json.dumps(prepared.shards, indent=1) + "\n")
        (tmp / MANIFEST_FILE).write_text(json.dumps(prepared.manifest, indent=2) + "\n")
    return Path(out_dir)
