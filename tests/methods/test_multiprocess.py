"""E2URec under two CPU processes (torchrun, gloo) matches one process."""

import json
import shutil
import socket
import subprocess
import sys

import pytest

from e2urec.checkpoints.scorers import load_scorer
from e2urec.evaluation.evaluate import evaluate
from e2urec.methods import run_method
from tests.helpers import quick_train, tiny_backbone

OPTIONS = {"schedule": {"epochs": 2}, "augment_epochs": 1, "stop": {"kind": "none"},
           "calibrate_alpha": False, "lora": {"r": 4, "alpha": 8}}
TOLERANCE = 0.05  # AUC and distance: two processes see the same samples, summed differently


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and sys.platform != "linux",
                    reason="torchrun not available")
def test_two_processes_complete_and_match_one(prepared_dir, tmp_path):
    from e2urec.training.finetune import train_split

    original = tmp_path / "original"
    train_split(prepared_dir, "train", tiny_backbone(), quick_train(), original)
    sets = [f"--set=backbone.{k}={v}" for k, v in vars(tiny_backbone()).items()
            if k.startswith("tiny_")]
    options = ["--option=schedule.epochs=2", "--option=augment_epochs=1", "--option=stop.kind=none",
               "--option=calibrate_alpha=false",
               "--option=lora.r=4", "--option=lora.alpha=8", "--option=schedule.batch_size=8"]
    two = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={free_port()}", "-m", "e2urec.cli", "unlearn", "--method", "e2urec",
               "--data", str(prepared_dir), "--original", str(original), "--cpu",
               *sets, *options, "--out", str(two)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((two / "unlearn_record.json").read_text())
    assert record["num_processes"] == 2

    one = tmp_path / "one"
    run_method("e2urec", prepared_dir, original, tiny_backbone(), quick_train(),
               {**OPTIONS, "schedule": {"epochs": 2, "batch_size": 16}}, one, cpu=True)
    reference = load_scorer(original)
    results = {name: evaluate(load_scorer(folder), prepared_dir, reference,
                              splits=("test", "forget"))[0] for name, folder in
               (("one", one), ("two", two))}
    assert abs(results["one"]["test"]["auc"] - results["two"]["test"]["auc"]) < TOLERANCE
    distance = [results[n]["forget_vs_reference"]["sym_kl"] for n in ("one", "two")]
    assert abs(distance[0] - distance[1]) < TOLERANCE
