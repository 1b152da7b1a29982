"""Which training recipe makes the reference models real recommenders with a memorisation signal?

Trains the Original (on train) and Retrain (on retain) with each recipe and
seed on the demo's data, and prints test AUC, the spread of P(yes) on test,
forget AUC, the membership attack (forget vs audit users) and the canary audit:

    python benchmarks/reference_models.py --recipes A,C --seeds 42,43,44

A recipe is a set of backbone and train settings (see RECIPES below). With
``--curve N`` it instead trains the current recipe N epochs and prints valid
loss and valid AUC after every epoch (where the fixed epoch count sits):

    python benchmarks/reference_models.py --curve 6 --seeds 42
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table  # noqa: E402

from e2urec.checkpoints.scorers import load_scorer  # noqa: E402
from e2urec.config import BackboneConfig, PrepareConfig, TrainConfig  # noqa: E402
from e2urec.data.protocol import prepare_dataset, write_prepared  # noqa: E402
from e2urec.data.samples import read_split  # noqa: E402
from e2urec.evaluation.evaluate import audit  # noqa: E402
from e2urec.evaluation.metrics import utility  # noqa: E402
from e2urec.evaluation.predict import predict  # noqa: E402
from e2urec.training.finetune import train_split  # noqa: E402

# (backbone settings, train settings) on top of the demo's (BackboneConfig/TrainConfig defaults).
RECIPES = {
    "A": ({}, {"answer_loss": "answer", "epochs": 2}),  # the earlier demo
    "B": ({"tiny_tie_embeddings": False}, {"batch_size": 32}),
    "C": ({}, {}),  # the current defaults: tied, Yes/No-token loss, batch 16, 3 epochs
    "D": ({"tiny_tie_embeddings": False}, {}),
}


def measure(model: Path, data: Path) -> dict[str, float]:
    scorer = load_scorer(model)
    test = predict(scorer, read_split(data, "test"))
    forget = predict(scorer, read_split(data, "forget"))
    checks = audit(scorer, data, forget, 64, None, None)
    return {"test_auc": utility(test.labels, test.p_yes)["auc"],
            "test_std": float(np.std(test.p_yes)),
            "forget_auc": utility(forget.labels, forget.p_yes)["auc"],
            "mia": checks["mia_auc"], "canary": checks["canary"]["success"],
            "base": checks["canary"]["base_rate"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="A,C")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--window", type=int, default=6000)
    parser.add_argument("--workdir", default="runs/benchmarks/reference-models")
    parser.add_argument("--curve", type=int, metavar="EPOCHS",
                        help="print valid loss and AUC per epoch of the current recipe")
    args = parser.parse_args(argv)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        data = Path(args.workdir) / f"data-{seed}"
        if not (data / "manifest.json").is_file():
            config = PrepareConfig(protocol="paper", window=args.window, holdout_fraction=0.2,
                                   canaries=4, min_canary_users=4, min_canary_rows=1, seed=seed)
            write_prepared(prepare_dataset(config), data)
        if args.curve:
            rows += curve(data, seed, args.curve, Path(args.workdir))
            continue
        for recipe in args.recipes.split(","):
            backbone, train = RECIPES[recipe]
            for split, name in (("train", "original"), ("retain", "retrain")):
                out = Path(args.workdir) / f"{recipe}-{name}-{seed}"
                if not (out / "e2urec_model.json").is_file():
                    train_split(data, split, BackboneConfig(**backbone),
                                TrainConfig(seed=seed, **train), out)
                m = measure(out, data)
                rows.append([recipe, str(seed), name, *(f"{m[k]:.4f}" for k in (
                    "test_auc", "test_std", "forget_auc", "mia", "canary", "base"))])
    if args.curve:
        print_table(["seed", "model", "epoch", "valid loss", "valid AUC"], rows)
        return
    print_table(["recipe", "seed", "model", "test AUC", "test P(yes) std", "forget AUC",
                 "MIA AUC", "canary", "canary base"], rows)


def curve(data: Path, seed: int, epochs: int, workdir: Path) -> list[list[str]]:
    """Valid loss and AUC after each epoch of the Original and Retrain (current recipe)."""
    rows = []
    for split, name in (("train", "original"), ("retain", "retrain")):
        # Early stopping with a patience of every epoch: all epochs run, each is validated.
        config = TrainConfig(seed=seed, epochs=epochs, early_stopping=True, patience=epochs)
        record = train_split(data, split, BackboneConfig(), config,
                             workdir / f"curve-{name}-{seed}")
        history = record["history"]
        rows += [[str(seed), name, str(i + 1), f"{loss:.4f}", f"{auc:.4f}"]
                 for i, (loss, auc) in enumerate(zip(history["valid_loss"],
                                                     history["valid_auc"], strict=True))]
    return rows


if __name__ == "__main__":
    main()
