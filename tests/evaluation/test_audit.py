import numpy as np
import pytest

from e2urec.evaluation.audit import forget_quality, membership_auc


def test_membership_auc_separates_low_loss_members():
    assert membership_auc(np.array([0.1, 0.2]), np.array([0.9, 1.0])) == pytest.approx(1.0)
    assert membership_auc(np.array([0.9, 1.0]), np.array([0.1, 0.2])) == pytest.approx(0.0)
    # Ties and a mix: pairs (0.1<0.5 win, 0.7>0.5 lose) -> 0.5.
    assert membership_auc(np.array([0.1, 0.7]), np.array([0.5])) == pytest.approx(0.5)
    assert np.isnan(membership_auc(np.array([]), np.array([0.5])))


def test_forget_quality_is_high_for_the_same_distribution_and_low_for_a_shift():
    rng = np.random.default_rng(0)
    same = forget_quality(rng.uniform(size=500), rng.uniform(size=500))
    shifted = forget_quality(rng.uniform(size=500), rng.uniform(size=500) * 0.5)
    assert same["ks_pvalue"] > 0.05 > shifted["ks_pvalue"]
    assert shifted["ks_statistic"] == pytest.approx(0.5, abs=0.08)
