"""``e2urec sequential``: deletion requests one after another, each method against Retrain.

Every approximate method serves the study's Original from a deployment store
of its own; a shard method (SISA, RecEraser: the exact path) serves the
ensemble its store trains on the study's data. Each receives the same
requests in the same order (the real ``forget`` path: record, unlearn,
verify, switch, purge), once per seed. A Retrain store receives them too:
after request k its current version is the model retrained on the data left
at that point, the reference for every method at k. After each request every
store's current version is scored on the users forgotten so far (their
training rows, kept by the study, not by the stores), the audit users, the
remaining users' test rows and the ranking task.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from e2urec.bench.config import StudyConfig, method_of, seeded
from e2urec.bench.report import short_verdict
from e2urec.bench.stages import Stages, prepare_stage, study_device, train_original_stage
from e2urec.checkpoints.scorers import load_scorer
from e2urec.config import ConfigError, from_dict, option, read_config_file
from e2urec.data.samples import read_manifest, read_split, unplanted
from e2urec.data.sources import find_raw
from e2urec.deploy.ensembles import init_ensemble_store
from e2urec.deploy.redaction import request_data
from e2urec.deploy.requests import forget
from e2urec.deploy.store import init_store, open_store
from e2urec.deploy.verify import Verification
from e2urec.evaluation.evaluate import evaluate
from e2urec.evaluation.predict import predict
from e2urec.evaluation.verdict import summary as verdict_summary
from e2urec.fileio import atomic_write_text, check_output, folder_lock
from e2urec.methods.registry import REGISTRY, get_method
from e2urec.runtime import set_threads


@dataclass
class Scenario:
    """A sequence of deletion requests."""

    name: str = option("one user", help="the scenario's name in tables and plots")
    requests: int = option(10, help="requests, applied one after another")
    users_per_request: int | None = option(1, help="users a request")
    fraction: float | None = option(None, help="instead: this share of the training users "
                                    "a request")


@dataclass
class SequentialConfig(StudyConfig):
    """A study's data, backbone, training and methods, plus request scenarios."""

    scenarios: list[Scenario] = field(default_factory=lambda: [Scenario()])
    verification: Verification = option(
        help="the stores' thresholds; a study measures, so by default nothing is refused",
        factory=Verification.measure_only)

    def validate(self) -> None:
        super().validate()
        allowed = [m for m in REGISTRY if m != "retrain"]
        for name in self.methods:
            if method_of(name) not in allowed:
                raise ConfigError(f"methods.{name}: a sequential study runs "
                                  f"{', '.join(sorted(allowed))}; Retrain is its reference "
                                  "and always runs")


def load_sequential(path: str | Path) -> SequentialConfig:
    path = Path(path)
    return from_dict(SequentialConfig, read_config_file(path), path.name)


def request_batches(manifest: dict[str, Any], scenario: Scenario) -> list[list[str]]:
    """Users of each request: canary users first, then the other forget users, in order."""
    canaries = list((manifest.get("canaries") or {}).get("users", {}))
    pool = canaries + [u for u in manifest["forget_user_ids"] if u not in canaries]
    size = scenario.users_per_request or max(1, round(scenario.fraction
                                                      * manifest["train_users"]))
    if size * scenario.requests > len(pool):
        raise ConfigError(f"scenario {scenario.name!r}: {scenario.requests} requests of {size} "
                          f"users need {size * scenario.requests} forget users; the data has "
                          f"{len(pool)}")
    return [pool[k * size:(k + 1) * size] for k in range(scenario.requests)]


def run_sequential(config_path: str | Path, out_dir: str | Path,
                   log: Callable[[str], None] = print, stages_from: str | Path | None = None,
                   threads: int | None = None) -> str:
    """Run (or resume) the study; write results.{csv,md} and one plot a scenario."""
    study = load_sequential(config_path)
    out = Path(out_dir)
    check_output(out, ("stages", "results.csv", "scenarios"), overwrite=False)
    raw = find_raw(study.data)
    used = set_threads(threads or study.threads)
    log(f"[sequential] {study.name}: {used} torch threads")
    rows = []
    with folder_lock(out, "e2urec sequential", log=log):
        stages = Stages(Path(stages_from) if stages_from else out, log)
        for seed in study.seeds or [None]:
            config = seeded(study, seed)
            data_dir = prepare_stage(stages, config, raw)
            key = {"data": config.data, "raw_sha256": raw.digest, "backbone": config.backbone,
                   "train": config.train}
            original, _ = stages.run("original", key,
                                     lambda f, c=config, d=data_dir: train_original_stage(
                                         c, d, f))
            for scenario in config.scenarios:
                folder = out / "scenarios" / _slug(scenario.name) / f"seed-{config.data.seed}"
                rows += [{**row, "seed": config.data.seed} for row in _run_scenario(
                    config, scenario, data_dir, original / "model", folder, log)]
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "results.csv", index=False)
    table = summary_table(frame)
    atomic_write_text(out / "results.md", f"# {config.name}\n\n{LEGEND}\n\n{table}\n")
    for scenario in study.scenarios:
        plot_scenario(frame[frame.scenario == scenario.name], out / f"sequential_"
                      f"{_slug(scenario.name)}.png", scenario.name)
    return table


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def _run_scenario(config: SequentialConfig, scenario: Scenario, data_dir: Path,
                  original: Path, folder: Path, log: Callable[[str], None]
                  ) -> list[dict[str, Any]]:
    batches = request_batches(read_manifest(data_dir), scenario)
    methods = {"retrain": {}, **{name: options or {} for name, options in
                                 config.methods.items()}}
    stores = {}
    for name, options in methods.items():
        root = folder / "stores" / _slug(name)
        if not (root / "store.json").is_file():
            # No store auditor: the study measures every step itself (and the stores'
            # reference upkeep would add the same seconds to every method's requests).
            if get_method(method_of(name)).serves_one_model:
                init_store(original, data_dir, root, config.backbone, config.train,
                           references=0).close()
            else:  # the exact path: the store trains the ensemble it serves
                init_ensemble_store(method_of(name), options, data_dir, root, config.backbone,
                                    config.train).close()
        stores[name] = root
    rows, forgotten = [], []
    for k, users in enumerate(batches, start=1):
        forgotten += users
        result_file = folder / f"request-{k:02d}.json"
        if result_file.is_file():  # resumed: this request was measured already
            rows += json.loads(result_file.read_text())
            continue
        seconds = {}
        for name, options in methods.items():
            with open_store(stores[name]) as store:
                # Each method's own outcome: a failed request is not handed to Retrain.
                # An ensemble store retrains with the options it was made with.
                outcome = forget(store, users, method_of(name),
                                 None if store.serves_ensemble else options, f"q{k:02d}",
                                 dataclasses.replace(config.verification, exact_retry=False),
                                 log=lambda m: None, cpu=config.cpu)
                request = store.ledger.request(outcome.request_id)
            seconds[name] = (request["seconds"], request["unlearn_seconds"], outcome.status)
            log(f"[sequential] {scenario.name} request {k}/{len(batches)} {name}: "
                f"{outcome.status} in {request['seconds']:.1f}s")
        step = _measure_step(config, data_dir, forgotten, stores, folder / "eval" / f"{k:02d}")
        found = [{"scenario": scenario.name, "request": k, "forgotten_users": len(forgotten),
                  "method": name, "request_seconds": seconds[name][0],
                  "unlearn_seconds": seconds[name][1], "outcome": seconds[name][2],
                  **step[name]} for name in methods]
        atomic_write_text(result_file, json.dumps(found, indent=1) + "\n")
        rows += found
    return rows


def _measure_step(config: SequentialConfig, data_dir: Path, forgotten: list[str],
                  stores: dict[str, Path], folder: Path) -> dict[str, dict[str, Any]]:
    """Every store's current version on the forgotten users so far, against Retrain's."""
    step_data = request_data(data_dir, forgotten, folder / "data")
    device = study_device(config)
    current = {name: open_store(root) for name, root in stores.items()}
    versions = {name: store.current_dir() for name, store in current.items()}
    for store in current.values():
        store.close()
    reference = predict(load_scorer(versions["retrain"]),
                        unplanted(read_split(step_data, "forget")), config.eval_batch_size,
                        keep_logits=True, device=device)
    out = {}
    for name, version in versions.items():
        metrics, _ = evaluate(load_scorer(version), step_data, reference,
                              config.eval_batch_size, splits=("test", "forget"),
                              max_samples=config.eval_max_samples, device=device,
                              ranking_positives=config.ranking_positives)
        ranking = metrics.get("ranking", {})
        out[name] = {"test_auc": metrics["test"]["auc"], "hr10": ranking.get("hr@10"),
                     "ndcg10": ranking.get("ndcg@10"), "forget_auc": metrics["forget"]["auc"],
                     "mia_auc": metrics.get("mia_auc"),
                     "canary_success": metrics.get("canary", {}).get("success"),
                     "forget_sym_kl": metrics["forget_vs_reference"]["sym_kl"],
                     "verdict": verdict_summary(metrics["verdict"]) if "verdict" in metrics
                     else None}
    return out


LEGEND = ("After each request, every method's current version is scored on the users "
          "forgotten so far (their unplanted rows: forget AUC, MIA AUC against audit users "
          "on the binary Yes/No log-loss, the verdict of evaluation/verdict.py, canary "
          "success of "
          "the canary users among them, sym-KL to Retrain's forget-set predictions) and on "
          "the remaining users (test AUC, HR@10, NDCG@10). Retrain is retrained on the data "
          "left at that point. Seconds are each request's whole span in the store (request "
          "data, verification, unlearning, purge).")
SHOWN = [("test_auc", "test AUC"), ("hr10", "HR@10"), ("ndcg10", "NDCG@10"),
         ("forget_auc", "forget AUC"), ("mia_auc", "MIA AUC"),
         ("canary_success", "canary"), ("forget_sym_kl", "sym-KL")]


def summary_table(frame: pd.DataFrame) -> str:
    """Per scenario and method: the metrics after the last request (mean ± standard
    deviation over seeds), and the mean seconds a request."""
    lines = ["| scenario | method | requests | seeds | " + " | ".join(t for _, t in SHOWN)
             + " | s / request | x Retrain | verdict (per seed) |",
             "|---|---|---|---|" + "|".join("---" for _ in SHOWN) + "|---|---|---|"]
    for scenario, group in frame.groupby("scenario", sort=False):
        last = group[group.request == group.request.max()]
        retrain_s = group[group.method == "retrain"].request_seconds.mean()
        for method, rows in last.groupby("method", sort=False):
            mean_s = group[group.method == method].request_seconds.mean()
            cells = [_fmt(rows[key]) for key, _ in SHOWN]
            lines.append(f"| {scenario} | {method} | {int(rows.request.iloc[0])} | "
                         f"{rows.seed.nunique()} | " + " | ".join(cells)
                         + f" | {mean_s:.1f} | {mean_s / retrain_s:.2f} | "
                         + ", ".join(short_verdict(v) for v in rows.get("verdict", [])) + " |")
    return "\n".join(lines)


def _fmt(values: pd.Series) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def plot_scenario(frame: pd.DataFrame, path: Path, title: str) -> Path:
    """One panel per metric against the request number, a line per method (the mean
    over seeds)."""
    from e2urec.bench.plots import plot_against_requests

    panels = [*SHOWN, ("request_seconds", "seconds a request")]
    mean = frame.groupby(["method", "request"], sort=False)[[k for k, _ in panels]].mean()
    return plot_against_requests(mean.reset_index(), panels, path, title)
