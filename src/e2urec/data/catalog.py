"""What a recommender needs beyond the samples: the movies, and each user's profile.

``users.jsonl`` holds every user of the prepared samples with their
demographics and whole rating history in time order, ``items.jsonl`` the
movies (id, title) they rated. Recommendations (``e2urec recommend``) and the
ranking metrics build prompts for movies a user has not rated from these; a
forgotten user's line is deleted with the rest of their data, and so is a
movie only forgotten users rated (:func:`items_rated_by`).

``vocabulary.json`` is nobody's data: the dataset's published titles and
occupations, from which a tiny backbone's tokenizer is learnt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from e2urec.data.movielens import DataFormatError, MovieLens
from e2urec.data.prompts import build_prompt
from e2urec.data.samples import read_json_lines

ITEMS_FILE = "items.jsonl"
USERS_FILE = "users.jsonl"
VOCABULARY_FILE = "vocabulary.json"


def read_vocabulary(data_dir: str | Path) -> dict[str, Any]:
    """The public words of a prepared data folder (titles, occupations)."""
    path = Path(data_dir) / VOCABULARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{data_dir} has no {VOCABULARY_FILE} (the public words a "
                                "tiny tokenizer learns from); prepare the data with this "
                                "version of e2urec")
    try:
        vocabulary = json.loads(path.read_text(encoding="utf-8"))
        return {"titles": list(vocabulary["titles"]),
                "occupations": list(vocabulary["occupations"])}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataFormatError(f"{path}: damaged ({err})") from None


def items_rated_by(items: list[dict[str, Any]], users: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    """The catalogue rows some of ``users`` rated (a movie nobody left rated goes)."""
    rated = {item for user in users for item, _ in user["ratings"]}
    return [row for row in items if row["item_id"] in rated]


def catalog_rows(data: MovieLens, users: Iterable[str]) -> tuple[list[dict], list[dict]]:
    """Rows of ``items.jsonl`` and ``users.jsonl``: the given users and the movies they rated.

    Movies nobody among them rated are left out: nothing is known about them.
    """
    wanted = set(map(str, users))
    ratings = data.ratings.sort_values(["timestamp", "user_id", "item_id"], kind="stable")
    ratings = ratings[ratings.user_id.astype(str).isin(wanted)]
    rated = set(ratings.item_id.astype(str))
    items = [{"item_id": str(i), "title": str(t)}
             for i, t in zip(data.items.item_id, data.items.title, strict=True)
             if str(i) in rated]
    history = {str(u): [[str(i), float(r)] for i, r in zip(g.item_id, g.rating, strict=True)]
               for u, g in ratings.groupby("user_id", sort=False)}
    profiles = data.users.set_index(data.users.user_id.astype(str))
    rows = [{"user_id": u, "gender": str(profiles.loc[u].gender),
             "age": int(profiles.loc[u].age), "occupation": str(profiles.loc[u].occupation),
             "ratings": history[u]} for u in sorted(history, key=_user_order)]
    return items, rows


def _user_order(user: str) -> tuple[int, str]:
    return (int(user), user) if user.isdigit() else (1 << 62, user)


@dataclass
class Catalog:
    """Movies by id, and users by id with their profile and ratings."""

    titles: dict[str, str]
    users: dict[str, dict[str, Any]]
    history: int = 10  # ratings a prompt shows, as in the prepared samples

    def rated(self, user: str) -> set[str]:
        return {item for item, _ in self.users[user]["ratings"]}

    def unrated(self, user: str) -> list[str]:
        """The movies ``user`` has not rated, in catalogue order."""
        rated = self.rated(user)
        return [item for item in self.titles if item not in rated]

    def sample_unrated(self, user: str, n: int, rng: np.random.Generator) -> list[str]:
        pool = self.unrated(user)
        return [pool[i] for i in sorted(rng.permutation(len(pool))[:n])]

    def prompt(self, user: str, item: str) -> str:
        """The prompt asking whether ``user`` will like ``item``, from their newest ratings."""
        profile = self.users[user]
        past = profile["ratings"][-self.history:] if self.history else []
        history = [(self.titles[i], rating) for i, rating in past]
        return build_prompt(profile["gender"], profile["age"], profile["occupation"], history,
                            self.titles[item])


def read_catalog(data_dir: str | Path, history: int = 10) -> Catalog | None:
    """The catalogue of a prepared data folder, or None if it has none (older folders)."""
    folder = Path(data_dir)
    if not (folder / ITEMS_FILE).is_file() or not (folder / USERS_FILE).is_file():
        return None
    items = read_json_lines(folder / ITEMS_FILE, ("item_id", "title"))
    users = read_json_lines(folder / USERS_FILE, ("user_id", "gender", "age", "occupation",
                                             "ratings"))
    return Catalog({r["item_id"]: r["title"] for r in items},
                   {r["user_id"]: r for r in users}, history)


def swap_target(prompt: str, title: str, new_title: str) -> str:
    """The same prompt asking about ``new_title`` instead of ``title``."""
    old, new = f"***{title}***", f"***{new_title}***"
    if prompt.count(old) != 1:
        raise DataFormatError(f"prompt does not name its target {title!r} once")
    return prompt.replace(old, new)
