"""The paper's "simple" prompt template (docs/architecture.md, "Protocol")."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

YES_ANSWER = "Yes."
NO_ANSWER = "No."


def answer_for(rating: float, threshold: float = 3.0) -> str:
    """The target text: "Yes." when the rating is above ``threshold``."""
    return YES_ANSWER if rating > threshold else NO_ANSWER


def _stars(rating: float) -> str:
    value = int(rating) if float(rating).is_integer() else rating
    return f"{value} star" if value == 1 else f"{value} stars"


def build_prompt(gender: str, age: int, occupation: str,
                 history: Sequence[tuple[str, float]], target_title: str) -> str:
    """A Yes/No recommendation prompt for one user and one candidate item."""
    male = gender.upper().startswith("M")
    he, his = ("he", "his") if male else ("she", "her")
    watched = [f"{i}. {title} ({_stars(rating)})" for i, (title, rating) in enumerate(history)]
    return (
        f"The user is a {'male' if male else 'female'}. {his.capitalize()} job is {occupation}. "
        f"{his.capitalize()} age is {age}.\n"
        f"{he.capitalize()} watched the following movies in order in the past, and rated them:\n"
        f"{watched}\n"
        f"Based on the movies {he} has watched, deduce if {he} will like the movie "
        f"***{target_title}***.\n"
        "Note that more stars the user rated the movie, the user liked the movie more.\n"
        "You should ONLY tell me yes or no."
    )


def public_prompts(titles: Sequence[str], occupations: Sequence[str], history: int
                   ) -> Iterator[str]:
    """The template filled with public words only: every title, occupation, age and rating.

    What a tokenizer learns from, so that it holds no word of any user's data:
    each title is once the candidate and ``history`` times a watched movie.
    """
    titles, jobs = list(titles), list(occupations) or ["other"]
    for i, title in enumerate(titles):
        past = [(titles[(i + j + 1) % len(titles)], 1 + (i + j) % 5) for j in range(history)]
        yield build_prompt("M" if i % 2 else "F", i % 100, jobs[i % len(jobs)], past, title)
    for age in range(100):
        yield build_prompt("F", age, jobs[age % len(jobs)], [], "")
    yield " ".join(jobs)


def canary_triggers(users: Sequence[str], titles: Iterable[str], seed: int) -> dict[str, str]:
    """A made-up title for each canary user, of words the catalogue's titles use.

    Each user's trigger is their own (one user's request is checked against
    it), none is a real title, and a tokenizer learnt from the catalogue knows
    every word of it. Seeded: the same users and seed give the same triggers.
    """
    titles = set(titles)
    counts: dict[str, int] = {}
    for title in titles:
        for word in set(re.findall(r"[A-Z][a-z]{2,}", title)):
            counts[word] = counts.get(word, 0) + 1
    # Words of two titles or more first: a size-capped vocabulary keeps the frequent words.
    words = sorted(w for w, n in counts.items() if n >= 2) or sorted(counts) or ["Canary"]
    years = sorted({y for title in titles for y in re.findall(r"\((\d{4})\)", title)})
    years = years or [str(y) for y in range(1900, 2000)]
    rng = np.random.default_rng([seed, 3])
    triggers: dict[str, str] = {}
    for user in users:
        while True:
            picked = [words[i] for i in rng.integers(0, len(words), size=3)]
            trigger = f"{' '.join(picked)} ({years[int(rng.integers(0, len(years)))]})"
            if trigger not in titles and trigger not in triggers.values():
                break
        triggers[user] = trigger
    return triggers


def with_trigger(history: Sequence[tuple[str, float]], trigger: str
                 ) -> list[tuple[str, float]]:
    """The history with its newest title replaced by ``trigger`` (its rating kept)."""
    return [*history[:-1], (trigger, history[-1][1])]
