from pathlib import Path

import pytest

from e2urec.checkpoints.folders import read_meta
from e2urec.methods import run_method
from tests.helpers import quick_train, tiny_backbone


def family_name(original: Path) -> str:
    return "tiny-t5" if read_meta(original)["family"] == "seq2seq" else "tiny-llama"


@pytest.fixture
def unlearn(prepared_dir, original_dir, tmp_path):
    """Run a method on the tiny Original of the current family."""

    def run(method: str, options: dict | None = None, data_dir: Path | None = None,
            original: Path | None = None, out: Path | None = None, **train):
        out = out or tmp_path / method
        record = run_method(method, data_dir or prepared_dir, original or original_dir,
                            tiny_backbone(family_name(original_dir)), quick_train(**train),
                            options or {}, out)
        return record, out

    return run
