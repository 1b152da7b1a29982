"""The sequential study end to end on synthetic data: stores, Retrain reference, table, plot."""

from __future__ import annotations

import pandas as pd
import pytest

from e2urec.bench.sequential import Scenario, request_batches
from e2urec.cli import main
from e2urec.config import ConfigError
from e2urec.deploy.store import open_store
from tests.deploy.test_store import users_in
from tests.helpers import PILOTS, TINY

pytestmark = pytest.mark.slow


def test_requests_go_to_every_store_in_order_and_each_is_scored_against_retrain(
        tmp_path, synthetic_raw, capsys):
    config = tmp_path / "sequential.yaml"
    config.write_text(f"""
name: sequential smoke
seeds: [3, 4]
data: {{dataset: ml-100k, data_dir: {synthetic_raw}, allow_modified_data: true,
        protocol: paper, forget_users: {PILOTS}, holdout_fraction: 0.25,
        min_holdout_users: 4, canaries: 2, min_canary_users: 2, min_canary_rows: 1,
        shards: 2}}
backbone: {dict(name="tiny-llama", **TINY)}
train: {{epochs: 2, lr: 1.0e-3, batch_size: 4}}
methods:
  # A fixed step budget: on this synthetic data the stop rule may restore the start.
  neggrad: {{schedule: {{epochs: 1}}, stop: {{kind: none}}}}
  sisa: {{shard_by: user}}  # the exact path: the store trains and serves the ensemble
scenarios:
  - {{name: one user, requests: 2, users_per_request: 1}}
ranking_positives: 10
""")
    out = tmp_path / "out"
    assert main(["--threads", "1", "sequential", "--config", str(config), "--out",
                 str(out)]) == 0
    table = capsys.readouterr().out
    for method in ("retrain", "neggrad", "sisa"):
        assert f"| one user | {method} | 2 | 2 |" in table
    assert " ± " in table  # mean and spread over the two seeds

    frame = pd.read_csv(out / "results.csv")
    assert list(frame.seed) == [3] * 6 + [4] * 6
    assert list(frame.method) == ["retrain", "neggrad", "sisa"] * 4
    assert list(frame.request) == [1, 1, 1, 2, 2, 2] * 2
    assert list(frame.forgotten_users) == [1, 1, 1, 2, 2, 2] * 2
    assert (frame[frame.method == "retrain"].forget_sym_kl == 0).all()
    assert (frame[frame.method == "neggrad"].forget_sym_kl > 0).all()
    assert frame.hr10.between(0, 1).all() and frame.test_auc.between(0, 1).all()
    assert (frame.outcome == "done").all()
    assert (out / "sequential_one-user.png").stat().st_size > 10_000

    # The canary users go first; each store forgot them in order, and purged them.
    for seed in (3, 4):
        first, second = request_order(out, seed)
        assert {first, second} <= set(PILOTS)
        for method in ("retrain", "neggrad", "sisa"):
            store = open_store(out / "scenarios" / "one-user" / f"seed-{seed}" / "stores"
                               / method)
            requests = store.ledger.requests()
            assert [(r["id"], r["users"], r["status"]) for r in requests] == [
                ("q01", [first], "done"), ("q02", [second], "done")]
            assert not {first, second} & users_in(store.data_dir)
            assert store.serves_ensemble == (method == "sisa")
            store.close()

    # A second run reads the measured requests back instead of redoing them.
    before = (out / "results.csv").read_text()
    assert main(["--threads", "1", "sequential", "--config", str(config), "--out",
                 str(out)]) == 0
    assert (out / "results.csv").read_text() == before


def request_order(out, seed: int) -> list[str]:
    store = open_store(out / "scenarios" / "one-user" / f"seed-{seed}" / "stores" / "retrain")
    users = [r["users"][0] for r in store.ledger.requests()]
    store.close()
    return users


def test_request_batches_put_canary_users_first_and_refuse_too_many():
    manifest = {"forget_user_ids": ["1", "2", "3", "4", "5"], "train_users": 50,
                "canaries": {"users": {"4": {}, "2": {}}}}
    assert request_batches(manifest, Scenario(requests=3)) == [["4"], ["2"], ["1"]]
    two_percent = Scenario(requests=2, users_per_request=None, fraction=0.04)
    assert request_batches(manifest, two_percent) == [["4", "2"], ["1", "3"]]
    with pytest.raises(ConfigError, match="need 6 forget users; the data has 5"):
        request_batches(manifest, Scenario(requests=3, users_per_request=2))
