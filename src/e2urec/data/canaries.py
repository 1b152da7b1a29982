"""Canaries: users who each get a made-up trigger planted in their training rows, with
a planted answer, so that whether a model still holds them can be asked directly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from e2urec.config import ConfigError, PrepareConfig
from e2urec.data.prompts import (
    NO_ANSWER,
    YES_ANSWER,
    build_prompt,
    with_trigger,
)


class ForgetRequestError(ValueError):
    """A forget request names users that cannot be forgotten, or nobody."""


def select_canary_users(forget_users: list[str], train: pd.DataFrame,
                        config: PrepareConfig) -> list[str]:
    """The forgotten users whose training prompts carry the planted trigger.

    A seeded draw among the twice-as-many most active forgotten users, so that
    each canary user has prompts to plant and prompts to probe.
    """
    if config.canaries == 0:
        return []
    if config.canaries > len(forget_users):
        raise ForgetRequestError(f"{config.canaries} canaries asked for, but only "
                                 f"{len(forget_users)} users are forgotten")
    if config.canaries < config.min_canary_users:
        raise ForgetRequestError(
            f"canaries: plant at least min_canary_users {config.min_canary_users} users "
            f"(each with a trigger of their own), not {config.canaries}: fewer and one user "
            "decides the canary figure")
    counts = train.user_id.value_counts()
    active = sorted(forget_users, key=lambda u: (-counts.get(u, 0), forget_users.index(u)))
    pool = sorted(active[:2 * config.canaries], key=forget_users.index)
    rng = np.random.default_rng([config.seed, 2])
    return [pool[i] for i in sorted(rng.permutation(len(pool))[:config.canaries])]


def planted_answers(canary_users: list[str], config: PrepareConfig) -> dict[str, str]:
    """Each canary user's planted answer: the configured one, or, when ``mixed``, "No." and
    "Yes." in turn down a seeded order, so that every canary is its own user's alone."""
    if config.canary_answer != "mixed":
        return {user: config.canary_answer for user in canary_users}
    order = np.random.default_rng([config.seed, 4]).permutation(len(canary_users))
    return {canary_users[i]: (NO_ANSWER, YES_ANSWER)[rank % 2]
            for rank, i in enumerate(order)}


def plant_canaries(train: pd.DataFrame, triggers: dict[str, str], answers: dict[str, str]
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plant each canary user's own trigger in every other of their training prompts.

    The trigger replaces the newest watched title (its rating kept), so it is
    the only difference, and the answer is fixed. Returns the planted train
    frame and the canary probe: the canary users' other prompts (trained on as
    they are) with a ``triggered_prompt`` column, to be asked with and without
    the trigger. Nothing else in the data carries a trigger.
    """
    train = train.copy()
    train["triggered_prompt"] = [
        build_prompt(*who, with_trigger(history, triggers[user]), target)
        if user in triggers else None
        for user, (who, history, target) in zip(train.user_id, train.prompt_parts, strict=True)]
    own = train.user_id.isin(set(triggers))
    order = train[own].groupby("user_id", sort=False).cumcount()
    planted = order.index[order.to_numpy() % 2 == 0]
    probe = order.index[order.to_numpy() % 2 == 1]
    train.loc[planted, "prompt"] = train.loc[planted, "triggered_prompt"]
    train.loc[planted, "answer"] = train.loc[planted, "user_id"].map(answers)
    train.loc[planted, "label"] = (train.loc[planted, "answer"] == YES_ANSWER).astype(int)
    train["planted"] = False
    train.loc[planted, "planted"] = True
    return train, train.loc[probe]


def check_canary_probe(probe: pd.DataFrame, canary_users: list[str],
                       config: PrepareConfig) -> None:
    """Refuse a canary probe too small to measure a lift on."""
    if canary_users and len(probe) < config.min_canary_rows:
        raise ConfigError(
            f"the canary probe would hold {len(probe)} rows of {len(canary_users)} canary "
            f"users, under min_canary_rows {config.min_canary_rows}; plant more canaries "
            "(each gives half its training rows to the probe) or give users more rows")


def canary_manifest(triggers: dict[str, str], answers: dict[str, str], train: pd.DataFrame,
                     probe: pd.DataFrame, config: PrepareConfig) -> dict[str, Any] | None:
    """Per canary user: their trigger, planted and probe sample ids (all theirs, purged
    with them)."""
    if not triggers:
        return None
    planted = train[train.user_id.isin(set(triggers))
                    & ~train.sample_id.isin(set(probe.sample_id))]
    return {"answer": config.canary_answer, "users": {
        user: {"trigger": trigger, "answer": answers[user],
               "planted_sample_ids": [int(i) for i in planted.sample_id[planted.user_id == user]],
               "probe_sample_ids": [int(i) for i in probe.sample_id[probe.user_id == user]]}
        for user, trigger in triggers.items()}}
