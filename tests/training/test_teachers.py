import numpy as np
import torch

from e2urec.backbones.registry import create_backbone
from e2urec.data.samples import read_split
from e2urec.training.losses import answer_scoped_teacher, decision_shift, forgetting_teacher
from e2urec.training.teachers import DecisionShiftTeacher, TeacherCache, frozen
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


def test_the_decision_shift_teacher_is_the_answer_scoped_forgetting_teacher(prepared_dir):
    original = create_backbone(tiny_backbone(), prepared_dir, seed=0)
    augmented = create_backbone(tiny_backbone(), prepared_dir, seed=1)
    original.model.eval(), augmented.model.eval()
    encoder = original.encoder()
    tokens = encoder.tokens
    features = encoder.encode(read_split(prepared_dir, "forget")[:12])
    batch = encoder.collate(features)
    z_orig, z_aug = frozen(original.model)(batch), frozen(augmented.model)(batch)
    rows = torch.tensor([5, 0, 9])
    for space in ("logits", "logprobs"):
        shift = decision_shift(z_orig, z_aug, tokens.yes_id, tokens.no_id, space)
        cache = TeacherCache(encoder, features, frozen(original.model), torch.device("cpu"))
        teacher = DecisionShiftTeacher(cache, shift, tokens, alpha=3.0)
        expected = answer_scoped_teacher(z_orig, forgetting_teacher(z_orig, z_aug, 3.0, space),
                                         tokens.yes_id, tokens.no_id)
        # Set after the pass: the same cache gives the teacher of any strength.
        torch.testing.assert_close(teacher.logits(rows), expected[rows], atol=1e-4, rtol=1e-4)
        teacher.alpha = 0.0
        torch.testing.assert_close(teacher.logits(rows), z_orig[rows].log_softmax(-1),
                                   atol=1e-4, rtol=1e-4)
