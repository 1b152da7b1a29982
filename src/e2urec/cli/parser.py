"""The ``e2urec`` command line: every command's arguments."""

from __future__ import annotations

import argparse
import dataclasses

from e2urec.config import (
    PrepareConfig,
    help_of,
)


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
    audit.add_argument("--holding", type=int, help="references that train on each user "
                       "(default: half of --count; fewer cost less, e.g. 1 of 4: each "
                       "reference trains on a quarter of the users)")
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
    init.add_argument("--teacher", action="store_true",
                      help="with --original: train a model per user shard of the data (its "
                      "shards.json), the clean teacher of E2URec requests with "
                      "forget_teacher=shards; each request's purge trains again the members "
                      "that held its users")
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
    flush = actions.add_parser("flush", help="forget the queued requests together: where "
                               "the check can see their users together, or on the exact "
                               "path where one is due (run it daily)")
    flush.add_argument("--store", required=True)
    flush.add_argument("--exact", action="store_true",
                       help="forget every queued user now on the exact path (retrain)")
    flush.add_argument("--wait", action="store_true",
                       help="wait for a request running on the store")
    abandon = actions.add_parser("abandon", help="give up a pending or queued request "
                                 "(recorded, never deleted; its users are not forgotten)")
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
    forget.add_argument("--queue-days", type=float, metavar="DAYS",
                        help="where the check cannot tell these users from never-trained "
                        "users alone, queue the request for at most DAYS (up to 30): it is "
                        "forgotten with later queued requests once the check can see them "
                        "together, or on the exact path when due (e2urec deploy flush, run "
                        "daily); default: the exact path at once")
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
