"""Unlearning time of every method against Retrain on the same data and model.

The paper's efficiency claim, as ratios measured in one run:

    python benchmarks/unlearn_vs_retrain.py --model tiny-llama --window 4000
    python benchmarks/unlearn_vs_retrain.py --model smollm2-135m --window 600 --epochs 1

Shard methods (SISA, RecEraser) train their initial ensemble first; only the
unlearning step is timed, as for every method. E2URec runs the paper's fixed
schedule (``stop_rule=none``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_common_args, pick_device, prepared_data, print_table

from e2urec.config import BackboneConfig, TrainConfig
from e2urec.methods import run_method
from e2urec.training.finetune import train_split

TINY = {"tiny_hidden": 128, "tiny_layers": 2, "tiny_heads": 4, "tiny_intermediate": 256}
METHODS = ["e2urec", "sisa", "receraser", "neggrad", "bad-teacher-labels", "bad-teacher"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of Original/Retrain")
    parser.add_argument("--e2urec-epochs", type=int, default=3)
    parser.add_argument("--lora", action="store_true",
                        help="Original, Retrain and shards as LoRA adapters (for large models)")
    parser.add_argument("--methods", default=",".join(METHODS))
    add_common_args(parser)
    args = parser.parse_args(argv)
    cpu = pick_device(args.device).type == "cpu"
    data = prepared_data(args)
    work = Path(args.workdir) / f"vs-retrain-{args.model}"
    backbone = BackboneConfig(name=args.model, **(TINY if args.model.startswith("tiny-") else {}))
    train = TrainConfig(epochs=args.epochs, seed=args.seed, use_lora=args.lora,
                        lr=1e-3 if args.model.startswith("tiny-") else 2e-4)
    original = work / "original"
    train_split(data, "train", backbone, train, original)
    seconds = {}
    for method in ["retrain", *[m for m in args.methods.split(",") if m]]:
        # The paper's fixed schedule: the stop rule would end a run with no membership gap
        # before its first step and time nothing but the check.
        options = {"schedule": {"epochs": args.e2urec_epochs}, "stop_rule": "none"} \
            if method == "e2urec" else {}
        record = run_method(method, data, original, backbone, train, options, work / method,
                            cpu=cpu)
        seconds[method] = (record["unlearn_seconds"], record["trainable_share"])
    base = seconds["retrain"][0]
    print(f"model {args.model}, data {data}, Original/Retrain {args.epochs} epoch(s)"
          f"{' with LoRA' if args.lora else ''}")
    print_table(["method", "unlearn s", "vs retrain", "trainable"],
                [[m, f"{s:.1f}", f"{s / base:.2f}", f"{100 * share:.2f}%"]
                 for m, (s, share) in seconds.items()])


if __name__ == "__main__":
    main()
