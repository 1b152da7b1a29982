import numpy as np
import torch

from e2urec.backbones.registry import create_backbone
from e2urec.data.samples import read_split
from e2urec.training.teachers import TeacherCache, frozen
from tests.helpers import tiny_backbone


def counting(teacher):
    calls = []

    def run(batch):
        calls.append(len(batch["index"]))
        return teacher(batch)

    return run, calls


def test_a_cache_over_its_memory_budget_spills_to_a_float16_file(prepared_dir, tmp_path):
    backbone = create_backbone(tiny_backbone(), prepared_dir, seed=0)
    backbone.model.eval()
    encoder = backbone.encoder()
    features = encoder.encode(read_split(prepared_dir, "forget")[:24])
    teacher, calls = counting(frozen(backbone.model))
    in_memory = TeacherCache(encoder, features, frozen(backbone.model), torch.device("cpu"))
    spilled = TeacherCache(encoder, features, teacher, torch.device("cpu"),
                           max_memory_mb=0.001, spill_dir=tmp_path)
    first = spilled.logits(torch.tensor([3, 1, 3, 7]))
    assert spilled.on_disk and not in_memory.on_disk
    assert len(list(tmp_path.glob("*.teacher"))) == 1
    assert calls == [3]  # the repeated index goes through the teacher once
    expected = in_memory.logits(torch.tensor([3, 1, 3, 7]))
    torch.testing.assert_close(first, expected, atol=2e-2, rtol=1e-3)  # float16 on disk
    spilled.fill(batch_size=8)
    assert spilled.computed == 24 and sum(calls) == 24  # only the missing ones
    again = spilled.logits(torch.arange(24))
    assert sum(calls) == 24
    np.testing.assert_array_equal(again[[3, 1, 3, 7]].numpy(), first.numpy())
    del spilled
    import gc

    gc.collect()
    assert not list(tmp_path.glob("*.teacher"))  # the file goes with the cache
