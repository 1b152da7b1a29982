"""End-to-end: the real command on real MovieLens-100K, and bad input through the CLI."""

import json

import pytest

from e2urec.cli import main
from e2urec.data.samples import read_split
from tests.helpers import TINY

TINY_SETS = [f"--set=backbone.{k}={v}" for k, v in TINY.items()]


@pytest.mark.slow
def test_prepare_train_evaluate_on_real_ml100k(tmp_path, capsys, real_ml100k):
    data, model = tmp_path / "data", tmp_path / "model"
    assert main(["prepare", "--data-dir", str(real_ml100k), "--protocol", "paper",
                 "--window", "1000", "--holdout-fraction", "0.4", "--canaries", "2",
                 "--min-canary-users", "2", "--min-canary-rows", "1",
                 "--out", str(data)]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["train"] + counts["probe"] + counts["audit"] == 600 and counts["test"] == 200
    assert counts["canary"] > 0 and len(manifest["canaries"]["users"]) == 2
    assert len(read_split(data, "forget")) == manifest["counts"]["forget"] > 0
    assert main(["train", "--data", str(data), "--model", "tiny-llama", "--epochs", "1",
                 *TINY_SETS, "--out", str(model)]) == 0
    assert main(["evaluate", "--data", str(data), "--model", str(model), "--reference",
                 str(model), "--popularity", "--out", str(tmp_path / "eval.json")]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    assert set(results) == {"test", "forget", "retain", "forget_vs_reference", "mia_auc",
                            "mia_nonmembers", "canary", "ranking", "popularity", "e2urec",
                            "verdict"}
    assert set(results["verdict"]["measures"]) == {"ranking", "membership", "canary"}
    baseline = results["popularity"]
    assert (baseline["positives"], baseline["candidates"]) == (
        results["ranking"]["positives"], 100)
    assert 0 <= baseline["ndcg@10"] <= baseline["hr@10"] <= 1
    assert set(results["canary"]) == {"success", "base_rate"}
    ranked = results["ranking"]
    assert ranked["candidates"] == 100 and 0 < ranked["positives"] <= 100
    assert 0 <= ranked["ndcg@10"] <= ranked["hr@10"] <= 1
    assert results["e2urec"]["kind"] == "e2urec-evaluation"
    assert set(results["test"]) == {"auc", "acc", "logloss"}
    assert results["forget_vs_reference"]["sym_kl"] == pytest.approx(0.0, abs=1e-6)
    printed = capsys.readouterr().out
    assert "membership attack AUC" in printed and "canary success" in printed
    assert "verdict (forgotten against audit users): " in printed
    assert "most-rated list on the same candidates: HR@10" in printed


def test_bad_input_gives_a_clear_error_and_exit_code_2(tmp_path, synthetic_raw, prepared_dir,
                                                       capsys):
    users = tmp_path / "forget.txt"
    users.write_text("1\nnot-a-user\n")
    out = tmp_path / "data"
    code = main(["prepare", "--data-dir", str(synthetic_raw), "--allow-modified-data",
                 "--protocol", "paper", "--holdout-fraction", "0", "--forget-users", str(users),
                 "--out", str(out)])
    assert code == 2
    assert "not-a-user" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "run `e2urec prepare` first" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(prepared_dir), "--model", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "r.json")]) == 2
    assert "not an e2urec model folder" in capsys.readouterr().err


def test_config_typo_is_rejected(prepared_dir, tmp_path, capsys):
    code = main(["train", "--data", str(prepared_dir), "--set", "train.learning_rate=1",
                 "--out", str(tmp_path / "m")])
    assert code == 2
    assert "unknown key 'learning_rate'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
