import torch
import torch.nn.functional as F

from e2urec.training.losses import answer_ce, per_sample_ce


def test_answer_ce_is_float64_accurate_on_a_large_vocabulary():
    generator = torch.Generator().manual_seed(0)
    # A spread like a language model's: many similar large logits.
    logits = 10 + 3 * torch.randn(8, 3, 49152, generator=generator)
    answer_ids = torch.randint(0, 49152, (8, 3), generator=generator)
    mask = torch.ones(8, 3, dtype=torch.bool)
    mask[0, 2] = False
    exact = F.cross_entropy(logits.double().flatten(0, 1), answer_ids.flatten(),
                            reduction="none").view(8, 3)
    expected = (exact * mask).sum() / mask.sum()
    assert abs(answer_ce(logits, answer_ids, mask).item() - expected.item()) < 1e-5
    per_sample = (exact * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(per_sample_ce(logits, answer_ids, mask).double(), per_sample,
                               rtol=0, atol=1e-5)
