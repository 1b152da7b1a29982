"""``e2urec bench``: the whole comparison from one YAML study, resumable.

Per seed: the data, the Original, Retrain and a second Retrain, each method, the
auditor's references, and an evaluation of every model, each a stage
(bench/stages.py); then the rows (bench/tables.py) and the results on disk
(bench/report.py).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2urec.bench.config import (
    SECOND_RETRAIN,
    StudyConfig,
    load_study,
    method_of,
    method_stage_key,
    second_retrain,
    seeded,
)
from e2urec.bench.report import write_results
from e2urec.bench.stages import (
    Stages,
    evaluate_stage,
    prepare_stage,
    train_original_stage,
    train_references_stage,
    train_user_shards,
    unlearn_stage,
)
from e2urec.bench.tables import (
    MIN_SPREAD,
    REFERENCE_MODELS,
    add_closure_intervals,
    add_distances,
    add_gap_closed,
    add_ks,
    aggregate,
    result_row,
)
from e2urec.config import (
    ConfigError,
    to_dict,
)
from e2urec.data.sources import RawSource, find_raw
from e2urec.evaluation.lira import ReferenceLevels
from e2urec.evaluation.predict import Predictions
from e2urec.evaluation.ranking import popularity
from e2urec.evaluation.verdict import CANARY_TEST, VerdictOptions
from e2urec.fileio import check_output, folder_lock
from e2urec.methods.base import RECORD_FILE
from e2urec.methods.e2urec import SHARD_TEACHERS
from e2urec.runtime import set_threads
from e2urec.training.stop_rule import stopped_by


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
        return write_results(out, study, rows + aggregate(rows), log)


def _run_seed(study: StudyConfig, stages: Stages, raw: RawSource) -> list[dict[str, Any]]:
    home = stages.root
    data_dir = prepare_stage(stages, study, raw)
    base_key = {"data": study.data, "raw_sha256": raw.digest, "backbone": study.backbone,
                "train": study.train}

    original_dir, original = stages.run("original", base_key,
                                        lambda f: train_original_stage(study, data_dir, f))
    models: dict[str, tuple[Path, dict[str, Any]]] = {"original": (original_dir / "model",
                                                                   original)}
    retrain_dir, retrain = stages.run(
        "retrain", {**base_key, "method": "retrain"},
        lambda f: unlearn_stage(study, data_dir, None, "retrain", {}, f))
    models["retrain"] = (retrain_dir / "model", retrain)
    # A second Retrain with another training seed: Retrain's own spread, the noise every
    # method's distance to Retrain is read against.
    second = second_retrain(study)
    second_dir, second_record = stages.run(
        "retrain", {**base_key, "train": second.train, "method": "retrain"},
        lambda f: unlearn_stage(second, data_dir, None, "retrain", {}, f))
    models[SECOND_RETRAIN] = (second_dir / "model", second_record)
    for name, options in study.methods.items():
        if name == "retrain":
            continue
        method_name = method_of(name)
        options, key_options = dict(options or {}), dict(options or {})
        if method_name == "e2urec" and options.get("forget_teacher") in SHARD_TEACHERS \
                and not options.get("shards"):
            # The user-sharded ensemble exists before any request: one stage a seed.
            shards, _ = stages.run("user-shards", {**base_key, "scheme": "user_balanced"},
                                   lambda f: train_user_shards(study, data_dir, f))
            options["shards"] = str(shards / "ensemble")
            key_options["shards"] = f"stage {shards.name}"
        key = method_stage_key(base_key, name, key_options)
        folder, record = stages.run(
            f"method-{name.replace('/', '-')}", key,
            lambda f, n=method_name, o=options: unlearn_stage(
                study, data_dir, original_dir / "model", n, o or {}, f))
        models[name] = (folder / "model", with_stopped_by(record, folder / "model"))

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
                                lambda f, m=model_dir: evaluate_stage(
                                    study, data_dir, m, reference, reference_preds, f,
                                    references, levels))
        rows.append({**result_row(name, metrics, record), "seed": study.data.seed})
    add_ks(rows)
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


def with_stopped_by(record: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """A method stage's result with what stopped it (a stage made before the field was kept
    reads it from the model's own record)."""
    if "stopped_by" in record or not (model_dir / RECORD_FILE).is_file():
        return record
    saved = json.loads((model_dir / RECORD_FILE).read_text())
    stop = (saved.get("options") or {}).get("stop")
    if "history" not in saved or not stop:
        return record
    return {**record, "stopped_by": stopped_by(saved["history"], stop["kind"])}
