"""The store's ledger: deletion requests, model versions and forgotten users in SQLite.

One file, ``ledger.sqlite``, in WAL mode; every change is one transaction, so
a killed process leaves the ledger as it was before or after a change, never
between. ``PRAGMA user_version`` holds the format; a ledger from a newer
format is refused before anything is read or written.

A request moves ``pending`` (recorded, nothing changed) -> ``applied`` (its
version is current, purging under way) -> ``done``; or ``pending`` ->
``failed`` (verification said no; the current version is unchanged), or
``pending`` -> ``abandoned`` (an operator gave it up; recorded, never deleted).
A request that may wait (it has a ``due`` time) and that the check cannot see
alone moves ``pending`` -> ``queued``: it is forgotten with later queued
requests once the check can see them together, or on the exact path by its
due time (requests.py, :func:`flush`), and then ends ``done`` naming the
request that forgot its users; a queued request blocks no other.

Format 2 added who asked, what lies outside the store, and ``abandoned``;
format 3 ``queued`` and ``due``. An older ledger is upgraded in place when
opened.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = 3
LEDGER_FILE = "ledger.sqlite"

REQUESTS = """
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    users TEXT NOT NULL,                 -- JSON list of user ids
    received TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'queued', 'applied', 'done',
                                           'failed', 'abandoned')),
    method TEXT, options TEXT,           -- JSON
    verification TEXT,                   -- JSON: the thresholds the candidate had to meet
    finished TEXT,
    seconds REAL,                        -- the whole request: data, metrics, unlearning, purge
    unlearn_seconds REAL,                -- the method's own run_method span
    version_before TEXT, version_after TEXT,
    metrics_before TEXT, metrics_after TEXT,     -- JSON
    data_sha256 TEXT, model_sha256 TEXT,         -- model: JSON file -> sha256
    purged TEXT,                         -- JSON list of what was deleted
    reason TEXT,
    requested_by TEXT,                   -- who asked (free text), when given
    outside TEXT,                        -- JSON list: places outside the store still
                                         -- holding the users (not ours to delete)
    due TEXT                             -- a request that may wait: forgotten by then
);
"""
SCHEMA = REQUESTS + """
CREATE TABLE versions (
    id TEXT PRIMARY KEY,
    parent TEXT,
    request_id TEXT,
    created TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,          -- JSON file -> sha256
    forgotten TEXT NOT NULL,             -- JSON list: every user forgotten in this version
    state TEXT NOT NULL CHECK (state IN ('current', 'retired', 'purged'))
);
CREATE UNIQUE INDEX one_current ON versions (state) WHERE state = 'current';
CREATE TABLE forgotten (
    user_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    at TEXT NOT NULL
);
"""

JSON_FIELDS = ("users", "options", "verification", "metrics_before", "metrics_after",
               "model_sha256", "purged", "forgotten", "outside")
# The requests table's columns in each earlier format, copied over on an upgrade.
FORMAT_1_COLUMNS = ("id, users, received, status, method, options, verification, finished, "
                    "seconds, unlearn_seconds, version_before, version_after, metrics_before, "
                    "metrics_after, data_sha256, model_sha256, purged, reason")
EARLIER_COLUMNS = {1: FORMAT_1_COLUMNS, 2: FORMAT_1_COLUMNS + ", requested_by, outside"}


class LedgerError(ValueError):
    """The ledger cannot be used or refuses a change; the message says why."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Version:
    id: str
    parent: str | None
    request_id: str | None
    created: str
    model_sha256: dict[str, str]
    forgotten: list[str]
    state: str


class Ledger:
    """Typed access to ``ledger.sqlite``; open with :meth:`create` or :meth:`open`."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self.db = connection
        self.path = path

    @classmethod
    def create(cls, path: str | Path) -> Ledger:
        path = Path(path)
        db = _connect(path)
        with db:
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {FORMAT}")
        return cls(db, path)

    @classmethod
    def open(cls, path: str | Path) -> Ledger:
        path = Path(path)
        if not path.is_file():
            raise LedgerError(f"{path} is missing: not a deployment store "
                              "(create one with `e2urec deploy init`)")
        try:
            db = _connect(path)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            damage = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise LedgerError(f"{path}: not a readable ledger ({err}); restore it from a "
                              "backup") from None
        if damage != "ok":
            db.close()
            raise LedgerError(f"{path}: the ledger is damaged ({damage}); restore it from a "
                              "backup")
        if version > FORMAT:
            db.close()
            raise LedgerError(f"{path}: ledger format {version} is newer than this e2urec "
                              f"reads ({FORMAT}); upgrade e2urec")
        if version < 1:
            db.close()
            raise LedgerError(f"{path}: not an e2urec ledger (format {version})")
        if version < FORMAT:
            _upgrade(db, path, version)
        return cls(db, path)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic change: all of the block's writes, or none."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            yield self.db

    # Requests -----------------------------------------------------------------------------

    def request(self, request_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        return _decode(row) if row else None

    def requests(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM requests ORDER BY received, rowid").fetchall()
        return [_decode(r) for r in rows]

    def unfinished(self) -> list[dict[str, Any]]:
        """Requests under way (a queued one waits, and blocks no other)."""
        return [r for r in self.requests() if r["status"] in ("pending", "applied")]

    def queued(self) -> list[dict[str, Any]]:
        """Requests waiting to be forgotten together, oldest first."""
        return [r for r in self.requests() if r["status"] == "queued"]

    def record_request(self, request_id: str, users: Sequence[str], method: str,
                       options: dict[str, Any], verification: dict[str, Any],
                       requested_by: str | None = None, due: str | None = None) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO requests (id, users, received, status, method, options, "
                       "verification, requested_by, due) "
                       "VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                       (request_id, json.dumps(list(users)), now(), method,
                        json.dumps(options), json.dumps(verification), requested_by, due))

    def update_request(self, db: sqlite3.Connection, request_id: str, **fields: Any) -> None:
        names = ", ".join(f"{k} = ?" for k in fields)
        values = [json.dumps(v) if k in JSON_FIELDS else v for k, v in fields.items()]
        db.execute(f"UPDATE requests SET {names} WHERE id = ?", (*values, request_id))

    def next_request_id(self) -> str:
        count = self.db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        while self.request(rid := f"r{count + 1:04d}"):  # an operator may have used it
            count += 1
        return rid

    def carry_history(self, db: sqlite3.Connection, old: Ledger) -> None:
        """Take over ``old``'s requests, forgotten users and versions (all purged): a store
        made again over an old one never forgets whom it forgot."""
        columns = ", ".join(r[1] for r in db.execute("PRAGMA table_info(requests)"))
        for table, cols in (("requests", columns), ("forgotten", "user_id, request_id, at")):
            rows = old.db.execute(f"SELECT {cols} FROM {table} ORDER BY rowid").fetchall()
            marks = ", ".join("?" * len(cols.split(",")))
            db.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})",
                           [tuple(r) for r in rows])
        for version in old.versions():
            db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, 'purged')",
                       (version.id, version.parent, version.request_id, version.created,
                        json.dumps(version.model_sha256), json.dumps(version.forgotten)))

    # Versions and forgotten users --------------------------------------------------------

    def versions(self) -> list[Version]:
        rows = self.db.execute("SELECT * FROM versions ORDER BY rowid").fetchall()
        return [Version(**_decode(r)) for r in rows]

    def current(self) -> Version:
        row = self.db.execute("SELECT * FROM versions WHERE state = 'current'").fetchone()
        if row is None:
            raise LedgerError(f"{self.path}: no current version recorded")
        return Version(**_decode(row))

    def forgotten(self) -> dict[str, str]:
        """Forgotten user id -> the request that forgot them."""
        return dict(self.db.execute("SELECT user_id, request_id FROM forgotten").fetchall())

    def held_forgotten(self, hashes: dict[str, str]) -> tuple[Version, list[str]] | None:
        """A recorded version whose weights are ``hashes``' and which held users forgotten
        since, with those users; None when there is none."""
        weights = sorted(v for k, v in hashes.items() if k.endswith(".safetensors"))
        forgotten = set(self.forgotten())
        for version in self.versions():
            held = sorted(forgotten - set(version.forgotten))
            if held and weights == sorted(v for k, v in version.model_sha256.items()
                                          if k.endswith(".safetensors")):
                return version, held
        return None

    def add_version(self, db: sqlite3.Connection, version: Version) -> None:
        db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, 'retired')",
                   (version.id, version.parent, version.request_id, version.created,
                    json.dumps(version.model_sha256), json.dumps(version.forgotten)))

    def make_current(self, db: sqlite3.Connection, version_id: str) -> None:
        """Move ``current`` to a version that holds no forgotten user's data."""
        row = db.execute("SELECT forgotten, state FROM versions WHERE id = ?",
                         (version_id,)).fetchone()
        if row is None:
            raise LedgerError(f"version {version_id} is not in the ledger")
        if row["state"] == "purged":
            raise LedgerError(f"version {version_id} was purged; it cannot become current")
        missing = set(self.forgotten_in(db)) - set(json.loads(row["forgotten"]))
        if missing:
            raise LedgerError(f"version {version_id} was trained on forgotten users "
                              f"{sorted(missing)[:10]}; it can never become current again")
        db.execute("UPDATE versions SET state = 'retired' WHERE state = 'current'")
        db.execute("UPDATE versions SET state = 'current' WHERE id = ?", (version_id,))

    def extend_forgotten(self, db: sqlite3.Connection, version_id: str,
                         users: Sequence[str]) -> None:
        """Record that ``version_id`` holds nothing of ``users`` (it never trained on them)."""
        row = db.execute("SELECT forgotten FROM versions WHERE id = ?", (version_id,)).fetchone()
        merged = sorted({*json.loads(row["forgotten"]), *users})
        db.execute("UPDATE versions SET forgotten = ? WHERE id = ?",
                   (json.dumps(merged), version_id))

    @staticmethod
    def forgotten_in(db: sqlite3.Connection) -> list[str]:
        return [r[0] for r in db.execute("SELECT user_id FROM forgotten")]

    def add_forgotten(self, db: sqlite3.Connection, users: Sequence[str],
                      request_id: str) -> None:
        db.executemany("INSERT INTO forgotten VALUES (?, ?, ?)",
                       [(u, request_id, now()) for u in users])

    def mark_purged(self, db: sqlite3.Connection, version_id: str) -> None:
        db.execute("UPDATE versions SET state = 'purged' WHERE id = ? AND state = 'retired'",
                   (version_id,))


def _upgrade(db: sqlite3.Connection, path: Path, version: int) -> None:
    """An earlier format -> today's in one transaction: the requests table gains its new
    columns and statuses (SQLite alters a CHECK only by rebuilding the table)."""
    columns = EARLIER_COLUMNS[version]
    try:
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ALTER TABLE requests RENAME TO requests_earlier")
            db.execute(REQUESTS.strip().rstrip(";"))
            db.execute(f"INSERT INTO requests ({columns}) SELECT {columns} "
                       "FROM requests_earlier")
            db.execute("DROP TABLE requests_earlier")
            db.execute(f"PRAGMA user_version = {FORMAT}")
    except sqlite3.DatabaseError as err:
        db.close()
        raise LedgerError(f"{path}: a format-{version} ledger that cannot be upgraded here "
                          f"({err}); open it once where the store is writable") from None


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level None: transactions are explicit (BEGIN IMMEDIATE in `transaction`).
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    return db


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    return {k: json.loads(row[k]) if k in JSON_FIELDS and row[k] is not None else row[k]
            for k in row.keys()}  # noqa: SIM118 (a Row iterates over values)
