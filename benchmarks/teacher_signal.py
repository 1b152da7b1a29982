"""What the forgetting teacher asks of the student at the answer position.

Trains the augmented model (the Original fine-tuned on the forget set) and
prints, on forget prompts, the Original's and each teacher's P(true answer)
(Yes vs No) and the probability mass left on the two answer tokens:

    python benchmarks/teacher_signal.py --data runs/demo/stages/data-*/data \
        --original runs/demo/stages/original-*/model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table

from e2urec.backbones.scoring import answer_logits
from e2urec.checkpoints.folders import load_model
from e2urec.config import TrainConfig
from e2urec.data.samples import read_split
from e2urec.training.loop import fit
from e2urec.training.losses import answer_scoped_teacher, forgetting_teacher


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--original", required=True)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--augment-epochs", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=2.0)
    args = parser.parse_args(argv)
    forget = read_split(args.data, "forget")
    original = load_model(args.original)
    augmented = load_model(args.original)
    fit(augmented, forget, read_split(args.data, "valid")[:256],
        TrainConfig(epochs=args.augment_epochs, lr=1e-3, early_stopping=False))
    rows = forget[: args.samples]
    encoder = original.encoder()
    batch = encoder.collate(encoder.encode(rows), first_slot_only=True)
    with torch.no_grad():
        z_orig = answer_logits(original.model.eval(), batch)
        z_aug = answer_logits(augmented.model.eval(), batch)
    tokens = encoder.tokens
    labels = batch["labels"]
    teachers = {"original": z_orig, "augmented": z_aug}
    for space in ("logits", "logprobs"):
        z = forgetting_teacher(z_orig, z_aug, args.alpha, space)
        teachers[f"teacher ({space})"] = z
        teachers[f"teacher ({space}, answer scope)"] = answer_scoped_teacher(
            z_orig, z, tokens.yes_id, tokens.no_id)
    table = []
    for name, z in teachers.items():
        probs = z[:, 0].float().softmax(-1)
        yes, no = probs[:, tokens.yes_id], probs[:, tokens.no_id]
        p_true = torch.where(labels == 1, yes / (yes + no), no / (yes + no))
        table.append([name, f"{p_true.mean():.3f}", f"{(yes + no).mean():.3f}"])
    shift = (z_aug - z_orig)[:, 0]
    print(f"{len(rows)} forget prompts; augmented minus original logits: mean "
          f"{shift.mean():.3f}, on Yes {shift[:, tokens.yes_id].mean():.3f}, "
          f"on No {shift[:, tokens.no_id].mean():.3f}")
    print_table(["distribution", "P(true answer | Yes/No)", "P(Yes)+P(No)"], table)


if __name__ == "__main__":
    main()
