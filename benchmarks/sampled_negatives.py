"""Does an Original trained with sampled unrated movies as "No." rank better than the
most-rated list? One row per number of sampled movies per training row.

    python benchmarks/sampled_negatives.py --data runs/demo-seeds/stages/data-15da7f5ff3e0/data \
        --negatives 0,1,4 --positives 300

For each count k the training rows gain, per row, k prompts that ask about a
movie the row's user never rated, answered "No." (the same user's history:
their data, which a deletion would have to remove too); the Original is then
trained with the study's recipe (``--config``, default the demo's) in this
process. The table gives test AUC, forget AUC (memorisation) and HR@10 /
NDCG@10 on ``--positives`` liked test rows, beside the popularity row on the
same candidates. A measurement of one of issue #22's means, not a product
path: the paper's protocol and the prepared data are left as they are.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table

from e2urec.bench.study import load_study
from e2urec.checkpoints.scorers import load_scorer
from e2urec.config import ConfigError, parse_overrides
from e2urec.data.catalog import read_catalog, swap_target
from e2urec.data.prompts import NO_ANSWER
from e2urec.data.samples import read_manifest, read_split, write_jsonl
from e2urec.evaluation.evaluate import evaluate
from e2urec.evaluation.ranking import popularity
from e2urec.training.finetune import train_split


def with_negatives(data_dir: Path, k: float, out: Path, seed: int) -> Path:
    """A copy of ``data_dir`` whose train split has ``k`` sampled unrated movies a row
    (a fraction: that share of the rows gains one)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(data_dir, out)
    catalog = read_catalog(data_dir)
    rng = np.random.default_rng(seed)
    rows = read_split(data_dir, "train")
    extra = []
    for row in rows:
        title = catalog.titles[row["item_id"]]
        n = int(k) + int(rng.random() < k - int(k))
        for item in catalog.sample_unrated(row["user_id"], n, rng):
            extra.append({**row, "item_id": item, "answer": NO_ANSWER, "label": 0,
                          "prompt": swap_target(row["prompt"], title, catalog.titles[item])})
    write_jsonl(out / "train.jsonl", rows + extra)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a prepared folder with a catalogue")
    parser.add_argument("--config", default="configs/demo.yaml",
                        help="the study whose backbone and training recipe to use")
    parser.add_argument("--negatives", default="0,1", help="comma-separated counts k")
    parser.add_argument("--positives", type=int, default=300)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a study setting over --config (backbone.tiny_title_tokens=true)")
    parser.add_argument("--workdir", default="runs/benchmarks/sampled-negatives")
    args = parser.parse_args(argv)
    read_manifest(args.data)
    try:
        study = load_study(args.config, parse_overrides(args.set))
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    work = Path(args.workdir)
    rows = []
    for k in (float(v) for v in args.negatives.split(",")):
        data = with_negatives(Path(args.data), k, work / f"data-{k}", study.train.seed)
        began = time.perf_counter()
        train_split(data, "train", study.backbone, study.train, work / f"original-{k}")
        seconds = time.perf_counter() - began
        metrics, _ = evaluate(load_scorer(work / f"original-{k}"), args.data,
                              splits=("test", "forget"), max_samples=400,
                              ranking_positives=args.positives)
        ranked = metrics["ranking"]
        rows.append([f"{k:g}", str(len(read_split(data, "train"))), f"{seconds:.0f}",
                     f"{metrics['test']['auc']:.4f}", f"{metrics['forget']['auc']:.4f}",
                     f"{metrics.get('mia_auc', float('nan')):.4f}",
                     f"{ranked['hr@10']:.4f}", f"{ranked['ndcg@10']:.4f}"])
    baseline = popularity(args.data, max_positives=args.positives)
    rows.append(["popularity", "-", "-", "-", "-", "-", f"{baseline['hr@10']:.4f}",
                 f"{baseline['ndcg@10']:.4f}"])
    print(f"{baseline['positives']} liked test rows x {baseline['candidates']} candidates")
    print_table(["sampled a row", "train rows", "train s", "test AUC", "forget AUC",
                 "MIA AUC", "HR@10", "NDCG@10"], rows)


if __name__ == "__main__":
    main()
