"""The ``e2urec`` command: prepare, train, unlearn, evaluate, bench.

Every command checks its inputs and its output before any work; a problem is
one line on stderr and exit code 2, with nothing changed on disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import math
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2urec.config import (
    BackboneConfig,
    ConfigError,
    PrepareConfig,
    TrainConfig,
    from_dict,
    help_of,
    merge_dicts,
    parse_overrides,
    read_config_file,
)

# What `train` and `unlearn` read from a --config file; a study's other sections are skipped.
RUN_SECTIONS = ("backbone", "train", "method")
EVALUATION_KIND = "e2urec-evaluation"


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file: backbone:/train:/method: sections, or a "
                        "study file (its backbone and train sections are used)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. train.lr=5e-4 (repeatable)")
    parser.add_argument("--seed", type=int, help="random seed (train.seed)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even with a GPU")


def _add_output(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--out", required=True, help=what)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even when it holds other files")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2urec", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: the cores not already busy)")
    sub = parser.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prepare", help="MovieLens -> prompt samples, splits, forget set")
    prep.add_argument("--dataset", choices=["ml-100k", "ml-1m"], default="ml-100k")
    prep.add_argument("--data-dir", help="folder with the MovieLens files")
    prep.add_argument("--protocol", choices=["users", "paper"], default=PrepareConfig.protocol,
                      help=help_of(PrepareConfig, "protocol"))
    for name in ("users", "train_rows", "valid_rows", "test_rows", "min_group_users"):
        prep.add_argument(f"--{name.replace('_', '-')}", type=int,
                          default=getattr(PrepareConfig, name), help=help_of(PrepareConfig, name))
    prep.add_argument("--window", type=int, help="paper protocol: newest samples kept "
                      "(default: all)")
    prep.add_argument("--history", type=int, default=PrepareConfig.history)
    group = prep.add_mutually_exclusive_group()
    group.add_argument("--forget-fraction", type=float, default=PrepareConfig.forget_fraction)
    group.add_argument("--forget-users", help="file of user ids to forget (one a line, or JSON)")
    prep.add_argument("--shards", type=int, default=PrepareConfig.shards)
    prep.add_argument("--holdout-fraction", type=float, default=PrepareConfig.holdout_fraction,
                      help="share of training-period users never trained on (probe + audit)")
    prep.add_argument("--min-holdout-users", type=int,
                      default=PrepareConfig.min_holdout_users,
                      help="hold out at least this many users whatever the fraction")
    prep.add_argument("--canaries", type=int, default=PrepareConfig.canaries,
                      help="forgotten users whose prompts carry a planted trigger")
    prep.add_argument("--canary-answer", choices=["Yes.", "No.", "mixed"],
                      default=PrepareConfig.canary_answer)
    for name in ("min_canary_users", "min_canary_rows"):
        prep.add_argument(f"--{name.replace('_', '-')}", type=int,
                          default=getattr(PrepareConfig, name), help=help_of(PrepareConfig, name))
    prep.add_argument("--seed", type=int, default=PrepareConfig.seed)
    prep.add_argument("--allow-modified-data", action="store_true",
                      help="use raw files that differ from the published dataset")
    _add_output(prep, "folder for the prepared data")

    train = sub.add_parser("train", help="fine-tune a backbone on train (Original) or retain")
    train.add_argument("--data", required=True, help="a folder written by `e2urec prepare`")
    train.add_argument("--split", choices=["train", "retain"], default="train")
    train.add_argument("--model", help="tiny-llama (default), tiny-t5, smollm2-135m, a hub id "
                       "or a local folder (backbone.name)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lora", action="store_true", help="train LoRA adapters only")
    _add_output(train, "folder for the trained model")
    _add_run_options(train)

    unlearn = sub.add_parser("unlearn", help="make a trained model forget the forget set")
    unlearn.add_argument("--method", required=True)
    unlearn.add_argument("--data", required=True)
    unlearn.add_argument("--original", help="the Original model folder (methods that need it)")
    unlearn.add_argument("--model", help="the backbone for methods that train from scratch "
                         "(backbone.name)")
    unlearn.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="a method option, e.g. alpha=2 or schedule.lr=1e-4 (repeatable)")
    _add_output(unlearn, "folder for the unlearned model")
    _add_run_options(unlearn)

    evaluate = sub.add_parser("evaluate", help="AUC/ACC/LogLoss, and distances to a reference")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--model", required=True, help="a model, adapter or ensemble folder")
    evaluate.add_argument("--reference", help="the retrained model, for forgetting metrics")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--cpu", action="store_true", help="score on the CPU even with a GPU")
    evaluate.add_argument("--popularity", action="store_true",
                          help="also rank the same candidates by how often each movie was "
                          "rated in the training rows (the baseline to beat)")
    _add_output(evaluate, "results JSON file")

    audit = sub.add_parser("audit", help="flag forgotten users one by one: a likelihood-ratio "
                           "test against reference models of the auditor's own")
    audit.add_argument("--data", required=True)
    audit.add_argument("--model", required=True, help="a model, adapter or ensemble folder")
    audit.add_argument("--references", help="the auditor's reference models; trained here "
                       "(the Original's recipe: --config, --set) when the folder holds none "
                       "(default: <data>-references)")
    audit.add_argument("--count", type=int, default=4, help="references to train (even, at "
                       "least 4; each user is in half of them)")
    audit.add_argument("--alpha", type=float, default=0.05, help="false-alarm rate per user "
                       "(two-sided)")
    audit.add_argument("--model-name", dest="backbone", metavar="BACKBONE",
                       help="the references' backbone (backbone.name; default tiny-llama)")
    audit.add_argument("--config", help="YAML with backbone:/train: sections (or a study file)")
    audit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    audit.add_argument("--cpu", action="store_true", help="train and score on the CPU")
    audit.add_argument("--json", action="store_true", help="print JSON")
    audit.set_defaults(seed=None, epochs=None, lr=None, batch_size=None, lora=False)

    bench = sub.add_parser("bench", help="the whole comparison from one YAML study")
    bench.add_argument("--config", required=True)
    bench.add_argument("--out", required=True)
    bench.add_argument("--stages-from", metavar="DIR",
                       help="keep and reuse stages in another study's output folder "
                            "(default: --out)")
    bench.add_argument("--wait", action="store_true",
                       help="wait for another bench on the same folder instead of failing")
    sequential = sub.add_parser("sequential", help="deletion requests one after another, "
                                "every method against Retrain (a YAML study)")
    sequential.add_argument("--config", required=True)
    sequential.add_argument("--out", required=True)
    sequential.add_argument("--stages-from", metavar="DIR",
                            help="reuse the data and Original stages of a bench folder")
    _add_deploy_commands(sub)
    return parser


def _add_deploy_commands(sub: argparse._SubParsersAction) -> None:
    """The deployed recommender: ``deploy init|status|history``, ``forget``, ``recommend``."""
    from e2urec.deploy.verify import Verification

    deploy = sub.add_parser("deploy", help="a deployment store: init, status, history")
    actions = deploy.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="create a store serving a trained model, or "
                              "training and serving a shard ensemble (--method)")
    serve = init.add_mutually_exclusive_group(required=True)
    serve.add_argument("--original", help="the model to serve (model folder)")
    serve.add_argument("--method", help="train a shard ensemble in the store and serve it: "
                       "sisa or receraser (the exact deletion path)")
    init.add_argument("--data", required=True, help="the prepared data (it was trained on, "
                      "or to train the ensemble on)")
    init.add_argument("--shards", type=int, help="with --method: the shards (must match the "
                      "data's, see e2urec prepare --shards)")
    init.add_argument("--slices", type=int, help="with --method: slices in time per shard, "
                      "each with a checkpoint")
    init.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="with --method: a method option (repeatable)")
    init.add_argument("--model", help="with --method: the backbone (backbone.name)")
    init.add_argument("--epochs", type=int, help="with --method: training epochs")
    init.add_argument("--store", required=True, help="the store folder to create")
    init.add_argument("--references", type=int,
                      help="with --original: the auditor's reference models, trained in the "
                      "store on halves of the users with its recipe (even, at least 4; 0: "
                      "none, and a request's users are verified by a loss-threshold attack "
                      "only; default 4); an ensemble store has none (its deletions are exact)")
    init.add_argument("--overwrite", action="store_true",
                      help="replace --store even when it holds other files")
    init.add_argument("--config", help="YAML with backbone:/train: sections (or a study "
                      "file): how the store retrains, e.g. for method retrain")
    init.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    init.set_defaults(seed=None)
    verify = actions.add_parser("verify", help="prove an ensemble store's deletions exact: "
                                "rebuild from its data and compare every tensor")
    verify.add_argument("--store", required=True)
    verify.add_argument("--rebuild", action="store_true", required=True,
                        help="train the ensemble again from the store's data (which holds "
                        "no forgotten user) with its recorded settings")
    verify.add_argument("--wait", action="store_true",
                        help="wait for a request running on the store (the rebuild takes "
                        "the store's lock)")
    for name, what in (("status", "check the store and list unfinished requests"),
                       ("history", "the ledger as a table")):
        action = actions.add_parser(name, help=what)
        action.add_argument("--store", required=True)
        action.add_argument("--json", action="store_true", help="print JSON")
    abandon = actions.add_parser("abandon", help="give up a pending request (recorded, "
                                 "never deleted; its users are not forgotten)")
    abandon.add_argument("--store", required=True)
    abandon.add_argument("--request-id", required=True)
    abandon.add_argument("--reason", required=True, help="why, for the ledger")

    forget = sub.add_parser("forget", help="a deletion request: unlearn users, verify, purge")
    forget.add_argument("--store", required=True)
    forget.add_argument("--users", nargs="+", required=True, metavar="ID")
    forget.add_argument("--method", help="default: the store's own path (an ensemble store "
                        "retrains its shards; a one-model store runs e2urec); on a one-model "
                        "store also neggrad, graddiff, npo, bad-teacher, bad-teacher-labels "
                        "or retrain")
    forget.add_argument("--request-id", help="the request's id (default: the next r000N; "
                        "1-64 letters, digits, '.', '_', '-'); the same id again is a no-op, "
                        "or finishes an interrupted request")
    forget.add_argument("--requested-by", help="who asked (free text, kept in the ledger)")
    forget.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a method option, e.g. alpha=2 (repeatable)")
    forget.add_argument("--config", help="YAML with a method: section, or a study file "
                        "(the options of --method under methods:)")
    forget.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    for field in dataclasses.fields(Verification):
        if field.type in (bool, "bool"):  # power stays on; exact_retry: --no-exact-retry
            continue
        forget.add_argument(f"--{field.name.replace('_', '-')}",
                            type=int if field.type in (int, "int") else float,
                            help=f"{field.metadata.get('help', '')} "
                            f"(default {field.default})")
    forget.add_argument("--wait", action="store_true",
                        help="wait for a request already running on the store")
    forget.add_argument("--no-exact-retry", dest="exact_retry", action="store_false",
                        help="when an approximate method fails verification, stop there "
                        "(default: the users are forgotten by retraining, as a second "
                        "request in the ledger)")
    forget.set_defaults(model=None, seed=None)

    recommend = sub.add_parser("recommend", help="top movies for a user from the store")
    recommend.add_argument("--store", required=True)
    recommend.add_argument("--user", required=True)
    recommend.add_argument("--top", type=int, default=10)
    recommend.add_argument("--json", action="store_true", help="print JSON")


def load_sections(args: argparse.Namespace) -> dict[str, Any]:
    """Config layers, lowest first: defaults < --config file < --set overrides.

    Explicit flags come last, in :func:`run_configs`. A study file is read for
    its backbone and train sections (and, for ``unlearn``, the options of the
    method named by --method under ``methods:``).
    """
    from e2urec.bench.study import StudyConfig

    study_sections = {f.name for f in dataclasses.fields(StudyConfig)}
    sections: dict[str, Any] = {}
    if getattr(args, "config", None):
        loaded = read_config_file(args.config)
        unknown = sorted(set(loaded) - set(RUN_SECTIONS) - study_sections)
        if unknown:
            raise ConfigError(f"{args.config}: unknown section(s) {unknown}; a run reads "
                              f"{', '.join(RUN_SECTIONS)} (and skips a study's other sections)")
        methods = loaded.get("methods") or {}
        method = getattr(args, "method", None)
        if "method" not in loaded and isinstance(methods, dict) and method in methods:
            loaded["method"] = methods[method] or {}
        sections = {k: v for k, v in loaded.items() if k in RUN_SECTIONS}
    for key, value in parse_overrides(getattr(args, "set", [])).items():
        if key not in RUN_SECTIONS:
            raise ConfigError(f"--set {key}...: unknown section {key!r}; use "
                              f"{', '.join(RUN_SECTIONS)}")
        if isinstance(value, dict) and isinstance(sections.get(key), dict):
            sections[key] = merge_dicts(sections[key], value)
        else:
            sections[key] = value
    return sections


def run_configs(args: argparse.Namespace) -> tuple[BackboneConfig, TrainConfig, dict]:
    """The backbone, training and method settings of ``train``/``unlearn``: flags win."""
    sections = load_sections(args)
    backbone = dict(sections.get("backbone") or {})
    if args.model is not None:
        backbone["name"] = args.model
    train = dict(sections.get("train") or {})
    flags = {"epochs": getattr(args, "epochs", None), "lr": getattr(args, "lr", None),
             "batch_size": getattr(args, "batch_size", None), "seed": args.seed}
    train.update({k: v for k, v in flags.items() if v is not None})
    if getattr(args, "lora", False):
        train["use_lora"] = True
    option_flags = parse_overrides(getattr(args, "option", []))
    options = merge_dicts(sections.get("method") or {}, option_flags)
    return (from_dict(BackboneConfig, backbone, "backbone"),
            from_dict(TrainConfig, train, "train"), options)


def cmd_prepare(args: argparse.Namespace) -> int:
    from e2urec.data.protocol import prepare_dataset, write_prepared
    from e2urec.data.sources import find_raw
    from e2urec.fileio import check_output

    forget_users = _read_user_list(args.forget_users) if args.forget_users else None
    config = from_dict(PrepareConfig, {
        "dataset": args.dataset, "data_dir": args.data_dir, "window": args.window,
        "history": args.history, "forget_fraction": args.forget_fraction,
        "forget_users": forget_users, "shards": args.shards, "seed": args.seed,
        "holdout_fraction": args.holdout_fraction, "canaries": args.canaries,
        "min_holdout_users": args.min_holdout_users, "canary_answer": args.canary_answer,
        "allow_modified_data": args.allow_modified_data, "protocol": args.protocol,
        **{name: getattr(args, name) for name in (
            "users", "train_rows", "valid_rows", "test_rows", "min_group_users",
            "min_canary_users", "min_canary_rows")},
    }, "prepare")
    check_output(args.out, "manifest.json", args.overwrite)
    raw = find_raw(config)
    prepared = prepare_dataset(config, raw)
    out = write_prepared(prepared, args.out)
    counts = prepared.manifest["counts"]
    print(f"prepared {config.dataset} from {raw.folder} -> {out}")
    print("  " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"  forgotten users: {len(prepared.manifest['forget_user_ids'])} of "
          f"{prepared.manifest['train_users']}")
    return 0


def _read_user_list(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"forget list {file} does not exist")
    text = file.read_text().strip()
    if text.startswith("["):
        try:
            return [str(u) for u in json.loads(text)]
        except json.JSONDecodeError as err:
            raise ConfigError(f"{file}: not a JSON list of user ids ({err.msg})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def cmd_train(args: argparse.Namespace) -> int:
    from e2urec.backbones.registry import check_backbone_name
    from e2urec.checkpoints.folders import META_FILE
    from e2urec.data.samples import read_manifest
    from e2urec.fileio import check_output
    from e2urec.training.finetune import train_split
    from e2urec.training.loop import make_accelerator

    backbone, train, _ = run_configs(args)
    read_manifest(args.data)
    check_backbone_name(backbone.name)
    check_output(args.out, META_FILE, args.overwrite)
    record = train_split(args.data, args.split, backbone, train, args.out,
                         make_accelerator(cpu=args.cpu))
    history = record["history"]
    valid = history["best_valid_loss"]
    valid = f", best valid loss {valid:.4f}" if valid is not None else ""
    print(f"trained {backbone.name} on {args.split} ({record['samples']} samples, "
          f"{history['epochs_run']} epochs{valid}, {history['seconds']:.1f}s) -> {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from e2urec.checkpoints.folders import check_model_folder
    from e2urec.checkpoints.scorers import load_scorer
    from e2urec.data.samples import read_manifest
    from e2urec.evaluation.evaluate import evaluate, format_table
    from e2urec.evaluation.ranking import popularity
    from e2urec.fileio import check_output_file, write_json

    read_manifest(args.data)
    check_model_folder(args.model)
    if args.reference:
        check_model_folder(args.reference)
    check_output_file(args.out, _is_evaluation(Path(args.out)), args.overwrite)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    scorer = load_scorer(args.model)
    reference = load_scorer(args.reference) if args.reference else None
    results, _ = evaluate(scorer, args.data, reference, args.batch_size, device=device)
    if args.popularity and (baseline := popularity(args.data)) is not None:
        results["popularity"] = baseline
    write_json(Path(args.out), {**results, "e2urec": {
        "kind": EVALUATION_KIND, "model": str(Path(args.model).resolve()),
        "reference": str(Path(args.reference).resolve()) if args.reference else None,
        "data": str(Path(args.data).resolve())}})
    print(format_table(results))
    return 0


def _is_evaluation(path: Path) -> bool:
    """Whether ``path`` holds an earlier `e2urec evaluate` result (safe to replace)."""
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text())["e2urec"]["kind"] == EVALUATION_KIND
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return False


def cmd_unlearn(args: argparse.Namespace) -> int:
    from e2urec.backbones.registry import check_backbone_name
    from e2urec.methods import get_method, run_method

    backbone, train, options = run_configs(args)
    if not get_method(args.method).needs_original:
        check_backbone_name(backbone.name)
    # run_method checks method, options, data, Original and output before any work.
    record = run_method(args.method, data_dir=args.data, original=args.original,
                        backbone=backbone, train=train, options=options, out_dir=args.out,
                        cpu=args.cpu, overwrite=args.overwrite)
    print(f"{args.method}: unlearned in {record['unlearn_seconds']:.1f}s, "
          f"{record['trainable_params']:,} of {record['total_params']:,} parameters trained "
          f"-> {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from e2urec.bench.study import run_study

    table = run_study(args.config, args.out, stages_from=args.stages_from, wait=args.wait,
                      threads=args.threads)
    print(table)
    return 0


def cmd_sequential(args: argparse.Namespace) -> int:
    from e2urec.bench.sequential import run_sequential

    print(run_sequential(args.config, args.out, stages_from=args.stages_from,
                         threads=args.threads))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from e2urec.deploy.store import open_store

    if args.action == "init":
        return _deploy_init(args)
    with open_store(args.store) as store:
        return _deploy_action(args, store)


def _deploy_action(args: argparse.Namespace, store: Any) -> int:
    from e2urec.deploy.history import format_history, format_status
    from e2urec.deploy.store import status
    from e2urec.fileio import LockedError, folder_lock

    if args.action == "verify":
        from e2urec.deploy.ensembles import rebuild_and_compare

        with folder_lock(store.root, "request", wait=args.wait, log=_log):
            report = rebuild_and_compare(store)
        print(format_rebuild(report, store.ledger.current().id))
        return 0 if report["exact"] else 1
    if args.action == "status":
        from e2urec.deploy.store import purge_scratch

        try:  # scratch no request needs is purged here too, unless a request is running
            with folder_lock(store.root, "request"):
                purged = purge_scratch(store)
        except LockedError:
            purged = None
        report = {**status(store), "purged_now": purged}
        print(json.dumps(report, indent=2) if args.json else format_status(report, store.root))
        return 0 if report["consistent"] else 1
    if args.action == "abandon":
        from e2urec.deploy.requests import abandon

        with folder_lock(store.root, "request"):
            outcome = abandon(store, args.request_id, args.reason, log=_log)
        print(f"{outcome.request_id}: {outcome.status}: {outcome.message}")
        return 0
    requests = store.ledger.requests()
    print(json_text(requests) if args.json else format_history(requests))
    return 0


def _deploy_init(args: argparse.Namespace) -> int:
    from e2urec.deploy.history import format_auditor
    from e2urec.deploy.store import init_store, read_info

    ensemble_flags = [f"--{n}" for n in ("shards", "slices", "model", "epochs")
                      if getattr(args, n) is not None] + (["--option"] if args.option else [])
    if args.method and args.references:
        raise ConfigError("--references goes with --original: an ensemble store's deletions "
                          "are exact (deploy verify --rebuild proves them) and it keeps no "
                          "auditor")
    if args.original and ensemble_flags:
        raise ConfigError(f"{', '.join(ensemble_flags)} go with --method (a store that trains "
                          "its ensemble); --original serves a model as it is")
    backbone, train, options = run_configs(args)
    if args.original:
        store = init_store(args.original, args.data, args.store, backbone, train,
                           args.overwrite, 4 if args.references is None else args.references)
        served = args.original
    else:
        from e2urec.checkpoints.folders import read_meta
        from e2urec.deploy.ensembles import init_ensemble_store

        if args.slices is not None:
            options["slices"] = args.slices
        store = init_ensemble_store(args.method, options, args.data, args.store, backbone,
                                    train, args.overwrite, args.shards)
        members = read_meta(store.current_dir())["members"]
        served = (f"a {args.method} ensemble of {len(members)} shards, "
                  f"{store.serving['options'].get('slices', 1)} slice(s) each")
    with store:
        print(f"store {store.root}: serving version {store.ledger.current().id} ({served}), "
              f"data from {args.data}\nauditor: "
              f"{format_auditor(read_info(store.root).get('auditor'))}")
    return 0


def format_rebuild(report: dict[str, Any], version: str) -> str:
    """``deploy verify --rebuild``'s verdict in words."""
    threads = report["threads"]
    if report["exact"]:
        return (f"exact: version {version}'s {report['members']} shard models (and aggregator) "
                "equal, tensor for tensor, a rebuild from the store's data, which holds no "
                "forgotten user")
    lines = [f"not exact: {report['difference']}"]
    if threads["served"] is not None and threads["served"] != threads["rebuild"]:
        lines.append(f"the store trained with {threads['served']} torch thread(s), this rebuild "
                     f"with {threads['rebuild']}: sums in another order differ in the last "
                     f"bits; rerun with --threads {threads['served']} before concluding")
    return "\n".join(lines)


def json_text(data: Any) -> str:
    """Strict JSON: a measurement that could not be made (NaN) is written as null."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value
    return json.dumps(clean(data), indent=2, allow_nan=False)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_forget(args: argparse.Namespace) -> int:
    from e2urec.deploy.requests import forget
    from e2urec.deploy.store import check_request_id, open_store
    from e2urec.deploy.verify import Verification
    from e2urec.fileio import folder_lock

    if args.request_id is not None:
        check_request_id(args.request_id)  # before anything reads or writes the store
    _, _, options = run_configs(args)
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(Verification)
             if getattr(args, f.name, None) is not None}
    verification = from_dict(Verification, {**flags, "exact_retry": args.exact_retry},
                             "verification")
    with open_store(args.store) as store, folder_lock(store.root, "request", wait=args.wait,
                                                      log=_log):
        outcome = forget(store, args.users, args.method, options, args.request_id,
                         verification, log=_log, requested_by=args.requested_by)
    prefix = f"{outcome.request_id}: " if outcome.request_id else ""
    print(f"{prefix}{outcome.status}: {outcome.message}")
    return 1 if outcome.status == "failed" else 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from e2urec.deploy.recommend import recommend
    from e2urec.deploy.store import open_store

    with open_store(args.store) as store:
        ranked = recommend(store, args.user, args.top)
        version = store.ledger.current().id
    if args.json:
        print(json.dumps(ranked, indent=2))
        return 0
    print(f"top {len(ranked)} for user {args.user} (version {version}):")
    for row in ranked:
        print(f"{row['rank']:>3}. {row['p_yes']:.3f}  {row['title']}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from e2urec.checkpoints.folders import check_model_folder
    from e2urec.data.samples import read_manifest
    from e2urec.evaluation.lira import audit_model, format_audit
    from e2urec.fileio import check_output
    from e2urec.training.references import REFERENCES_FILE, check_count, train_references

    read_manifest(args.data)
    check_count(args.count)
    check_model_folder(args.model)
    references = Path(args.references or f"{Path(args.data).resolve()}-references")
    # training writes the folder whole: never over someone else's files
    check_output(references, REFERENCES_FILE, flag="--references")
    if not (references / REFERENCES_FILE).is_file():
        # the references' recipe: run_configs reads the backbone from `model`
        backbone, train, _ = run_configs(argparse.Namespace(**{**vars(args),
                                                              "model": args.backbone}))
        _log(f"[audit] training {args.count} reference models into {references}")
        record = train_references(args.data, backbone, train, references, args.count,
                                  cpu=args.cpu)
        _log(f"[audit] references trained in {record['seconds']:.0f}s")
    report = audit_model(args.model, args.data, references, args.alpha)
    print(json_text(report) if args.json else format_audit(report))
    return 0


COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "evaluate": cmd_evaluate,
            "unlearn": cmd_unlearn, "bench": cmd_bench, "deploy": cmd_deploy,
            "forget": cmd_forget, "recommend": cmd_recommend, "sequential": cmd_sequential,
            "audit": cmd_audit}


def main(argv: Sequence[str] | None = None) -> int:
    from e2urec.fileio import LockedError
    from e2urec.runtime import quiet_progress_bars, set_threads

    args = build_parser().parse_args(argv)
    quiet_progress_bars()
    try:
        if args.command not in ("bench", "sequential"):  # a study sets its own threads
            set_threads(args.threads)
        return COMMANDS[args.command](args)
    except (ConfigError, ValueError, FileNotFoundError, NotADirectoryError,
            PermissionError, LockedError, sqlite3.DatabaseError) as err:
        message = str(err).strip().splitlines()
        print(f"e2urec {args.command}: error: {message[0] if message else type(err).__name__}",
              file=sys.stderr)
        for line in message[1:]:
            print(f"  {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head` closed the pipe: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = err.filename or "the output folder"
        print(f"e2urec {args.command}: error: no space left on the device ({where}): every "
              "write is atomic, so what was being written is not there; free space and run "
              "the same command again", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
