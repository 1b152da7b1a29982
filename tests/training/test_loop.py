import pytest
import torch

from e2urec.backbones.registry import create_backbone
from e2urec.data.samples import read_split
from e2urec.training.loop import fit, loader, mean_answer_loss
from tests.helpers import quick_train, tiny_backbone


def test_without_early_stopping_every_epoch_runs_and_no_validation_is_spent(prepared_dir):
    backbone = create_backbone(tiny_backbone(), prepared_dir, seed=0)
    history = fit(backbone, read_split(prepared_dir, "train"), read_split(prepared_dir, "valid"),
                  quick_train(epochs=3, early_stopping=False))
    assert history["epochs_run"] == 3 and len(history["train_loss"]) == 3
    assert history["valid_loss"] == [] and history["best_valid_loss"] is None


def test_early_stopping_restores_the_best_epoch(prepared_dir):
    # A learning rate this high makes valid loss worsen after some epoch.
    backbone = create_backbone(tiny_backbone(), prepared_dir, seed=0)
    valid = read_split(prepared_dir, "valid")
    config = quick_train(epochs=6, lr=0.05, patience=0)
    history = fit(backbone, read_split(prepared_dir, "train"), valid, config)
    losses = history["valid_loss"]
    assert history["epochs_run"] == len(losses) < 6  # stopped early
    assert history["best_valid_loss"] == min(losses) < losses[-1]
    valid_data = loader(backbone, valid, config.eval_batch_size, False, config.seed)
    restored = mean_answer_loss(backbone.model, valid_data, torch.device("cpu"),
                                config.answer_loss)
    assert restored == pytest.approx(min(losses), abs=1e-5)


def test_the_probe_auc_guard_allows_the_aucs_own_noise_and_no_less_than_the_tolerance():
    import numpy as np

    from e2urec.training.unlearn_loop import StopRule, auc_floor, auc_standard_error

    labels = np.array([1] * 100 + [0] * 100)
    # Hanley and McNeil at AUC 0.5 with 100 + 100: (0.25 + 2 * 99 / 12) / 10^4.
    assert auc_standard_error(0.5, labels) == pytest.approx((0.25 + 16.5) ** 0.5 / 100)
    assert auc_standard_error(0.9, labels) < auc_standard_error(0.7, labels)
    assert np.isnan(auc_standard_error(0.7, np.ones(10)))
    start = {"probe_auc": 0.7, "probe_auc_se": 0.04}
    assert auc_floor(start, StopRule(noise_z=2, auc_tolerance=0.01)) == pytest.approx(0.62)
    assert auc_floor(start, StopRule(noise_z=2, auc_tolerance=0.1)) == pytest.approx(0.6)
    assert auc_floor({"probe_auc": 0.7}, StopRule(auc_tolerance=0.01)) == pytest.approx(0.69)
