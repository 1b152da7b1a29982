"""The bench's stages: hash-keyed, resumable folders, and the work each one does.

Every stage (data, Original, each method, each evaluation) lives in a folder
named by a hash of the configuration it depends on and is marked done by a
``stage.json`` written last. A rerun skips finished stages; a changed config
changes the hashes of exactly the stages it affects.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState

from e2urec.bench.config import StudyConfig
from e2urec.checkpoints.scorers import load_scorer
from e2urec.config import (
    config_hash,
    to_dict,
)
from e2urec.data.protocol import prepare_dataset, write_prepared
from e2urec.data.samples import read_split, subsample, unplanted
from e2urec.data.sources import RawSource
from e2urec.evaluation.evaluate import BENCH_SPLITS, evaluate
from e2urec.evaluation.lira import ReferenceLevels, reference_levels
from e2urec.evaluation.predict import Predictions, predict
from e2urec.fileio import atomic_write_text, write_json
from e2urec.methods import run_method
from e2urec.runtime import pick_device
from e2urec.training.loop import make_accelerator
from e2urec.training.shards import ShardTrainer, save_initial_ensemble

STAGE_FILE = "stage.json"


SCORES_FILE = "scores.npz"  # an evaluation's per-row scores, for the closures' intervals


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


def unlearn_stage(study: StudyConfig, data_dir: Path, original: Path | None, name: str,
             options: dict[str, Any], folder: Path) -> dict[str, Any]:
    # The stage folder is the bench's own: a half-finished method's files are resumed.
    record = run_method(name, data_dir, original, study.backbone, study.train, options,
                        folder / "model", cpu=study.cpu, overwrite=True)
    keep = ("unlearn_seconds", "trainable_params", "total_params", "trainable_share",
            "peak_memory_mb", "peak_memory_kind", "retrained_shards", "stopped_by")
    return {**{k: record[k] for k in keep if k in record}, "stage_id": folder.name}


def train_references_stage(study: StudyConfig, data_dir: Path, folder: Path
                           ) -> dict[str, Any]:
    from e2urec.training.references import train_references

    record = train_references(data_dir, study.backbone, study.train, folder / "references",
                              study.references, seed=study.data.seed, cpu=study.cpu)
    return {"train_seconds": record["seconds"], "count": record["count"],
            "stage_id": folder.name}


def evaluate_stage(study: StudyConfig, data_dir: Path, model_dir: Path, reference_dir: Path,
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
        levels.append(tuple(reference_levels(
            references / "references", unplanted(read_split(data_dir, "forget")), audit_rows,
            batch_size=study.eval_batch_size, device=device)))
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
    return pick_device("cpu" if study.cpu else "auto")
