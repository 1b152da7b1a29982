import math

import numpy as np
import pytest
import torch

from e2urec.evaluation.metrics import distribution_distances, utility


def test_utility_matches_hand_computation():
    labels = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.4, 0.3, 0.2])
    result = utility(labels, p)
    # Positive/negative pairs: (0.9 > 0.4, 0.9 > 0.2, 0.3 < 0.4, 0.3 > 0.2) -> 3/4.
    assert result["auc"] == pytest.approx(0.75)
    assert result["acc"] == pytest.approx(0.75)  # 0.3 is the only miss
    expected = -(math.log(0.9) + math.log(0.6) + math.log(0.3) + math.log(0.8)) / 4
    assert result["logloss"] == pytest.approx(expected)


def test_auc_is_nan_with_one_class():
    assert math.isnan(utility(np.array([1, 1]), np.array([0.2, 0.7]))["auc"])


def test_distances_match_hand_computation():
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[0.9, 0.1]])
    result = distribution_distances(p.log(), q.log())
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    m = [0.7, 0.3]
    jsd = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + \
        0.5 * (0.9 * math.log(0.9 / m[0]) + 0.1 * math.log(0.1 / m[1]))
    assert result["sym_kl"] == pytest.approx(0.5 * (kl_pq + kl_qp))
    assert result["jsd"] == pytest.approx(jsd)
    assert result["l2"] == pytest.approx(math.sqrt(2 * 0.4**2))
    assert result["jsd"] <= math.log(2)


def test_identical_distributions_are_at_distance_zero_and_shapes_must_match():
    logits = torch.randn(3, 11)
    assert distribution_distances(logits, logits + 5.0) == pytest.approx(
        {"sym_kl": 0.0, "jsd": 0.0, "l2": 0.0}, abs=1e-6)
    with pytest.raises(ValueError, match="share a vocabulary"):
        distribution_distances(torch.randn(2, 5), torch.randn(2, 6))
