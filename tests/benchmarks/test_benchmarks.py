"""Each kept benchmark runs on tiny parts and prints its table; read by column name.

recommend_latency's test lives with the ensemble store it times
(tests/deploy/test_ensemble_store.py); unlearn_speed's in test_unlearn_speed.py.
"""

from __future__ import annotations

import importlib

import pytest

from tests.helpers import read_table
from tests.methods.conftest import family_name


def benchmark(name: str):
    return importlib.import_module(f"benchmarks.{name}")


@pytest.fixture
def llama_original(original_dir):
    if family_name(original_dir) != "tiny-llama":
        pytest.skip("one family is enough for a benchmark's table")
    return original_dir


def test_read_table_keys_cells_by_column_name():
    text = ("a line before\nmodel  whole s  speed-up\nx      1.50     2.0\n"
            "y y    0.10     9.5\n\nafter")
    assert read_table(text, "model") == [
        {"model": "x", "whole s": "1.50", "speed-up": "2.0"},
        {"model": "y y", "whole s": "0.10", "speed-up": "9.5"}]


def test_ranking_speed_agrees_with_whole_prompt_scoring(prepared_dir, llama_original, capsys):
    benchmark("ranking_speed").main(["--data", str(prepared_dir), "--models",
                                     str(llama_original), "--positives", "2",
                                     "--negatives", "3", "--device", "cpu"])
    out = capsys.readouterr().out
    [row] = read_table(out, "model")
    assert float(row["max |dP|"]) < 1e-4  # the shared prefix changes no score
    assert float(row["whole s"]) >= 0 and float(row["shared-prefix s"]) >= 0  # 0.01 s steps
    assert "ranking speed-up:" in out
