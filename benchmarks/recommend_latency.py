"""Latency of ``e2urec recommend``: a store serving one model against one serving a shard
ensemble, side by side on the same users in one run.

    e2urec deploy init --original runs/d/original --data runs/d/data --store runs/one
    e2urec deploy init --method receraser --slices 4 --data runs/d/data --store runs/exact \
        --set train.early_stopping=false
    python -m benchmarks.recommend_latency --stores runs/one,runs/exact --users 5

Each store ranks every movie a user has not rated (one prompt a movie); the time
covers loading the current version and scoring. The last line is the ratio
``ensemble/single recommend: X`` (mean seconds a request).
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.common import print_table
from e2urec.checkpoints.folders import read_meta
from e2urec.data.catalog import read_catalog
from e2urec.deploy.recommend import recommend, store_history
from e2urec.deploy.store import open_store


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", required=True, help="comma-separated store folders")
    parser.add_argument("--users", type=int, default=5, help="users to recommend for (the "
                        "first ones of the first store's catalogue)")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    stores = [open_store(s) for s in args.stores.split(",")]
    catalog = read_catalog(stores[0].data_dir, store_history(stores[0]))
    users = sorted(catalog.users)[: args.users]
    rows, seconds = [], {}
    for store in stores:
        served = read_meta(store.current_dir())
        members = len(served["members"]) if served["kind"] == "ensemble" else 1
        times = []
        for user in users:
            began = time.perf_counter()
            recommend(store, user, args.top)
            times.append(time.perf_counter() - began)
        kind = "ensemble" if members > 1 else "single"
        seconds[kind] = statistics.mean(times)
        rows.append([str(store.root), kind, str(members), f"{seconds[kind]:.2f}",
                     f"{min(times):.2f}", f"{max(times):.2f}"])
        store.close()
    print_table(["store", "serves", "models", "mean s", "min s", "max s"], rows)
    if {"single", "ensemble"} <= set(seconds):
        print(f"ensemble/single recommend: {seconds['ensemble'] / seconds['single']:.2f}")


if __name__ == "__main__":
    main()
