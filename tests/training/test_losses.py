import torch
import torch.nn.functional as F

from e2urec.training.losses import (
    answer_ce,
    calibrate_alpha,
    decision_loss,
    per_sample_ce,
)


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


def test_decision_loss_is_the_yes_no_cross_entropy_of_the_log_odds():
    loss = decision_loss(torch.tensor([2.0, 2.0]), torch.tensor([1, 0]))
    expected = (F.softplus(torch.tensor(-2.0)) + F.softplus(torch.tensor(2.0))) / 2
    torch.testing.assert_close(loss, expected)


def test_calibrated_alpha_is_the_smallest_strength_that_reaches_the_target():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (200,), generator=generator)
    sign = labels * 2 - 1
    log_odds = sign * (1 + torch.rand(200, generator=generator))  # confident and right
    shift = sign * torch.rand(200, generator=generator)  # each pushes away from its label
    alpha = calibrate_alpha(log_odds, shift, labels, target=0.69, max_alpha=32.0)
    assert decision_loss(log_odds - alpha * shift, labels) >= 0.69
    assert decision_loss(log_odds - (alpha - 32.0 / 4096) * shift, labels) < 0.69
    # Already as unsure as the target: no push at all.
    assert calibrate_alpha(log_odds, shift, labels, target=0.1, max_alpha=32.0) == 0.0
    # Out of reach: the strength of the highest loss allowed.
    assert calibrate_alpha(log_odds, shift, labels, target=50.0, max_alpha=32.0) == 32.0
