"""Atomic writes (a file or a folder appears whole or not at all) and output checks.

Every command checks its output before any work (:func:`check_output`): a
path that holds someone else's files is refused unless ``--overwrite`` says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def sha256(path: str | Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: str | Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` (hidden files aside), by relative path."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in
                                       p.relative_to(folder).parts)}


class OutputError(ValueError):
    """An output path cannot be used; the message says why and what to do."""


def check_writable(path: str | Path) -> None:
    """Fail unless a file can be created where ``path`` is (or would be) created."""
    folder = Path(path).absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".e2urec-write-check"):
            pass
    except OSError as err:
        raise OutputError(f"cannot write {path}: {folder} is not writable "
                          f"({err.strerror}); choose another output") from None


def check_output(path: str | Path, marker: str | tuple[str, ...],
                 overwrite: bool = False, flag: str = "--out") -> None:
    """Check an output folder before any work: writable, and not someone else's files.

    A missing or empty folder is fine; so is this command's own earlier output
    (it holds ``marker``, or one of several). A file, or a folder with other
    content, is refused unless ``overwrite`` is set. ``flag`` names the option
    the path came from in the messages.
    """
    path = Path(path)
    markers = (marker,) if isinstance(marker, str) else marker
    if path.is_file() or (path.exists() and not path.is_dir()):
        raise OutputError(f"{flag} {path} is an existing file; name a folder")
    own = any((path / m).exists() for m in markers)
    entries = [p for p in path.iterdir() if p.name != LOCK_FILE] if path.is_dir() else []
    if entries and not own and not overwrite:
        count = len(entries)
        raise OutputError(f"{flag} {path} already holds {count} entries that are not this "
                          "command's output; choose another folder or pass --overwrite "
                          "(which replaces it)")
    check_writable(path)


def check_output_file(path: str | Path, is_own: bool, overwrite: bool = False) -> None:
    """Check an output file before any work (``is_own``: it is this command's earlier output)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; name a file")
    if path.exists() and not is_own and not overwrite:
        raise OutputError(f"--out {path} already exists and is not an e2urec result; "
                          "choose another file or pass --overwrite")
    check_writable(path.parent)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` only if the block succeeds.

    ``target`` may be missing or a folder; a file there is never touched.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is a file; refusing to replace it with a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class LockedError(RuntimeError):
    """Another process holds the folder's lock."""


LOCK_FILE = ".e2urec.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str, wait: bool = False,
                log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the block.

    The lock is the kernel's (``flock``) on ``folder/.e2urec.lock``, so a killed
    holder releases it and the next run takes it over; the file records the
    holder's PID for the message a second run prints.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "unknown"
            if not wait:
                raise LockedError(f"{folder} is in use by another {what} (PID {holder}); "
                                  "wait for it to finish, or pass --wait") from None
            log(f"[lock] {folder} is in use by PID {holder}; waiting")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
