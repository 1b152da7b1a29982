import json

import pytest
import torch

from e2urec.backbones.registry import create_backbone
from e2urec.checkpoints.folders import (
    CheckpointError,
    load_model,
    read_meta,
    save_model,
)
from e2urec.checkpoints.scorers import ModelScorer
from e2urec.config import LoraConfig
from e2urec.data.samples import read_split
from e2urec.evaluation.predict import predict
from e2urec.fileio import atomic_dir
from e2urec.training.loop import add_lora
from tests.helpers import tiny_backbone


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_model_and_adapter_round_trip(name, prepared_dir, tmp_path):
    rows = read_split(prepared_dir, "test")[:8]
    backbone = create_backbone(tiny_backbone(name), prepared_dir, seed=0)
    base_dir = save_model(backbone, tmp_path / "base")
    assert (base_dir / "model.safetensors").is_file()
    assert not list(base_dir.glob("*.bin")) and not list(base_dir.glob("*.pt"))
    before = predict(ModelScorer(backbone), rows).p_yes
    after = predict(ModelScorer(load_model(base_dir)), rows).p_yes
    assert after == pytest.approx(before, abs=1e-6)

    adapted = add_lora(load_model(base_dir), LoraConfig(r=2, targets=["q", "v"]))
    with torch.no_grad():
        for name_, param in adapted.model.named_parameters():
            if "lora_B" in name_:
                param.fill_(0.05)  # a non-trivial adapter
    expected = predict(ModelScorer(adapted), rows).p_yes
    adapter_dir = save_model(adapted, tmp_path / "adapter", base_dir=base_dir)
    assert read_meta(adapter_dir)["kind"] == "adapter"
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    reloaded = predict(ModelScorer(load_model(adapter_dir)), rows).p_yes
    assert reloaded == pytest.approx(expected, abs=1e-6)
    assert abs(reloaded - before).max() > 1e-4


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not an e2urec model folder"):
        load_model(tmp_path / "nope")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "e2urec_model.json").write_text(json.dumps(
        {"kind": "model", "family": "causal", "max_prompt_tokens": 64}))
    with pytest.raises(CheckpointError, match="incomplete model folder"):
        load_model(tmp_path / "broken")


def test_a_crash_while_writing_leaves_the_old_folder_intact(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half-written")
        raise RuntimeError("crash")
    assert (target / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
