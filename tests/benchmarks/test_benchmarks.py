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


def test_teacher_verdict_judges_each_teacher_the_way_the_bench_judges_a_model(
        synthetic_raw, tmp_path, capsys):
    from e2urec.config import PrepareConfig
    from e2urec.data.movielens import read_movielens
    from e2urec.data.protocol import prepare, write_prepared
    from e2urec.methods import run_method
    from e2urec.training.finetune import train_split
    from tests.helpers import quick_train, tiny_backbone

    # Forgotten users who like some films and not others: their rows can be ranked.
    config = PrepareConfig(protocol="paper", window=None, forget_users=["5", "6", "7", "8"],
                           shards=2, seed=1, holdout_fraction=0.25, min_holdout_users=4)
    data = write_prepared(prepare(read_movielens(synthetic_raw), config), tmp_path / "data")
    train_split(data, "train", tiny_backbone(), quick_train(), tmp_path / "original")
    run_method("receraser", data, None, tiny_backbone(), quick_train(epochs=1),
               {"aggregator_hidden": 4, "aggregator_epochs": 1}, tmp_path / "receraser")
    benchmark("teacher_verdict").main(["--data", str(data), "--original",
                                       str(tmp_path / "original"), "--shards",
                                       str(tmp_path / "receraser" / "initial")])
    rows = {row["teacher"].split(" (")[0]: row
            for row in read_table(capsys.readouterr().out, "teacher")}
    assert set(rows) == {"original", "shards", "shards, own audit", "shard-gain"}
    for row in rows.values():
        for measure in ("ranking", "membership"):
            value, low, high = (float(x) for x in
                                row[measure].replace("[", "").replace("]", "")
                                .replace(",", "").split())
            assert low <= value <= high
        assert row["verdict"] == "pass" or row["verdict"].startswith("fail: ")
    # Both teachers judged on the audit rows under the Original share its audit AUC.
    assert rows["shards"]["audit AUC"] == rows["original"]["audit AUC"] \
        == rows["shard-gain"]["audit AUC"]
    assert rows["shards"]["forget AUC"] == rows["shards, own audit"]["forget AUC"]
