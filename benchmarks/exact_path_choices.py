"""The exact path's K and R, side by side: what each choice of shards, slices and slice
recipe costs a one-user deletion, against Retrain, and what its ensemble predicts.

    python benchmarks/exact_path_choices.py --config configs/demo.yaml \
        --data runs/demo-seeds/stages/data-15da7f5ff3e0/data --seed 42 \
        --choices 4x1,4x4,4x4:cumulative:e1,8x4

A choice is ``KxR`` (K user shards, R slices each) with optional ``:cumulative``
(slice r trains on slices 0..r, SISA's recipe; default: its own rows) and ``:eN``
(N epochs a slice). Each choice's ensemble is SISA with user shards on a copy of the
data sharded K ways (the prepare step's balanced user shards), built on all of
train and evaluated like the Original (test AUC, HR@10 and NDCG@10 on the same
liked test rows); its one-user deletion (the most active canary user, as in
unlearn_vs_retrain.py) is timed and divided by Retrain's on the same request, in
the same run. The last line names the cheapest choice whose test AUC is within
0.01 of the Original's and whose HR@10 is no worse.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_common_args, pick_device, prepared_data, print_table
from unlearn_vs_retrain import one_user_request

from e2urec.bench.study import load_study
from e2urec.checkpoints.scorers import load_scorer
from e2urec.data.protocol import make_shards
from e2urec.data.samples import read_manifest, read_split
from e2urec.deploy.ensembles import shard_method
from e2urec.evaluation.evaluate import evaluate
from e2urec.fileio import write_json
from e2urec.methods import run_method
from e2urec.training.finetune import train_split


@dataclasses.dataclass(frozen=True)
class Choice:
    shards: int
    slices: int
    slice_data: str = "own"
    slice_epochs: int | None = None

    @classmethod
    def parse(cls, text: str) -> Choice:
        head, *tail = text.split(":")
        k, r = (int(x) for x in head.split("x"))
        data = "cumulative" if "cumulative" in tail else "own"
        epochs = next((int(t[1:]) for t in tail if t.startswith("e")), None)
        return cls(k, r, data, epochs)

    @property
    def name(self) -> str:
        return (f"{self.shards}x{self.slices}" + (":cumulative" if self.slice_data != "own"
                                                  else "")
                + (f":e{self.slice_epochs}" if self.slice_epochs else ""))

    def options(self) -> dict:
        return {"shard_by": "user", "slices": self.slices, "slice_data": self.slice_data,
                "slice_epochs": self.slice_epochs}


def sharded_copy(data: Path, k: int, out: Path) -> Path:
    """``data`` with its shards drawn K ways (as ``e2urec prepare --shards K`` draws them)."""
    if (out / "manifest.json").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(data, tmp)
    train = pd.DataFrame(read_split(data, "train"))
    write_json(tmp / "shards.json", make_shards(train, k, read_manifest(data)["config"]["seed"]))
    tmp.rename(out)
    return out


def quality(model: Path, data: Path, positives: int) -> dict[str, float]:
    metrics, _ = evaluate(load_scorer(model), data, splits=("test",),
                          ranking_positives=positives)
    ranked = metrics.get("ranking") or {}
    return {"auc": metrics["test"]["auc"], "hr": ranked.get("hr@10", float("nan")),
            "ndcg": ranked.get("ndcg@10", float("nan"))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a study YAML: its backbone and train "
                        "sections are the recipe of the Original, Retrain and every shard")
    parser.add_argument("--choices", default="4x1,4x4,8x4")
    parser.add_argument("--original", help="the Original trained on --data with the config's "
                        "recipe (trained here when absent)")
    parser.add_argument("--positives", type=int, default=300,
                        help="liked test rows ranked against 99 unrated movies")
    add_common_args(parser)
    args = parser.parse_args(argv)
    cpu = pick_device(args.device).type == "cpu"
    data = prepared_data(args)
    study = load_study(args.config)
    backbone, train = study.backbone, dataclasses.replace(study.train, seed=args.seed)
    # Slices train a fixed number of epochs: early stopping would read every user's rows.
    shard_train = dataclasses.replace(train, early_stopping=False)
    work = Path(args.workdir) / f"exact-choices-{args.seed}"
    original = Path(args.original) if args.original else work / "original"
    if not (original / "e2urec_model.json").is_file():
        train_split(data, "train", backbone, train, original)
    one_user = one_user_request(data, work / "data-one-user")
    retrain = run_method("retrain", one_user, None, backbone, train, {}, work / "retrain",
                         cpu=cpu, overwrite=True)["unlearn_seconds"]
    reference = quality(original, data, args.positives)
    rows = [["Original", "-", "-", f"{reference['auc']:.4f}", f"{reference['hr']:.3f}",
             f"{reference['ndcg']:.3f}", "-", "-", f"{retrain:.1f} (Retrain)", "1.00"]]
    results = []
    for choice in map(Choice.parse, args.choices.split(",")):
        folder = work / choice.name.replace(":", "-")
        k_data = sharded_copy(data, choice.shards, work / f"data-k{choice.shards}")
        k_one = sharded_copy(one_user, choice.shards, work / f"data-one-user-k{choice.shards}")
        initial = folder / "initial"
        began = time.perf_counter()
        if not (initial / "e2urec_model.json").is_file():
            shard_method("sisa", choice.options(), k_data, backbone, shard_train,
                         folder).build_initial(initial)
        built = time.perf_counter() - began
        record = run_method("sisa", k_one, None, backbone, shard_train,
                            {**choice.options(), "initial": str(initial)}, folder / "one-user",
                            cpu=cpu, overwrite=True)
        got = quality(initial, k_data, args.positives)
        seconds = record["unlearn_seconds"]
        results.append((choice, got, seconds / retrain))
        rows.append([choice.name, str(choice.shards), str(choice.slices), f"{got['auc']:.4f}",
                     f"{got['hr']:.3f}", f"{got['ndcg']:.3f}", f"{built:.0f}",
                     ",".join(map(str, record["retrained_shards"])), f"{seconds:.1f}",
                     f"{seconds / retrain:.2f}"])
    print(f"config {args.config}, seed {args.seed}, data {data}, {args.positives} liked test "
          "rows ranked")
    print_table(["choice", "K", "R", "test AUC", "HR@10", "NDCG@10", "build s",
                 "shards retrained", "one user s", "vs retrain"], rows)
    good = [(ratio, c.name) for c, got, ratio in results
            if got["auc"] >= reference["auc"] - 0.01 and got["hr"] >= reference["hr"]]
    print(f"best choice: {min(good)[1]} at {min(good)[0]:.2f}x Retrain" if good else
          "best choice: none is within 0.01 of the Original's test AUC with its HR@10")
    print(json.dumps({c.name: {**got, "one_user_vs_retrain": ratio}
                      for c, got, ratio in results}))


if __name__ == "__main__":
    main()
