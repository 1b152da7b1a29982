"""MovieLens readers: GroupLens raw files and RecBole atomic files -> one frame set.

Every reader returns :class:`MovieLens`: ``ratings`` (user_id, item_id, rating,
timestamp), ``users`` (user_id, gender, age, occupation) and ``items``
(item_id, title). Ids are strings so that prefixed ids (``1m_1``) survive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

# ML-1M stores occupations as codes; its README gives the names.
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
]  # fmt: skip


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and line."""


@dataclass
class MovieLens:
    ratings: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame


def detect_format(folder: Path) -> str | None:
    """``grouplens-100k``, ``grouplens-1m``, ``atomic`` or None if nothing is there."""
    if (folder / "u.data").is_file():
        return "grouplens-100k"
    if (folder / "ratings.dat").is_file():
        return "grouplens-1m"
    if any(folder.glob("*.inter")):
        return "atomic"
    return None


def read_movielens(folder: str | Path) -> MovieLens:
    """Read whichever MovieLens format ``folder`` holds."""
    folder = Path(folder)
    readers: dict[str, Callable[[Path], MovieLens]] = {
        "grouplens-100k": read_grouplens_100k,
        "grouplens-1m": read_grouplens_1m,
        "atomic": read_atomic,
    }
    fmt = detect_format(folder)
    if fmt is None:
        raise FileNotFoundError(
            f"{folder} holds no MovieLens files (u.data, ratings.dat or *.inter)"
        )
    data = readers[fmt](folder)
    _check_references(data, folder)
    return data


def _rows(path: Path, sep: str, n_fields: int, encoding: str) -> Iterator[tuple[int, list[str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {path}")
    with path.open(encoding=encoding, newline="") as handle:
        for lineno, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(sep)
            if len(fields) < n_fields:
                raise DataFormatError(
                    f"{path}:{lineno}: expected {n_fields} fields separated by {sep!r}, "
                    f"got {len(fields)}: {line[:80]!r}"
                )
            yield lineno, fields


def _number(text: str, kind: type, path: Path, lineno: int, what: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(f"{path}:{lineno}: {what} {text!r} is not a number") from None
    return int(value) if kind is int else value


def _ratings(path: Path, sep: str, cols: tuple[int, int, int, int], encoding: str,
             skip_header: bool = False) -> pd.DataFrame:
    u, i, r, t = cols
    records = []
    for lineno, f in _rows(path, sep, max(cols) + 1, encoding):
        if skip_header and lineno == 1:
            continue
        rating = _number(f[r], float, path, lineno, "rating")
        if not 0 <= rating <= 5:
            raise DataFormatError(f"{path}:{lineno}: rating {rating} outside 0..5")
        records.append((f[u].strip(), f[i].strip(), rating,
                        _number(f[t], int, path, lineno, "timestamp")))
    if not records:
        raise DataFormatError(f"{path}: no ratings")
    return pd.DataFrame(records, columns=["user_id", "item_id", "rating", "timestamp"])


def read_grouplens_100k(folder: Path) -> MovieLens:
    ratings = _ratings(folder / "u.data", "\t", (0, 1, 2, 3), "latin-1")
    users = pd.DataFrame(
        [(f[0], f[2].upper(), _number(f[1], int, folder / "u.user", n, "age"), f[3])
         for n, f in _rows(folder / "u.user", "|", 4, "latin-1")],
        columns=["user_id", "gender", "age", "occupation"],
    )
    # One video release is marked "(V)" after its year; the RecBole copy drops the mark.
    items = pd.DataFrame(
        [(f[0], f[1].strip().removesuffix(" (V)"))
         for _, f in _rows(folder / "u.item", "|", 2, "latin-1")],
        columns=["item_id", "title"],
    )
    return MovieLens(ratings, users, items)


def read_grouplens_1m(folder: Path) -> MovieLens:
    ratings = _ratings(folder / "ratings.dat", "::", (0, 1, 2, 3), "latin-1")
    path = folder / "users.dat"
    users = pd.DataFrame(
        [(f[0], f[1].upper(), _number(f[2], int, path, n, "age"),
          _occupation(f[3], path, n)) for n, f in _rows(path, "::", 4, "latin-1")],
        columns=["user_id", "gender", "age", "occupation"],
    )
    items = pd.DataFrame(
        [(f[0], f[1].strip()) for _, f in _rows(folder / "movies.dat", "::", 2, "latin-1")],
        columns=["item_id", "title"],
    )
    return MovieLens(ratings, users, items)


def _occupation(text: str, path: Path, lineno: int) -> str:
    try:
        code = int(float(text))
    except ValueError:
        return text  # already a name
    if not 0 <= code < len(ML1M_OCCUPATIONS):
        raise DataFormatError(f"{path}:{lineno}: unknown occupation code {text!r}")
    return ML1M_OCCUPATIONS[code]


def read_atomic(folder: Path) -> MovieLens:
    """RecBole atomic files: tab-separated, header ``name:type`` per column."""
    inter = _single(folder, "*.inter")
    header = _atomic_header(inter)
    cols = tuple(_column(header, inter, name) for name in
                 ("user_id", "item_id", "rating", "timestamp"))
    ratings = _ratings(inter, "\t", cols, "utf-8", skip_header=True)

    user_path = _single(folder, "*.user")
    uh = _atomic_header(user_path)
    ucols = [_column(uh, user_path, n) for n in ("user_id", "gender", "age", "occupation")]
    users = pd.DataFrame(
        [(f[ucols[0]], f[ucols[1]].upper(), _number(f[ucols[2]], int, user_path, n, "age"),
          _occupation(f[ucols[3]], user_path, n))
         for n, f in _rows(user_path, "\t", max(ucols) + 1, "utf-8") if n > 1],
        columns=["user_id", "gender", "age", "occupation"],
    )

    item_path = _single(folder, "*.item")
    ih = _atomic_header(item_path)
    id_col, title_col = _column(ih, item_path, "item_id"), _column(ih, item_path, "movie_title")
    year_col = ih.get("release_year")
    records = []
    for n, f in _rows(item_path, "\t", max(id_col, title_col) + 1, "utf-8"):
        if n == 1:
            continue
        year = f[year_col].strip() if year_col is not None and year_col < len(f) else ""
        records.append((f[id_col], grouplens_title(f[title_col], year)))
    items = pd.DataFrame(records, columns=["item_id", "title"])
    return MovieLens(ratings, users, items)


def grouplens_title(title: str, year: str) -> str:
    """The GroupLens title of a RecBole item: RecBole keeps the year in its own column.

    GroupLens writes "Seven (Se7en) (1995)", RecBole "Seven (Se7en)" and 1995;
    its one title without a year is spelt "unkonwn" where GroupLens has "unknown".
    """
    title = title.strip()
    if title == "unkonwn":
        return "unknown"
    if year.replace(".", "", 1).isdigit():
        return f"{title} ({int(float(year))})"
    return title


def _single(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: expected one {pattern} file, found {len(found)}")
    return found[0]


def _atomic_header(path: Path) -> dict[str, int]:
    with path.open(encoding="utf-8") as handle:
        first = handle.readline().rstrip("\r\n")
    names = [col.split(":", 1)[0] for col in first.split("\t")]
    if not all(":" in col for col in first.split("\t")):
        raise DataFormatError(f"{path}:1: header must be name:type columns, got {first[:80]!r}")
    return {name: i for i, name in enumerate(names)}


def _column(header: dict[str, int], path: Path, name: str) -> int:
    if name not in header:
        raise DataFormatError(f"{path}:1: header has no {name!r} column ({sorted(header)})")
    return header[name]


def _check_references(data: MovieLens, folder: Path) -> None:
    missing_users = set(data.ratings.user_id) - set(data.users.user_id)
    missing_items = set(data.ratings.item_id) - set(data.items.item_id)
    if missing_users or missing_items:
        raise DataFormatError(
            f"{folder}: ratings refer to {len(missing_users)} unknown users "
            f"(e.g. {sorted(missing_users)[:3]}) and {len(missing_items)} unknown items "
            f"(e.g. {sorted(missing_items)[:3]})"
        )
