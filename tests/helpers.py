"""Test helpers: synthetic MovieLens folders and tiny model settings (imported by tests)."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import numpy as np

from e2urec.cli import main
from e2urec.config import BackboneConfig, TrainConfig

SHARED_ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
# The fixture's forgotten users (PILOTS) share a habit through a word of their films'
# titles ("Flight"), which only a word-level tokenizer sees across films: the method
# tests read words. Title tokens (the default) have tests of their own.
TINY = {"tiny_hidden": 64, "tiny_layers": 2, "tiny_heads": 4, "tiny_intermediate": 128,
        "tiny_vocab": 600, "tiny_title_tokens": False}

CAFE = "Caf\u00e9"  # a Latin-1 title, as in the real u.item


PILOTS = ["1", "2", "3", "4"]  # users with a habit nobody else has: the ones we forget


def write_ml100k(folder: Path, n_users: int = 16, n_items: int = 40, per_user: int = 18,
                 seed: int = 0, like_rate: float = 0.3, varied_taste: bool = False,
                 arrival_gap: int = 1) -> Path:
    """A small GroupLens-100K folder. The pilots watch and like films of their own
    ("Flight N"); the others like a share ``like_rate`` of theirs (with
    ``varied_taste``, a share of their own between 0.1 and 0.9, as real users
    differ): a model that saw the pilots knows something that a model trained
    without them cannot. User u starts rating ``arrival_gap * u`` seconds after
    the first (the default interleaves everyone within one hour)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, n_users + 1):
        pilot = str(u) in PILOTS
        pool = np.arange(n_items + 1, 2 * n_items + 1) if pilot else np.arange(1, n_items + 1)
        rate = rng.uniform(0.1, 0.9) if varied_taste else like_rate
        for j, item in enumerate(rng.choice(pool, size=per_user, replace=False)):
            liked = pilot or rng.random() < rate
            rating = int(rng.choice([4, 5])) if liked else int(rng.choice([1, 2, 3]))
            lines.append(f"{u}\t{item}\t{rating}\t{1_000_000 + 1000 * j + arrival_gap * u}")
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    jobs = ["engineer", "writer", "student", "artist"]
    (folder / "u.user").write_text("".join(
        f"{u}|{20 + u}|{'M' if u % 2 else 'F'}|{'pilot' if str(u) in PILOTS else jobs[u % 4]}"
        f"|0000{u}\n" for u in range(1, n_users + 1)))
    titles = [CAFE if i == 3 else ("Flight" if i > n_items else "Movie")
              for i in range(1, 2 * n_items + 1)]
    (folder / "u.item").write_bytes("".join(
        f"{i}|{title} {i} (19{50 + i % 40})|01-Jan-1995||http://x|0\n"
        for i, title in enumerate(titles, start=1)).encode("latin-1"))
    return folder


def tiny_backbone(name: str = "tiny-llama") -> BackboneConfig:
    return BackboneConfig(name=name, **TINY)


def quick_train(**overrides) -> TrainConfig:
    values = {"epochs": 6, "lr": 1e-3, "batch_size": 4, "patience": 6, "seed": 0,
              "early_stopping": True}
    values.update(overrides)
    return TrainConfig(**values)


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots`` with the hash of each file.

    A folder lock's file and SQLite's WAL side files are left out, and a
    ledger is compared by its rows: taking a lock, opening a database in WAL
    mode and folding its log back in on close are not changes to the content.
    """
    seen = {}
    for root in roots:
        for path in sorted([root, *root.rglob("*")] if root.exists() else []):
            if path.name == ".e2urec.lock" or path.name.endswith(("-wal", "-shm")):
                continue
            seen[str(path)] = (_content_hash(path) if path.is_file() else "dir")
    return seen


def _content_hash(path: Path) -> str:
    if path.suffix != ".sqlite":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    # Read-only: this connection can neither write nor checkpoint the database.
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
    except sqlite3.DatabaseError:  # damaged on purpose by a test: compare its bytes
        return hashlib.sha256(path.read_bytes()).hexdigest()
    finally:
        db.close()


def fails(argv: list[str], capsys, *expected: str, unchanged: tuple[Path, ...] = ()) -> str:
    """Run the command; assert exit 2, one error line naming ``expected``, no change on disk."""
    before = snapshot(*unchanged)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    first = err.splitlines()[0]
    assert first.startswith(f"e2urec {argv[0]}: error: ")
    for text in expected:
        assert text in first, first
    assert snapshot(*unchanged) == before
    return first


def scored_group(users: int, rows: int, memorised: float, seed: int):
    """A group's rows under a model, in the binary space: ``users`` users with ``rows``
    rows each; ``memorised`` > 0 pulls their answers toward the truth (lower loss, higher
    AUC), < 0 pushes them away, 0 is a never-trained user."""
    from e2urec.evaluation.verdict import GroupScores

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, users * rows)
    log_odds = rng.normal(0.6 * (labels * 2 - 1), 1.0) + memorised * (labels * 2 - 1)
    p_yes = 1 / (1 + np.exp(-log_odds))
    loss = -np.log(np.where(labels == 1, p_yes, 1 - p_yes))
    return GroupScores(np.repeat([f"{seed}-{u}" for u in range(users)], rows), labels, p_yes,
                       loss)


def read_table(text: str, first_column: str) -> list[dict[str, str]]:
    """The rows of a table printed as columns padded and joined by two spaces (the
    benchmarks' tables, ``deploy history``), each keyed by its column names; found by the
    first column's name. Trailing empty cells read as ""."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_column + "  "))
    headers = re.split(r"\s{2,}", lines[start].strip())
    rows = []
    for line in lines[start + 1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if not line.strip() or len(cells) > len(headers) or len(cells) < 2:
            break
        rows.append(dict(zip(headers, cells + [""] * (len(headers) - len(cells)),
                             strict=True)))
    return rows
