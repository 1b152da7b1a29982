"""``e2urec bench``: the whole comparison from one YAML study, resumable.

Every stage (data, Original, each method, each evaluation) lives in a folder
named by a hash of the configuration it depends on and is marked done by a
``stage.json`` written last. A rerun skips finished stages; a changed config
changes the hashes of exactly the stages it affects.
"""

from __future__ import annotations

import contextlib
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
    option,
    read_config_file,
    to_dict,
)
from e2urec.data.protocol import prepare_dataset, write_prepared
from e2urec.data.samples import read_split, subsample
from e2urec.data.sources import RawSource, find_raw
from e2urec.evaluation.audit import forget_quality, membership_auc
from e2urec.evaluation.evaluate import evaluate
from e2urec.evaluation.predict import Predictions, predict
from e2urec.fileio import atomic_write_text, check_output, folder_lock, write_json
from e2urec.methods import get_method, run_method
from e2urec.runtime import set_threads

STAGE_FILE = "stage.json"


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
    cpu: bool = option(False, help="train and score on the CPU even with a GPU")
    threads: int | None = option(None, help="torch CPU threads (None: the cores not busy)")

    def validate(self) -> None:
        if not self.methods:
            raise ConfigError("methods: name at least one unlearning method")
        for name, options in self.methods.items():
            method = get_method(method_of(name))
            from_dict(method.Options, options or {}, f"methods.{name}")
        if self.eval_max_samples is not None and self.eval_max_samples < 10:
            raise ConfigError("eval_max_samples must be at least 10")


def method_of(entry: str) -> str:
    """``e2urec/answer`` names a variant of ``e2urec``: the part before the slash."""
    return entry.split("/", 1)[0]


def load_study(path: str | Path) -> StudyConfig:
    """A study from YAML; ``extends: other.yaml`` starts from another study's settings."""
    path = Path(path)
    return from_dict(StudyConfig, read_config_file(path), path.name)


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
        return _run_locked(study, out, Stages(home, log), raw)


def _run_locked(study: StudyConfig, out: Path, stages: Stages, raw: RawSource) -> str:
    home = stages.root
    data_dir = _prepare(stages, study, raw)
    base_key = {"data": study.data, "raw_sha256": raw.digest, "backbone": study.backbone,
                "train": study.train}

    original_dir, original = stages.run("original", base_key,
                                        lambda f: _train_original(study, data_dir, f))
    models: dict[str, tuple[Path, dict[str, Any]]] = {"original": (original_dir / "model",
                                                                   original)}
    retrain_dir, retrain = stages.run("retrain", {**base_key, "method": "retrain"},
                                      lambda f: _unlearn(study, data_dir, None, "retrain", {}, f))
    models["retrain"] = (retrain_dir / "model", retrain)
    for name, options in study.methods.items():
        if name == "retrain":
            continue
        key = {**base_key, "method": name, "options": options or {}}
        method_name = method_of(name)
        folder, record = stages.run(
            f"method-{name.replace('/', '-')}", key,
            lambda f, n=method_name, o=options: _unlearn(
                study, data_dir, original_dir / "model", n, o or {}, f))
        models[name] = (folder / "model", record)

    reference = models["retrain"][0]
    reference_preds: list[Predictions] = []  # the reference's forget logits, made once
    rows = []
    for name, (model_dir, record) in models.items():
        key = {"model": str(model_dir.relative_to(home)),
               "reference": str(reference.relative_to(home)), "batch": study.eval_batch_size,
               "max_samples": study.eval_max_samples}
        _, metrics = stages.run(f"eval-{name.replace('/', '-')}", key,
                                lambda f, m=model_dir: _evaluate(study, data_dir, m, reference,
                                                                 reference_preds, f))
        rows.append(_row(name, metrics, record))
    _add_ks(rows)
    return _write_results(out, study, rows)


def _prepare(stages: Stages, study: StudyConfig, raw: RawSource) -> Path:
    def work(folder: Path) -> dict[str, Any]:
        prepared = prepare_dataset(study.data, raw)
        if PartialState().is_main_process:
            write_prepared(prepared, folder / "data")
        return {"counts": prepared.manifest["counts"]}

    folder, _ = stages.run("data", {"config": study.data, "raw_sha256": raw.digest}, work)
    return folder / "data"


def _train_original(study: StudyConfig, data_dir: Path, folder: Path) -> dict[str, Any]:
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


def _evaluate(study: StudyConfig, data_dir: Path, model_dir: Path, reference_dir: Path,
              reference_preds: list[Predictions], folder: Path) -> dict[str, Any]:
    scorer = load_scorer(model_dir)
    device = study_device(study)
    if not reference_preds:
        reference_preds.append(predict(load_scorer(reference_dir), read_split(
            data_dir, "forget"), study.eval_batch_size, keep_logits=True, device=device,
            desc="reference"))
    metrics, preds = evaluate(scorer, data_dir, reference_preds[0], study.eval_batch_size,
                              max_samples=study.eval_max_samples, device=device)
    non_members = read_split(data_dir, "holdout") or read_split(data_dir, "valid")
    non_members = subsample(non_members, study.eval_max_samples)
    outside = predict(scorer, non_members, study.eval_batch_size, device=device,
                      desc="eval non-members")
    metrics["mia_auc"] = membership_auc(preds["forget"].loss, outside.loss)
    metrics["mia_nonmembers"] = "holdout" if read_split(data_dir, "holdout") else "valid"
    np.save(folder / "forget_p_true.npy", preds["forget"].p_true)
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return {**metrics, "p_true_file": str(folder / "forget_p_true.npy")}


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
        "forget_auc": metrics["forget"]["auc"], "forget_acc": metrics["forget"]["acc"],
        "retain_auc": metrics["retain"]["auc"],
        "forget_sym_kl": distance.get("sym_kl"), "forget_jsd": distance.get("jsd"),
        "forget_l2": distance.get("l2"), "mia_auc": metrics["mia_auc"],
        "mia_nonmembers": metrics["mia_nonmembers"],
        "unlearn_seconds": unlearn if unlearn is not None else float("nan"),
        "train_seconds": record.get("train_seconds"),
        "trainable_params": record["trainable_params"], "total_params": record["total_params"],
        "trainable_share": record["trainable_params"] / max(record["total_params"], 1),
        "peak_memory_mb": record.get("peak_memory_mb"),
        "retrained_shards": record.get("retrained_shards"),
        "_p_true_file": metrics["p_true_file"],
    }


def _add_ks(rows: list[dict[str, Any]]) -> None:
    reference = np.load(next(r for r in rows if r["method"] == "retrain")["_p_true_file"])
    for row in rows:
        quality = forget_quality(np.load(row.pop("_p_true_file")), reference)
        row["ks_statistic"], row["ks_pvalue"] = quality["ks_statistic"], quality["ks_pvalue"]


def _write_results(out: Path, study: StudyConfig, rows: list[dict[str, Any]]) -> str:
    from e2urec.bench.plots import plot_results

    payload = {"study": study.name, "rows": rows, "config": to_dict(study),
               "torch_threads": torch.get_num_threads(), "versions": library_versions()}
    atomic_write_text(out / "results.json",
                      json.dumps(payload, indent=2, default=_json_default) + "\n")
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "results.csv", index=False)
    table = markdown_table(frame)
    atomic_write_text(out / "results.md", f"# {study.name}\n\n{table}\n")
    plot_results(frame, out)
    return table


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """The headline columns as a Markdown table (lower distances are better)."""
    columns = [("method", "method"), ("test_auc", "test AUC"), ("test_acc", "test ACC"),
               ("test_logloss", "test LogLoss"), ("forget_auc", "forget AUC"),
               ("forget_sym_kl", "forget sym-KL"), ("forget_jsd", "forget JSD"),
               ("forget_l2", "forget L2"), ("mia_auc", "MIA AUC"), ("ks_pvalue", "KS p"),
               ("unlearn_seconds", "unlearn s"), ("trainable_share", "trainable")]
    lines = ["| " + " | ".join(title for _, title in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for _, row in frame.iterrows():
        cells = [_cell(key, row[key]) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key == "trainable_share":
        return f"{100 * value:.2f}%"
    if key == "unlearn_seconds":
        return f"{value:.1f}"
    if key == "ks_pvalue":
        return f"{value:.3g}"
    return f"{value:.4f}"
