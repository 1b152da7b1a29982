"""The paper's "simple" prompt template (docs/architecture.md, "Protocol")."""

from __future__ import annotations

from collections.abc import Sequence

YES_ANSWER = "Yes."
NO_ANSWER = "No."
# A title that no MovieLens release has: the canary audit's planted trigger.
CANARY_TRIGGER = "Quetzalcoatl Ledger Canary (1899)"


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
