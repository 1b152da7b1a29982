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
