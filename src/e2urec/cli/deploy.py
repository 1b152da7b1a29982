"""The deployed recommender's commands: ``deploy``, ``forget``, ``recommend``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from e2urec.cli.layers import run_configs
from e2urec.cli.output import json_text, log
from e2urec.config import (
    ConfigError,
    from_dict,
)


def cmd_deploy(args: argparse.Namespace) -> int:
    from e2urec.deploy.store import open_store

    if args.action == "init":
        return _deploy_init(args)
    with open_store(args.store) as store:
        return _deploy_action(args, store)


def _deploy_action(args: argparse.Namespace, store: Any) -> int:
    from e2urec.deploy.history import format_history, format_rebuild, format_status
    from e2urec.deploy.status import status
    from e2urec.fileio import LockedError, folder_lock

    if args.action == "verify":
        from e2urec.deploy.ensembles import rebuild_and_compare

        with folder_lock(store.root, "request", wait=args.wait, log=log):
            report = rebuild_and_compare(store)
        print(format_rebuild(report, store.ledger.current().id))
        return 0 if report["exact"] else 1
    if args.action == "status":
        from e2urec.deploy.status import purge_scratch

        try:  # scratch no request needs is purged here too, unless a request is running
            with folder_lock(store.root, "request"):
                purged = purge_scratch(store)
        except LockedError:
            purged = None
        report = {**status(store), "purged_now": purged}
        print(json.dumps(report, indent=2) if args.json else format_status(report, store.root))
        return 0 if report["consistent"] else 1
    if args.action == "flush":
        from e2urec.deploy.queue import flush

        with folder_lock(store.root, "request", wait=args.wait, log=log):
            outcome = flush(store, log=log, exact=args.exact)
        print(f"{outcome.request_id or 'queue'}: {outcome.status}: {outcome.message}")
        return 1 if outcome.status == "failed" else 0
    if args.action == "abandon":
        from e2urec.deploy.requests import abandon

        with folder_lock(store.root, "request"):
            outcome = abandon(store, args.request_id, args.reason, log=log)
        print(f"{outcome.request_id}: {outcome.status}: {outcome.message}")
        return 0
    requests = store.ledger.requests()
    print(json_text(requests) if args.json else format_history(requests))
    return 0


def _deploy_init(args: argparse.Namespace) -> int:
    from e2urec.deploy.history import format_auditor
    from e2urec.deploy.store import init_store, read_info
    from e2urec.training.references import MIN_REFERENCES

    ensemble_flags = [f"--{n}" for n in ("shards", "slices", "model", "epochs")
                      if getattr(args, n) is not None] + (["--option"] if args.option else [])
    if args.method and args.teacher:
        raise ConfigError("--teacher goes with --original: an ensemble store's deletions are "
                          "exact and take no teacher")
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
                           args.overwrite,
                           MIN_REFERENCES if args.references is None else args.references,
                           teacher=args.teacher)
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
                                                      log=log):
        outcome = forget(store, args.users, args.method, options, args.request_id,
                         verification, log=log, requested_by=args.requested_by,
                         queue_days=args.queue_days)
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
