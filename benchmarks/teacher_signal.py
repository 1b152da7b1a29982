"""Does E2URec's forgetting teacher carry a membership signal, and how strong must the
augmented model be for it to?

For each augmented model (the Original fine-tuned on the forget set for so many
epochs, as E2URec trains it) prints, on the forget samples: the augmented
model's AUC, the share of samples the teacher z_orig - alpha * relu(z_aug -
z_orig) pushes away from their label, toward it, or not at all (relu cut), and
the teacher at the alpha E2URec's calibration picks (its mean Yes/No loss
reaching the probe users' loss under the Original): alpha, loss, AUC. Reads the
forget and probe splits only:

    python benchmarks/teacher_signal.py --data runs/demo/stages/data-*/data \
        --original runs/demo/stages/original-*/model --augment-epochs 1,3,6
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table

from e2urec.backbones.registry import Backbone
from e2urec.backbones.scoring import answer_logits
from e2urec.checkpoints.folders import load_model
from e2urec.config import TrainConfig
from e2urec.data.samples import read_split
from e2urec.training.loop import fit
from e2urec.training.losses import (
    calibrate_alpha,
    decision_log_odds,
    decision_loss,
    decision_shift,
    push_shares,
)


@torch.no_grad()
def first_slot_logits(backbone: Backbone, rows: list[dict]) -> torch.Tensor:
    backbone.model.eval()
    encoder = backbone.encoder()
    return torch.cat([answer_logits(backbone.model, batch)[:, :1]
                      for batch in encoder.batches(rows, 64)])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--original", required=True)
    parser.add_argument("--augment-epochs", default="1,3,6",
                        help="comma-separated epochs of the augmented model")
    parser.add_argument("--augment-lr", type=float, default=1e-3)
    parser.add_argument("--max-alpha", type=float, default=32.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    forget, probe = read_split(args.data, "forget"), read_split(args.data, "probe")
    original = load_model(args.original)
    tokens = original.encoder().tokens
    labels = torch.tensor([int(r["label"]) for r in forget])
    probe_labels = torch.tensor([int(r["label"]) for r in probe])
    z_orig = first_slot_logits(original, forget)
    yes, no = tokens.yes_id, tokens.no_id
    d_orig = decision_log_odds(z_orig, yes, no)
    target = float(decision_loss(decision_log_odds(first_slot_logits(original, probe), yes, no),
                                 probe_labels))
    print(f"{len(forget)} forget samples; the Original's Yes/No loss: forget "
          f"{float(decision_loss(d_orig, labels)):.3f}, probe users {target:.3f} (the "
          f"calibration's target); forget AUC {roc_auc_score(labels, d_orig):.3f}")
    table = []
    for epochs in [int(e) for e in args.augment_epochs.split(",")]:
        augmented = Backbone(copy.deepcopy(original.model), original.tokenizer, original.family,
                             original.max_prompt_tokens)
        began = time.perf_counter()
        fit(augmented, forget, [], TrainConfig(epochs=epochs, lr=args.augment_lr,
                                               batch_size=16, early_stopping=False,
                                               seed=args.seed), desc="augment")
        seconds = time.perf_counter() - began
        z_aug = first_slot_logits(augmented, forget)
        for space in ("logits", "logprobs"):
            shift = decision_shift(z_orig, z_aug, tokens.yes_id, tokens.no_id, space)
            pushed = push_shares(shift, labels)
            alpha = calibrate_alpha(d_orig, shift, labels, target, args.max_alpha)
            teacher = d_orig - alpha * shift
            table.append([
                str(epochs), f"{seconds:.1f}",
                f"{roc_auc_score(labels, decision_log_odds(z_aug, yes, no)):.3f}",
                space, *(f"{pushed[k]:.2f}" for k in ("away_from_label", "toward_label",
                                                       "not_at_all")), f"{alpha:.2f}",
                f"{float(decision_loss(teacher, labels)):.3f}",
                f"{roc_auc_score(labels, teacher):.3f}"])
    print_table(["augment epochs", "augment s", "augmented AUC", "teacher space",
                 "pushed away", "pushed toward", "not pushed", "calibrated alpha",
                 "teacher loss", "teacher AUC"], table)


if __name__ == "__main__":
    main()
