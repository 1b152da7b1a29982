"""A store that trains and serves a shard ensemble with slices: the exact deletion path,
through the real command, with its proof (``deploy verify --rebuild``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from e2urec.checkpoints.folders import adapter_base, read_meta
from e2urec.cli import main
from e2urec.deploy.store import open_store
from e2urec.fileio import folder_sha256
from e2urec.training.slices import checkpoint_dir
from tests.deploy.conftest import TRAIN_SETS
from tests.deploy.test_store import users_in
from tests.helpers import fails


def test_an_ensemble_store_forgets_by_retraining_slices_and_proves_it_exact(
        ensemble_store, store_data, capsys):
    root = ensemble_store
    first = root / "versions" / "v0000"
    assert read_meta(first)["members"] == ["shard_0", "shard_1"]
    assert read_meta(first)["slices"] == 2
    assert [len(b) for b in read_meta(first)["slice_bounds"]] == [1, 1]  # one a shard
    assert (checkpoint_dir(first / "shard_0", 0) / "model.safetensors").is_file()
    shards = json.loads((store_data / "shards.json").read_text())["user_balanced"]
    gone = "2"  # a forgotten pilot with training rows
    untouched = f"shard_{1 - shards[gone]}"
    kept_files = folder_sha256(first / untouched)

    # No --method: an ensemble store's own exact path.
    assert main(["--threads", "1", "forget", "--store", str(root), "--users", gone,
                 "--request-id", "exact-1"]) == 0
    assert "exact-1: done" in capsys.readouterr().out
    store = open_store(root)
    request = store.ledger.request("exact-1")
    assert request["method"] == "receraser" and request["options"]["slices"] == 2
    store.close()
    # The old version, with every checkpoint that held the user, is gone; the new one
    # stands alone, its untouched shard copied as it was.
    assert sorted(p.name for p in (root / "versions").iterdir()) == ["v0001"]
    current = root / "versions" / "v0001"
    assert folder_sha256(current / untouched) == kept_files
    assert all(not Path(m).is_absolute() for m in read_meta(current)["members"])
    assert gone not in users_in(root / "data")

    assert main(["--threads", "1", "deploy", "verify", "--store", str(root), "--rebuild"]) == 0
    assert capsys.readouterr().out.startswith("exact: version v0001's 2 shard models")
    assert not (root / "work" / ".rebuild").exists()

    assert main(["recommend", "--store", str(root), "--user", "5", "--top", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4

    # A served weight that differs from the rebuild is named, tensor and file.
    weights = current / "shard_0" / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, weights, metadata={"format": "pt"})
    assert main(["--threads", "1", "deploy", "verify", "--store", str(root), "--rebuild"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"not exact: shard_0/model.safetensors: tensor {name} differs")


def test_ensemble_store_input_that_cannot_work_is_one_clear_line(
        ensemble_store, served_model, store_data, tmp_path, capsys):
    fails(["deploy", "init", "--method", "neggrad", "--data", str(store_data), "--store",
           str(tmp_path / "s1")], capsys, "does not train a shard ensemble")
    fails(["deploy", "init", "--original", str(served_model), "--slices", "2", "--data",
           str(store_data), "--store", str(tmp_path / "s2")], capsys, "--slices go with --method")
    fails(["deploy", "init", "--method", "sisa", "--shards", "3", "--data", str(store_data),
           "--store", str(tmp_path / "s3")], capsys, "prepared with 2 shards")
    # Early stopping reads every user's valid rows, sliced or not: no exact rebuild.
    for slices in ("1", "2"):
        fails(["deploy", "init", "--method", "sisa", "--slices", slices, "--data",
               str(store_data), "--store", str(tmp_path / "s4"), "--set",
               "train.early_stopping=true"], capsys, "early_stopping: false")
    assert not any((tmp_path / f"s{i}").exists() for i in range(1, 5))
    fails(["forget", "--store", str(ensemble_store), "--users", "3", "--method", "e2urec"],
          capsys, "serves a receraser ensemble", unchanged=(ensemble_store,))


def test_the_latency_benchmark_times_both_kinds_of_store_on_the_same_users(
        ensemble_template, template_store, capsys):
    import importlib

    from tests.helpers import read_table

    importlib.import_module("benchmarks.recommend_latency").main(
        ["--stores", f"{template_store},{ensemble_template}", "--users", "2", "--top", "3"])
    out = capsys.readouterr().out
    rows = {r["store"]: r for r in read_table(out, "store")}
    assert (rows[str(template_store)]["serves"], rows[str(template_store)]["models"]) == \
        ("single", "1")
    assert (rows[str(ensemble_template)]["serves"], rows[str(ensemble_template)]["models"]) \
        == ("ensemble", "2")
    for row in rows.values():
        assert float(row["min s"]) <= float(row["mean s"]) <= float(row["max s"])
    ratio = out.strip().splitlines()[-1]
    assert ratio.startswith("ensemble/single recommend: ") and float(ratio.split(": ")[1]) > 0


def test_lora_shards_on_a_frozen_base_are_served_forgotten_and_proved_exact(
        store_data, tmp_path, capsys):
    """Each shard (and each slice checkpoint) is a LoRA adapter over the store's copy of
    a pretrained base that never trains; a deletion retrains adapters only."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from e2urec.backbones.registry import create_backbone
    from e2urec.checkpoints.folders import save_model
    from tests.helpers import tiny_backbone

    pretrained = save_model(create_backbone(tiny_backbone(), store_data, 7),
                            tmp_path / "pretrained", {"role": "pretrained"})
    root = tmp_path / "store"
    lora_sets = ["--set=train.use_lora=true", "--set=train.lora.r=4", "--set=train.lora.alpha=8",
                 "--set=train.lr=5e-3"]
    assert main(["--threads", "1", "deploy", "init", "--method", "sisa", "--option=shard_by=user",
                 "--shards", "2", "--slices", "2", "--model", str(pretrained), "--data",
                 str(store_data), "--store", str(root), *TRAIN_SETS, *lora_sets]) == 0
    capsys.readouterr()
    base = root / "backbone"
    assert load_file(base / "model.safetensors").keys() == \
        load_file(pretrained / "model.safetensors").keys()
    base_files = folder_sha256(base)
    first = root / "versions" / "v0000"
    for member in ("shard_0", "shard_1"):
        for folder in (first / member, checkpoint_dir(first / member, 0)):
            meta = read_meta(folder)
            # the base by a path from the adapter's own folder: it moves with the store
            assert meta["kind"] == "adapter" and not Path(meta["base"]).is_absolute()
            assert adapter_base(folder, meta) == base.resolve()
            assert not (folder / "model.safetensors").exists()  # no copy of the base
    shards = json.loads((store_data / "shards.json").read_text())["user_balanced"]
    gone = "2"
    untouched = f"shard_{1 - shards[gone]}"

    assert main(["--threads", "1", "forget", "--store", str(root), "--users", gone,
                 "--request-id", "lora-1"]) == 0
    assert "lora-1: done" in capsys.readouterr().out
    current = root / "versions" / "v0001"
    assert sorted(p.name for p in (root / "versions").iterdir()) == ["v0001"]
    assert folder_sha256(base) == base_files  # the base never trains and is never purged
    assert read_meta(current / f"shard_{shards[gone]}")["kind"] == "adapter"

    assert main(["--threads", "1", "deploy", "verify", "--store", str(root), "--rebuild"]) == 0
    assert capsys.readouterr().out.startswith("exact: version v0001's 2 shard models")
    assert main(["recommend", "--store", str(root), "--user", "5", "--top", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4

    # A member loads with the libraries' own calls, from any working directory.
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
                                      current / untouched)
    assert any("lora_A" in name for name, _ in model.named_parameters())

    # The proof covers the slice checkpoints a later deletion resumes from.
    weights = checkpoint_dir(current / untouched, 0) / "adapter_model.safetensors"
    as_served = weights.read_bytes()
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, weights, metadata={"format": "pt"})
    assert main(["--threads", "1", "deploy", "verify", "--store", str(root), "--rebuild"]) == 1
    assert capsys.readouterr().out.startswith(
        f"not exact: {untouched}/slices/slice_0/adapter_model.safetensors: tensor {name} differs")

    # A store moved elsewhere serves the same lists from its own base.
    weights.write_bytes(as_served)  # the slice checkpoint as it was
    assert main(["recommend", "--store", str(root), "--user", "5", "--json"]) == 0
    served = capsys.readouterr().out
    moved = Path(shutil.move(root, tmp_path / "moved"))
    assert main(["recommend", "--store", str(moved), "--user", "5", "--json"]) == 0
    assert capsys.readouterr().out == served
    root, base = moved, moved / "backbone"

    # Every member sits on the base: a changed base is a store that serves nothing and
    # takes no request.
    (base / "config.json").write_text((base / "config.json").read_text() + " ")
    assert main(["deploy", "status", "--store", str(root)]) == 1
    assert "backbone/ differs from its recorded hashes" in capsys.readouterr().out
    fails(["recommend", "--store", str(root), "--user", "5"], capsys,
          "backbone/ differs from its recorded hashes")
