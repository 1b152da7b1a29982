"""``e2urec bench``: the whole comparison from one YAML study, resumable.

Every stage (data, Original, each method, each evaluation) lives in a folder
named by a hash of the configuration it depends on and is marked done by a
``stage.json`` written last. A rerun skips finished stages; a changed config
changes the hashes of exactly the stages it affects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState

from e2urec.checkpoints.folders import library_versions
from e2urec.checkpoints.scorers import load_scorer
from e2urec.config import (
    BackboneConfig,
    ConfigError,
    PrepareConfig,
    TrainConfig,
    config_hash,
    from_dict,
    merge_dicts,
    option,
    read_config_file,
    to_dict,
)
from e2urec.data.protocol import prepare_dataset, write_prepared
from e2urec.data.samples import read_split, subsample, unplanted
from e2urec.data.sources import RawSource, find_raw
from e2urec.evaluation.audit import forget_quality
from e2urec.evaluation.evaluate import BENCH_SPLITS, evaluate
from e2urec.evaluation.lira import ReferenceLevels, reference_levels
from e2urec.evaluation.predict import Predictions, predict
from e2urec.evaluation.ranking import popularity
from e2urec.evaluation.verdict import CANARY_TEST, ModelScores, VerdictOptions, closure_intervals
from e2urec.evaluation.verdict import summary as verdict_summary
from e2urec.fileio import atomic_write_text, check_output, folder_lock, write_json
from e2urec.methods import get_method, run_method
from e2urec.methods.base import parse_options
from e2urec.runtime import set_threads
from e2urec.training.loop import make_accelerator
from e2urec.training.shards import ShardTrainer, save_initial_ensemble

STAGE_FILE = "stage.json"
SCORES_FILE = "scores.npz"  # an evaluation's per-row scores, for the closures' intervals


@dataclass
class StudyConfig:
    """One comparison: data, backbone, training of Original/Retrain/shards, methods."""

    name: str = "study"
    data: PrepareConfig = field(default_factory=PrepareConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: dict[str, Any] = field(default_factory=dict)
    eval_batch_size: int = option(64, help="samples a forward pass when scoring")
    eval_max_samples: int | None = option(None, help="score at most this many samples of "
                                          "every split but test and forget")
    ranking_positives: int = option(100, help="liked test samples ranked against 99 "
                                    "unrated movies for HR@10 / NDCG@10 (0: none)")
    cpu: bool = option(False, help="train and score on the CPU even with a GPU")
    references: int = option(4, help="the auditor's reference models a seed (the Original's "
                             "recipe on seeded halves of the users; even, at least 4; 0: "
                             "none, and the verdict's membership measure is the loss "
                             "threshold attack's); no method reads them")
    seeds: list[int] | None = option(None, help="run every stage once per seed (data, "
                                     "training and method seeds); the table shows mean ± std")
    threads: int | None = option(None, help="torch CPU threads (None: the cores not busy)")

    def validate(self) -> None:
        if not self.methods:
            raise ConfigError("methods: name at least one unlearning method")
        for name, options in self.methods.items():
            parse_options(method_of(name), options, f"methods.{name}")
        if self.eval_max_samples is not None and self.eval_max_samples < 10:
            raise ConfigError("eval_max_samples must be at least 10")


def method_of(entry: str) -> str:
    """``e2urec/answer`` names a variant of ``e2urec``: the part before the slash."""
    return entry.split("/", 1)[0]


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """A study from YAML; ``extends: other.yaml`` starts from another study's settings,
    and ``overrides`` (nested, as :func:`parse_overrides` gives) go over the file's."""
    path = Path(path)
    return from_dict(StudyConfig, merge_dicts(read_config_file(path), overrides or {}),
                     path.name)


class Stages:
    """Hash-keyed, resumable stage folders under one study folder."""

    def __init__(self, root: Path, log: Callable[[str], None] = print):
        self.root = root
        self.log = log

    def run(self, kind: str, key: Any, work: Callable[[Path], dict[str, Any]]
            ) -> tuple[Path, dict[str, Any]]:
        digest = config_hash(key)
        folder = self.root / "stages" / f"{kind}-{digest}"
        marker = folder / STAGE_FILE
        if marker.is_file():
            self.log(f"[bench] {kind}: reusing {folder.name}")
            return folder, json.loads(marker.read_text())["result"]
        self.log(f"[bench] {kind}: running -> {folder.name}")
        state = PartialState()
        if state.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
        state.wait_for_everyone()
        start = time.perf_counter()
        result = work(folder)
        if state.is_main_process:  # the marker goes last: a stage without it is redone
            write_json(marker, {"kind": kind, "key": to_dict(key),
                                "seconds": time.perf_counter() - start, "result": result})
        state.wait_for_everyone()
        return folder, result


def run_study(config_path: str | Path, out_dir: str | Path,
              log: Callable[[str], None] = print, stages_from: str | Path | None = None,
              wait: bool = False, threads: int | None = None) -> str:
    """Run (or resume) a study; write results.{json,csv,md} and plots; return the table.

    Stages live under ``out_dir/stages``, or under ``stages_from/stages`` so that
    a second study (an ablation) reuses the first one's finished stages while
    writing its results to a folder of its own. Each folder is locked for the
    run: a second bench on it fails at once (or waits, with ``wait``).
    """
    study = load_study(config_path)
    out = Path(out_dir)
    home = Path(stages_from) if stages_from else out
    if stages_from and not (home / "stages").is_dir():
        raise ConfigError(f"--stages-from {home}: no stages/ folder there; name the --out "
                          "folder of a finished `e2urec bench` run")
    check_output(out, ("stages", "results.json"), overwrite=False)
    raw = find_raw(study.data)  # a missing or altered dataset fails here, before any work
    used = set_threads(threads or study.threads)
    log(f"[bench] {study.name}: data {raw.folder} (sha256 {raw.digest}), {used} torch threads")
    with contextlib.ExitStack() as locks:
        for folder in dict.fromkeys([home.resolve(), out.resolve()]):
            locks.enter_context(folder_lock(folder, "e2urec bench", wait, log))
        stages = Stages(home, log)
        rows = [row for seed in (study.seeds or [None])
                for row in _run_seed(seeded(study, seed), stages, raw)]
        return _write_results(out, study, rows + aggregate(rows), log)


def seeded(study: StudyConfig, seed: int | None) -> StudyConfig:
    """The study with every seed (data, training, each method's) set to ``seed``."""
    if seed is None:
        return study
    methods = {}
    for name, options in study.methods.items():
        methods[name] = get_method(method_of(name)).with_seed(options or {}, seed)
    return dataclasses.replace(study, data=dataclasses.replace(study.data, seed=seed),
                               train=dataclasses.replace(study.train, seed=seed),
                               methods=methods)


def method_stage_key(base_key: dict[str, Any], name: str, options: dict[str, Any] | None
                     ) -> dict[str, Any]:
    """A method's stage key: its resolved options, defaults included, so a stage made
    under other defaults (an older version) is never reused for this one."""
    resolved = to_dict(parse_options(method_of(name), options or {}))
    return {**base_key, "method": name, "options": resolved}


def _run_seed(study: StudyConfig, stages: Stages, raw: RawSource) -> list[dict[str, Any]]:
    home = stages.root
    data_dir = prepare_stage(stages, study, raw)
    base_key = {"data": study.data, "raw_sha256": raw.digest, "backbone": study.backbone,
                "train": study.train}

    original_dir, original = stages.run("original", base_key,
                                        lambda f: train_original_stage(study, data_dir, f))
    models: dict[str, tuple[Path, dict[str, Any]]] = {"original": (original_dir / "model",
                                                                   original)}
    retrain_dir, retrain = stages.run("retrain", {**base_key, "method": "retrain"},
                                      lambda f: _unlearn(study, data_dir, None, "retrain", {}, f))
    models["retrain"] = (retrain_dir / "model", retrain)
    # A second Retrain with another training seed: Retrain's own spread, the noise every
    # method's distance to Retrain is read against.
    second = second_retrain(study)
    second_dir, second_record = stages.run(
        "retrain", {**base_key, "train": second.train, "method": "retrain"},
        lambda f: _unlearn(second, data_dir, None, "retrain", {}, f))
    models[SECOND_RETRAIN] = (second_dir / "model", second_record)
    for name, options in study.methods.items():
        if name == "retrain":
            continue
        method_name = method_of(name)
        options, key_options = dict(options or {}), dict(options or {})
        if method_name == "e2urec" and options.get("forget_teacher") == "shards" \
                and not options.get("shards"):
            # The user-sharded ensemble exists before any request: one stage a seed.
            shards, _ = stages.run("user-shards", {**base_key, "scheme": "user_balanced"},
                                   lambda f: train_user_shards(study, data_dir, f))
            options["shards"] = str(shards / "ensemble")
            key_options["shards"] = f"stage {shards.name}"
        key = method_stage_key(base_key, name, key_options)
        folder, record = stages.run(
            f"method-{name.replace('/', '-')}", key,
            lambda f, n=method_name, o=options: _unlearn(
                study, data_dir, original_dir / "model", n, o or {}, f))
        models[name] = (folder / "model", record)

    references = None
    if study.references:  # the auditor's own: trained once a seed, never read by a method
        references, _ = stages.run("references", {**base_key, "count": study.references},
                                   lambda f: train_references_stage(study, data_dir, f))
    reference = models["retrain"][0]
    reference_preds: list[Predictions] = []  # the reference's forget logits, made once
    levels: list[tuple[ReferenceLevels, ReferenceLevels]] = []  # made once, if any
    rows = []
    for name, (model_dir, record) in models.items():
        key = {"model": str(model_dir.relative_to(home)),
               "reference": str(reference.relative_to(home)), "batch": study.eval_batch_size,
               "max_samples": study.eval_max_samples, "ranking": study.ranking_positives,
               "verdict": {**to_dict(VerdictOptions()), "canary_test": CANARY_TEST},
               "references": references.name if references else None}
        _, metrics = stages.run(f"eval-{name.replace('/', '-')}", key,
                                lambda f, m=model_dir: _evaluate(
                                    study, data_dir, m, reference, reference_preds, f,
                                    references, levels))
        rows.append({**_row(name, metrics, record), "seed": study.data.seed})
    _add_ks(rows)
    add_gap_closed(rows)
    add_closure_intervals(rows)
    add_distances(rows)
    for row in rows:
        row.pop("_scores_file", None)
    for row in rows:
        if row["method"] in REFERENCE_MODELS and row["test_p_yes_std"] < MIN_SPREAD:
            row["warning"] = (f"{row['method']} is near-constant on test (std of P(yes) "
                              f"{row['test_p_yes_std']:.4f} < {MIN_SPREAD}): distances to it "
                              "measure little")
            stages.log(f"[bench] WARNING (seed {row['seed']}): {row['warning']}")
    if study.ranking_positives != 0 and (baseline := popularity(
            data_dir, max_positives=study.ranking_positives)) is not None:
        rows.append({"method": "popularity", "seed": study.data.seed,
                     "hr10": baseline["hr@10"], "ndcg10": baseline["ndcg@10"]})
    return rows


SECOND_RETRAIN = "retrain-2"
SECOND_SEED_OFFSET = 1000  # the second Retrain's training seed: the study's plus this


def second_retrain(study: StudyConfig) -> StudyConfig:
    """The study with the training seed moved: the second Retrain's settings."""
    return dataclasses.replace(study, train=dataclasses.replace(
        study.train, seed=study.train.seed + SECOND_SEED_OFFSET))


def prepare_stage(stages: Stages, study: StudyConfig, raw: RawSource) -> Path:
    def work(folder: Path) -> dict[str, Any]:
        prepared = prepare_dataset(study.data, raw)
        if PartialState().is_main_process:
            write_prepared(prepared, folder / "data")
        return {"counts": prepared.manifest["counts"]}

    folder, _ = stages.run("data", {"config": study.data, "raw_sha256": raw.digest}, work)
    return folder / "data"


def train_user_shards(study: StudyConfig, data_dir: Path, folder: Path) -> dict[str, Any]:
    """The user-sharded ensemble a shards teacher reads (untimed: it precedes any request)."""
    ensemble = folder / "ensemble"
    trainer = ShardTrainer(data_dir, study.backbone, study.train,
                           make_accelerator(cpu=study.cpu), ensemble)
    members = save_initial_ensemble(trainer, "user_balanced", ensemble)
    return {"members": len(members)}


def train_original_stage(study: StudyConfig, data_dir: Path, folder: Path) -> dict[str, Any]:
    from e2urec.training.finetune import train_split
    from e2urec.training.loop import make_accelerator

    record = train_split(data_dir, "train", study.backbone, study.train, folder / "model",
                         make_accelerator(cpu=study.cpu))
    return {"train_seconds": record["history"]["seconds"],
            "trainable_params": record["trainable_params"],
            "total_params": record["total_params"], "stage_id": folder.name}


def _unlearn(study: StudyConfig, data_dir: Path, original: Path | None, name: str,
             options: dict[str, Any], folder: Path) -> dict[str, Any]:
    # The stage folder is the bench's own: a half-finished method's files are resumed.
    record = run_method(name, data_dir, original, study.backbone, study.train, options,
                        folder / "model", cpu=study.cpu, overwrite=True)
    keep = ("unlearn_seconds", "trainable_params", "total_params", "trainable_share",
            "peak_memory_mb", "peak_memory_kind", "retrained_shards")
    return {**{k: record[k] for k in keep if k in record}, "stage_id": folder.name}


def train_references_stage(study: StudyConfig, data_dir: Path, folder: Path
                           ) -> dict[str, Any]:
    from e2urec.training.references import train_references

    record = train_references(data_dir, study.backbone, study.train, folder / "references",
                              study.references, seed=study.data.seed, cpu=study.cpu)
    return {"train_seconds": record["seconds"], "count": record["count"],
            "stage_id": folder.name}


def _evaluate(study: StudyConfig, data_dir: Path, model_dir: Path, reference_dir: Path,
              reference_preds: list[Predictions], folder: Path,
              references: Path | None = None,
              levels: list[tuple[ReferenceLevels, ReferenceLevels]] | None = None
              ) -> dict[str, Any]:
    scorer = load_scorer(model_dir)
    device = study_device(study)
    if not reference_preds:
        reference_preds.append(predict(load_scorer(reference_dir), unplanted(read_split(
            data_dir, "forget")), study.eval_batch_size, keep_logits=True, device=device,
            desc="reference"))
    if references is not None and levels is not None and not levels:
        # the rows the evaluation's audit reads: unplanted forget rows, the audit subset
        audit_rows = subsample(read_split(data_dir, "audit"), study.eval_max_samples)
        levels.append(tuple(reference_levels(references / "references", rows,
                                             study.eval_batch_size, device)
                            for rows in (unplanted(read_split(data_dir, "forget")),
                                         audit_rows)))
    metrics, preds = evaluate(scorer, data_dir, reference_preds[0], study.eval_batch_size,
                              splits=BENCH_SPLITS, max_samples=study.eval_max_samples,
                              device=device, ranking_positives=study.ranking_positives,
                              references=levels[0] if levels else None)
    metrics["test_p_yes_std"] = float(np.std(preds["test"].p_yes))
    np.save(folder / "forget_p_true.npy", preds["forget"].p_true)
    scores = folder / SCORES_FILE
    if "scores" in preds:  # what the closures' intervals redraw, user by user
        preds["scores"].save(scores)
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return {**metrics, "p_true_file": str(folder / "forget_p_true.npy"),
            "scores_file": str(scores) if scores.is_file() else None}


def study_device(study: StudyConfig) -> torch.device:
    """Where a study scores: the GPU when there is one, unless the study says ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() and not study.cpu else "cpu")


def _row(name: str, metrics: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    distance = metrics.get("forget_vs_reference", {})
    unlearn = record.get("unlearn_seconds")
    return {
        "method": name,
        "test_auc": metrics["test"]["auc"], "test_acc": metrics["test"]["acc"],
        "test_logloss": metrics["test"]["logloss"],
        "hr10": metrics.get("ranking", {}).get("hr@10"),
        "ndcg10": metrics.get("ranking", {}).get("ndcg@10"),
        "forget_auc": metrics["forget"]["auc"], "forget_acc": metrics["forget"]["acc"],
        "retain_auc": metrics["retain"]["auc"],
        "forget_sym_kl": distance.get("sym_kl"), "forget_jsd": distance.get("jsd"),
        "forget_l2": distance.get("l2"), "mia_auc": metrics.get("mia_auc"),
        "mia_nonmembers": metrics.get("mia_nonmembers"),
        "canary_success": metrics.get("canary", {}).get("success"),
        "canary_base_rate": metrics.get("canary", {}).get("base_rate"),
        "canary_lift": canary_lift(metrics.get("canary")),
        "probe_auc": metrics.get("probe", {}).get("auc"),
        # the per-user test against the auditor's references: share flagged one by one,
        # the audit users' false alarms, requests of 5 forgotten users told apart
        "flagged": metrics.get("lira", {}).get("flagged"),
        "false_alarms": metrics.get("lira", {}).get("false_alarm_rate"),
        "flagged_5": metrics.get("lira", {}).get("pooled_5"),
        **verdict_fields(metrics.get("verdict")),
        "_scores_file": metrics.get("scores_file"),
        "test_p_yes_std": metrics["test_p_yes_std"],
        "unlearn_seconds": unlearn if unlearn is not None else float("nan"),
        "train_seconds": record.get("train_seconds"),
        "trainable_params": record["trainable_params"], "total_params": record["total_params"],
        "trainable_share": record["trainable_params"] / max(record["total_params"], 1),
        "peak_memory_mb": record.get("peak_memory_mb"),
        "retrained_shards": record.get("retrained_shards"),
        "_p_true_file": metrics["p_true_file"],
    }


def verdict_fields(result: dict[str, Any] | None) -> dict[str, Any]:
    """A row's verdict: ``pass`` or what failed, and each measure with its interval."""
    if result is None:
        return {}
    out: dict[str, Any] = {"verdict": verdict_summary(result)}
    for name, m in result["measures"].items():
        out.update({f"{name}_gap": m["value"], f"{name}_gap_low": m["low"],
                    f"{name}_gap_high": m["high"]})
        if "p" in m:
            out[f"{name}_gap_p"] = m["p"]
    return out


def add_closure_intervals(rows: list[dict[str, Any]]) -> None:
    """Each closure's user-level bootstrap interval (the same users drawn for the Original,
    Retrain and the method)."""
    by_name = {row["method"]: row for row in rows}
    files = {name: row.get("_scores_file") for name, row in by_name.items()}
    if not (files.get("original") and files.get("retrain")):
        return
    original, retrain = ModelScores.load(files["original"]), ModelScores.load(files["retrain"])
    for row in rows:
        if row["method"] in REFERENCE_MODELS or not files.get(row["method"]):
            continue
        intervals = closure_intervals(original, retrain, ModelScores.load(files[row["method"]]))
        for figure, closed in GAP_KEYS.items():
            if figure in intervals and _is_number(row.get(closed)) \
                    and not math.isnan(row[closed]):
                row[f"{closed}_low"], row[f"{closed}_high"] = intervals[figure]


def add_distances(rows: list[dict[str, Any]]) -> None:
    """Each model's distance to Retrain on the verdict's figures; the second Retrain's row
    holds Retrain-to-Retrain: the noise of one Retrain draw."""
    retrain = next(row for row in rows if row["method"] == "retrain")
    for row in rows:
        for key in DISTANCE_KEYS:
            if _is_number(row.get(key)) and _is_number(retrain.get(key)):
                row[f"dist_{key}"] = abs(row[key] - retrain[key])


DISTANCE_KEYS = ("forget_auc", "mia_auc", "canary_lift")
REFERENCE_MODELS = ("original", "retrain")
# Rows that are no model: the most-rated list on the ranking task's candidates.
BASELINES = ("popularity",)
MIN_SPREAD = 0.05  # a reference model whose P(yes) varies less than this says little
# The headline closures: how much of the Original-to-Retrain gap a method closed on each.
# Canary closure is on the lift (success minus the same model's rate without the trigger):
# a model answering "No." to everything has success 1 and lift 0, exactly Retrain's case.
GAP_KEYS = {"forget_auc": "gap_closed_forget_auc", "mia_auc": "gap_closed_mia_auc",
            "canary_lift": "gap_closed_canary"}
EXTRA_GAP_KEYS = {"canary_success": "gap_closed_canary_success"}  # the earlier canary figure
CLOSURE_BAND = (0.7, 1.3)  # where a method lands close to Retrain; above it, it forgot past
# An Original-to-Retrain gap smaller than this is inside the noise of the measure (about
# two standard errors of an AUC over the bench's 400 rows a side): no share of it can be
# read, so that closure is NaN (and left out of the means) rather than a ratio of noise.
MIN_GAP = 0.05


def canary_lift(canary: dict[str, float] | None) -> float | None:
    """The trigger's lift: success minus the same model's rate without it."""
    return canary["success"] - canary["base_rate"] if canary else None


def add_gap_closed(rows: list[dict[str, Any]]) -> None:
    """The share of the Original-to-Retrain gap each approximate method closed (1: Retrain).

    Also ``gap_closed_mean`` (the headline closures' mean; 0 for the Original, 1 for
    Retrain) and ``over_forgot``: the headline metrics a method closed past the band.
    """
    by_name = {row["method"]: row for row in rows}
    for row in rows:
        if row["method"] in REFERENCE_MODELS:
            row["gap_closed_mean"] = float(row["method"] == "retrain")
            continue
        for key, closed in {**GAP_KEYS, **EXTRA_GAP_KEYS}.items():
            start, goal, value = (by_name["original"].get(key), by_name["retrain"].get(key),
                                  row.get(key))
            usable = None not in (start, goal, value) and abs(start - goal) >= MIN_GAP
            row[closed] = (start - value) / (start - goal) if usable else float("nan")
        row["gap_closed_mean"] = _nanmean([row[k] for k in GAP_KEYS.values()])
        row["over_forgot"] = over_forgot(row)


def over_forgot(row: dict[str, Any], suffix: str = "") -> list[str]:
    """The headline metrics whose closure lies above the band (forgot past Retrain)."""
    return [key for key, closed in GAP_KEYS.items()
            if _is_number(value := row.get(closed + suffix)) and value > CLOSURE_BAND[1]]


def _nanmean(values: list[Any]) -> float:
    numbers = [v for v in values if _is_number(v) and not math.isnan(v)]
    return float(np.mean(numbers)) if numbers else float("nan")


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method with ``<key>_mean`` and ``<key>_std`` over seeds (``seed: None``)."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        row: dict[str, Any] = {"method": method, "seed": None, "seeds": len(group)}
        if any("verdict" in r for r in group):  # per seed, in seed order
            row["verdicts"] = [r.get("verdict", "-") for r in group]
        for key in group[0]:
            values = [r.get(key) for r in group]
            if key == "seed" or not all(_is_number(v) for v in values):
                continue
            # A seed without a value (NaN: e.g. a closure of a gap inside the noise) is
            # left out of its mean and spread.
            array = np.array([v for v in values if not math.isnan(v)], dtype=float)
            row[f"{key}_mean"] = float(np.mean(array)) if len(array) else float("nan")
            row[f"{key}_std"] = float(np.std(array, ddof=1)) if len(array) > 1 else 0.0
        if method not in (*REFERENCE_MODELS, *BASELINES):
            row["over_forgot"] = over_forgot(row, "_mean")
        out.append(row)
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def _add_ks(rows: list[dict[str, Any]]) -> None:
    reference = np.load(next(r for r in rows if r["method"] == "retrain")["_p_true_file"])
    for row in rows:
        quality = forget_quality(np.load(row.pop("_p_true_file")), reference)
        row["ks_statistic"], row["ks_pvalue"] = quality["ks_statistic"], quality["ks_pvalue"]


def _write_results(out: Path, study: StudyConfig, rows: list[dict[str, Any]],
                   log: Callable[[str], None]) -> str:
    from e2urec.bench.plots import plot_results

    warnings = [r["warning"] for r in rows if r.get("warning")]
    payload = {"study": study.name, "rows": rows, "warnings": warnings,
               "config": to_dict(study), "torch_threads": torch.get_num_threads(),
               "versions": library_versions()}
    atomic_write_text(out / "results.json",
                      json.dumps(payload, indent=2, default=_json_default) + "\n")
    per_seed = pd.DataFrame([r for r in rows if r["seed"] is not None])
    per_seed.to_csv(out / "results.csv", index=False)
    summary = pd.DataFrame([r for r in rows if r["seed"] is None])
    seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    table = markdown_table(summary)
    note = (f"Mean ± standard deviation over seeds {seeds}. " if len(seeds) > 1 else
            f"Seed {seeds[0]}. ")
    ranking = cost_at_closure([r for r in rows if r["seed"] is None])
    verdicts = verdict_table([r for r in rows if r["seed"] is not None])
    atomic_write_text(out / "results.md", f"# {study.name}\n\n{note}{LEGEND}\n\n{table}\n"
                      f"\n{ranking}\n\n## The verdict, seed by seed\n\n{VERDICT_LEGEND}\n\n"
                      f"{verdicts}\n" + "".join(f"\nWARNING: {w}\n" for w in warnings))
    plot_results(summary[~summary["method"].isin(BASELINES)], out)
    for warning in warnings:
        log(f"[bench] WARNING: {warning}")
    return table


def cost_at_closure(summary: list[dict[str, Any]]) -> str:
    """The methods that land (every mean closure inside the band), cheapest first, in
    seconds as a multiple of Retrain's; then those that do not."""
    retrain = next((r.get("unlearn_seconds_mean") for r in summary
                    if r["method"] == "retrain"), None)
    methods = [r for r in summary
               if r["method"] not in (*REFERENCE_MODELS, *BASELINES, SECOND_RETRAIN)]
    landed = sorted((r for r in methods if all(
        _is_number(v := r.get(f"{key}_mean")) and CLOSURE_BAND[0] <= v <= CLOSURE_BAND[1]
        for key in GAP_KEYS.values())), key=lambda r: r.get("unlearn_seconds_mean", math.inf))
    if not _is_number(retrain) or not retrain:
        return ""

    def cost(row: dict[str, Any]) -> str:
        return f"{row['method']} ({row.get('unlearn_seconds_mean', math.nan) / retrain:.2f}x)"

    others = [r for r in methods if r not in landed]
    return (f"Landed inside {CLOSURE_BAND[0]}-{CLOSURE_BAND[1]} on every closure, cheapest "
            f"first (seconds x Retrain's): {', '.join(map(cost, landed)) or 'none'}. "
            f"Not landed: {', '.join(map(cost, others)) or 'none'}.")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


LEGEND = ("Forgetting columns are on the forgotten users' unplanted rows (planted canary "
          "rows are the canary's); probe AUC is the stop rule's never-trained level; sym-KL, "
          "JSD and L2 are distances to Retrain (lower is closer); MIA AUC attacks forget rows "
          "against audit users' rows on the binary Yes/No log-loss; "
          "canary is the planted answer's rate with the trigger (without it in brackets); "
          "closed is the share of the Original-to-Retrain gap a method closed on forget AUC / "
          "MIA AUC / canary lift (1 = Retrain; ! marks a value outside 0.7-1.3, above it the "
          "method forgot past Retrain, as visible to an auditor as remembering; a seed whose "
          "gap is under 0.05, inside the measure's noise, has none and is left out of the "
          "mean); HR@10 and "
          "NDCG@10 rank a liked test movie among 99 movies its user never rated; the "
          "popularity row ranks the same candidates by how often each was rated in the "
          "training rows (no model); |Δ| is the distance to Retrain, the retrain-2 row's "
          "is Retrain's own spread; verdict is per seed (next section).")
COLUMNS = [("test_auc", "test AUC"), ("hr10", "HR@10"), ("ndcg10", "NDCG@10"),
           ("forget_auc", "forget AUC"), ("probe_auc", "probe AUC"),
           ("forget_sym_kl", "sym-KL"), ("forget_jsd", "JSD"), ("forget_l2", "L2"),
           ("mia_auc", "MIA AUC"), ("flagged", "flagged users"),
           ("flagged_5", "flagged 5-user requests"), ("canary_success", "canary"),
           ("gap_closed_forget_auc", "closed AUC"), ("gap_closed_mia_auc", "closed MIA"),
           ("gap_closed_canary", "closed canary"),
           ("dist_forget_auc", "|Δ| forget AUC"), ("dist_mia_auc", "|Δ| MIA"),
           ("unlearn_seconds", "unlearn s"), ("trainable_share", "trainable")]
VERDICT_LEGEND = (
    "Forgotten means the forgotten users cannot be told from never-trained (audit) users "
    "under the same model: ranking = their AUC minus the audit users' AUC; membership = "
    "the per-user likelihood-ratio test against the auditor's reference models: the "
    "forgotten users' mean score calibrated on the audit users' (0: like them; without "
    "references, a loss-threshold attack's AUC minus 0.5); canary = the trigger's lift of "
    "the planted answer minus decoy triggers' lift. Ranking and membership carry a "
    "user-level bootstrap interval: "
    "wholly above 0 fails (+, remembered), wholly below fails too (-, forgotten past "
    "never-trained users). The canary's brackets are the band a never-trained model's "
    "measure falls in (per-user randomisation: each user's trigger swapped with their "
    "decoys), with its p-value; outside the band fails, either way. All Bonferroni over the "
    "measures, two-sided. Closures (1 = Retrain) carry a "
    "user-level bootstrap 95% interval; |Δ| is the distance to Retrain, and the "
    f"{SECOND_RETRAIN} row (Retrain with another training seed) gives Retrain's own.")

CANARY_COLUMN = [key for key, _ in COLUMNS].index("canary_success")


def verdict_table(per_seed: list[dict[str, Any]]) -> str:
    """Per model and seed: the verdict, each measure and closure with its interval, and
    the distances to Retrain."""
    head = ["method", "seed", "verdict", "ranking", "membership", "canary", "closed AUC",
            "closed MIA", "closed canary", "|Δ| forget AUC / MIA / canary lift"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted((r for r in per_seed if r["method"] not in BASELINES),
                      key=lambda r: (r["seed"], _order(r["method"]))):
        cells = [row["method"], str(row["seed"]), short_verdict(row.get("verdict"))]
        cells += [_interval(row, f"{name}_gap") for name in ("ranking", "membership", "canary")]
        cells += [_interval(row, closed) for closed in GAP_KEYS.values()]
        cells.append(" / ".join(_cell("", row.get(f"dist_{k}")) for k in DISTANCE_KEYS))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _order(method: str) -> int:
    return {"original": 0, "retrain": 1, SECOND_RETRAIN: 2}.get(method, 3)


def short_verdict(text: str | None) -> str:
    """``pass``, or ``fail`` with each failed measure and its way (+ remembered, - past)."""
    if not text or text == "pass":
        return text or "-"
    parts = text.removeprefix("fail: ").split(", ")
    return "fail " + " ".join(
        part.split(" ")[0] + ("+" if "remembered" in part else
                              "-" if "past" in part else "?") for part in parts)


def _interval(row: dict[str, Any], key: str) -> str:
    value, low, high = row.get(key), row.get(f"{key}_low"), row.get(f"{key}_high")
    if not _is_number(value) or math.isnan(value):
        return "-"
    text = f"{value:+.3f}" if key.endswith("_gap") else f"{value:.2f}"
    if _is_number(low) and _is_number(high) and not math.isnan(low):
        text += f" [{low:+.3f}, {high:+.3f}]" if key.endswith("_gap") else \
            f" [{low:.2f}, {high:.2f}]"
    if _is_number(row.get(f"{key}_p")):
        text += f" p={row[f'{key}_p']:.3f}"
    return text


def markdown_table(summary: pd.DataFrame) -> str:
    """The headline columns of the per-method summary rows, mean ± std over seeds."""
    lines = ["| method | " + " | ".join(title for _, title in COLUMNS) + " | verdict |",
             "|---|" + "|".join("---" for _ in COLUMNS) + "|---|"]
    for _, row in summary.iterrows():
        cells = [_summary_cell(key, row) for key, _ in COLUMNS]
        base = row.get("canary_base_rate_mean")
        if _is_number(base) and not math.isnan(base):
            cells[CANARY_COLUMN] += f" ({_cell('canary_base_rate', base)})"
        verdicts = row.get("verdicts")
        cells.append(", ".join(map(short_verdict, verdicts))
                     if isinstance(verdicts, list) else "-")
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summary_cell(key: str, row: pd.Series) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    text = _cell(key, mean)
    if row.get("seeds", 1) > 1 and text != "-" and std is not None and not math.isnan(std):
        text += f" ± {_cell(key, std)}"
    if key in GAP_KEYS.values() and _is_number(mean) and not math.isnan(mean) \
            and not CLOSURE_BAND[0] <= mean <= CLOSURE_BAND[1]:
        text += " !"
    return text


def _cell(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key == "trainable_share":
        return f"{100 * value:.2f}%"
    if key in ("flagged", "flagged_5"):
        return f"{100 * value:.0f}%"
    if key == "unlearn_seconds":
        return f"{value:.1f}"
    if key == "ks_pvalue":
        return f"{value:.3g}"
    return f"{value:.4f}"
