"""Deletion requests against a store: record, unlearn, verify, switch, purge.

:func:`forget` is the whole life of one request under the store's lock:

1. checks (users known, not yet forgotten, no other request unfinished), then
   the request is recorded as ``pending`` before any work;
2. the request's data (forget: the users' training rows; retain: everyone
   else's) and the current version's metrics on it;
3. the method unlearns the current version; the result is merged into one
   model, the candidate, and verified (thresholds in :class:`Verification`);
4. pass: one ledger transaction makes the candidate current and records the
   users as forgotten (``applied``); then the purge deletes their rows from
   the store's data, every earlier version and the request's scratch
   (``done``). Fail: the candidate is deleted, ``current`` stays (``failed``).

A process killed anywhere leaves the request ``pending`` or ``applied``;
running the same request again finishes it (see :func:`resume`).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2urec.checkpoints.folders import load_model, save_model
from e2urec.checkpoints.scorers import ModelScorer
from e2urec.config import ConfigError, from_dict, option, to_dict
from e2urec.data.catalog import ITEMS_FILE, USERS_FILE
from e2urec.data.samples import (
    OPTIONAL_SPLITS,
    read_json_lines,
    read_manifest,
    read_split,
    write_jsonl,
)
from e2urec.deploy.ledger import Version, now
from e2urec.deploy.store import Store, copy_data, data_users, status, without_users
from e2urec.evaluation.evaluate import evaluate
from e2urec.fileio import atomic_dir, folder_sha256, write_json
from e2urec.methods.base import get_method, parse_options, run_method

# Methods whose result is one model (the store serves one model, not a shard ensemble).
SERVABLE = ("e2urec", "neggrad", "bad-teacher", "bad-teacher-labels", "retrain")


class RequestError(ValueError):
    """The request cannot be carried out as given; nothing was changed."""


@dataclass
class Verification:
    """What a candidate must show before it becomes current."""

    max_mia_auc: float = option(0.65, help="loss-MIA AUC of the users' training rows against "
                                "the audit users must be at most this")
    max_canary_lift: float = option(0.2, help="the trigger may raise the planted answer's "
                                    "rate on the users' canary prompts by at most this "
                                    "(success minus the rate without the trigger)")
    max_valid_auc_drop: float = option(0.02, help="valid AUC may fall at most this much "
                                       "below the current version's")
    max_samples: int = option(400, help="valid and audit rows scored (a seeded subset)")


@dataclass
class Outcome:
    request_id: str | None  # None when nothing was recorded
    status: str  # done, failed, nothing to do, already done, already failed
    message: str


def forget(store: Store, users: Sequence[str], method: str = "e2urec",
           options: dict[str, Any] | None = None, request_id: str | None = None,
           verification: Verification | None = None,
           log: Callable[[str], None] = print) -> Outcome:
    """Carry out one deletion request (the caller holds the store's lock)."""
    verification = verification or Verification()
    users = list(dict.fromkeys(str(u).strip() for u in users if str(u).strip()))
    if not users:
        raise RequestError("the request names no users")
    ledger = store.ledger
    if problems := status(store)["problems"]:
        raise RequestError(f"the store is not consistent: {problems[0]}; nothing was changed "
                           "(see e2urec deploy status)")
    if request_id is not None and (earlier := ledger.request(request_id)):
        return resume(store, earlier, users, log)
    check_method(method, options)
    if unfinished := ledger.unfinished():
        other = unfinished[0]
        raise RequestError(f"request {other['id']} is unfinished ({other['status']}); "
                           f"complete it first: e2urec forget --store {store.root} "
                           f"--request-id {other['id']} --users {' '.join(other['users'])}")
    forgotten = ledger.forgotten()
    unknown = sorted(set(users) - data_users(store.data_dir) - set(forgotten))
    if unknown:
        raise RequestError(f"unknown user id(s) {unknown[:10]}: not in the store's data")
    already = [u for u in users if u in forgotten]
    todo = [u for u in users if u not in forgotten]
    for user in already:
        log(f"[forget] user {user} was already forgotten by request {forgotten[user]}; "
            "not unlearned again")
    if not todo:
        return Outcome(request_id, "nothing to do",
                       "every user in the request was already forgotten")
    request_id = request_id or ledger.next_request_id()
    ledger.record_request(request_id, todo, method, options or {}, to_dict(verification))
    log(f"[forget] request {request_id}: {len(todo)} user(s) recorded as pending")
    return _carry_out(store, ledger.request(request_id), verification, log)


def check_method(method: str, options: dict[str, Any] | None) -> None:
    get_method(method)
    if method not in SERVABLE:
        raise ConfigError(f"method {method!r} keeps a shard ensemble; the store serves one "
                          f"model: use one of {', '.join(SERVABLE)}")
    parse_options(method, options)


def resume(store: Store, request: dict[str, Any], users: Sequence[str],
           log: Callable[[str], None]) -> Outcome:
    """The same request id again: a no-op if it ended, else finish it."""
    rid = request["id"]
    if set(users) != set(request["users"]):
        raise RequestError(f"request {rid} was for users {request['users']}, not {list(users)}; "
                           "use a new request id")
    if request["status"] == "done":
        return Outcome(rid, "already done", f"request {rid} was carried out on "
                       f"{request['finished']}; nothing to do")
    if request["status"] == "failed":
        return Outcome(rid, "already failed", f"request {rid} failed on {request['finished']}: "
                       f"{request['reason']}; send a new request id to try again")
    if request["status"] == "applied":
        log(f"[forget] request {rid}: applied before an interruption; finishing the purge")
        return _purge(store, request, log)
    log(f"[forget] request {rid}: pending after an interruption; starting it again")
    # The thresholds recorded with the request hold, whatever this call was given.
    recorded = from_dict(Verification, request["verification"] or {}, "verification")
    return _carry_out(store, request, recorded, log)


def _carry_out(store: Store, request: dict[str, Any], verification: Verification,
               log: Callable[[str], None]) -> Outcome:
    rid, users, ledger = request["id"], request["users"], store.ledger
    began = time.perf_counter()
    work = store.work_dir(rid)
    shutil.rmtree(work, ignore_errors=True)  # an interrupted attempt's scratch
    current = ledger.current()
    data = request_data(store.data_dir, users, work / "data")
    has_rows = bool(read_split(data, "forget"))
    before = measure(store.current_dir(), data, verification) if has_rows else {}
    if has_rows:
        log(f"[forget] request {rid}: unlearning {len(read_split(data, 'forget'))} training "
            f"rows with {request['method']}")
        record = run_method(request["method"], data, store.current_dir(), store.backbone,
                            store.train, request["options"], work / "unlearned", overwrite=True)
        candidate = save_model(load_model(work / "unlearned", merged=True), work / "candidate",
                               {"role": "deployed", "request": rid,
                                "method": request["method"]})
        after = measure(candidate, data, verification)
        if reason := verdict(before, after, verification):
            shutil.rmtree(work, ignore_errors=True)
            with ledger.transaction() as db:
                ledger.update_request(db, rid, status="failed", finished=now(), reason=reason,
                                      seconds=time.perf_counter() - began,
                                      version_before=current.id, metrics_before=before,
                                      metrics_after=after)
            return Outcome(rid, "failed", f"request {rid} failed verification: {reason}; "
                           f"version {current.id} stays current")
        new_id = f"v{len(ledger.versions()):04d}"
        target = store.version_dir(new_id)
        shutil.rmtree(target, ignore_errors=True)  # an earlier attempt's unrecorded copy
        candidate.rename(target)
        hashes = folder_sha256(target)
        unlearn_seconds = record["unlearn_seconds"]
    else:  # no training rows (e.g. a holdout user): no model trained on them; purge only
        new_id, after, hashes, unlearn_seconds = current.id, {}, current.model_sha256, 0.0
    with ledger.transaction() as db:
        if new_id != current.id:
            ledger.add_version(db, Version(new_id, current.id, rid, now(), hashes,
                                           sorted({*current.forgotten, *users}), "retired"))
        else:
            ledger.extend_forgotten(db, new_id, users)
        ledger.add_forgotten(db, users, rid)
        ledger.make_current(db, new_id)
        ledger.update_request(db, rid, status="applied", version_before=current.id,
                              version_after=new_id, metrics_before=before,
                              metrics_after=after, model_sha256=hashes,
                              seconds=time.perf_counter() - began,
                              unlearn_seconds=unlearn_seconds)
    log(f"[forget] request {rid}: version {new_id} is current; purging")
    return _purge(store, ledger.request(rid), log)


def _purge(store: Store, request: dict[str, Any], log: Callable[[str], None]) -> Outcome:
    """Delete the users' rows, every version trained on them, and the request's scratch."""
    ledger, rid = store.ledger, request["id"]
    began = time.perf_counter()
    dropped = copy_data(store.data_dir, store.data_dir, set(ledger.forgotten()))
    purged = [f"data: {n} {kind} row(s)" for kind, n in dropped.items()]
    current = ledger.current().id
    for version in ledger.versions():
        if version.state == "retired":
            shutil.rmtree(store.version_dir(version.id), ignore_errors=True)
            purged.append(f"version {version.id}")
    if (work := store.work_dir(rid)).exists():
        shutil.rmtree(work)
        purged.append(f"work/{rid} (request data, augmented model, teacher caches, "
                      "unlearned adapter)")
    data_hash = folder_sha256(store.data_dir)
    with ledger.transaction() as db:
        for version in ledger.versions():
            if version.state == "retired" and version.id != current:
                ledger.mark_purged(db, version.id)
        ledger.update_request(db, rid, status="done", finished=now(),
                              purged=(request["purged"] or []) + purged,
                              data_sha256=digest_of(data_hash),
                              seconds=(request["seconds"] or 0.0)
                              + time.perf_counter() - began)
    log(f"[forget] request {rid}: done; purged {len(purged)} item(s)")
    return Outcome(rid, "done", f"request {rid} done: version {current} is current")


def digest_of(hashes: dict[str, str]) -> str:
    """One SHA-256 over a folder's per-file hashes."""
    return hashlib.sha256("".join(f"{k} {v}\n" for k, v in hashes.items()).encode()).hexdigest()


def request_data(data_dir: Path, users: Sequence[str], out: Path) -> Path:
    """The request's prepared data: forget = the users' training rows, retain = the rest.

    Valid, test, probe and audit are the store's, without the users; canary
    keeps only the users' own canary prompts; the catalogue loses the users.
    """
    users = set(users)
    manifest = read_manifest(data_dir)
    train = read_split(data_dir, "train")
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "train.jsonl", train)
        write_jsonl(tmp / "forget.jsonl", [r for r in train if r["user_id"] in users])
        write_jsonl(tmp / "retain.jsonl", [r for r in train if r["user_id"] not in users])
        for split in ("valid", "test", *OPTIONAL_SPLITS):
            rows = read_split(data_dir, split)
            keep = [r for r in rows if (r["user_id"] in users) == (split == "canary")]
            if rows:
                write_jsonl(tmp / f"{split}.jsonl", keep)
        others = {u for u in manifest.get("forget_user_ids", []) if u not in users}
        request_manifest = without_users(manifest, others, {})
        request_manifest["forget_user_ids"] = sorted(users)
        if request_manifest.get("canaries"):
            canaries = request_manifest["canaries"]
            canaries["users"] = [u for u in canaries["users"] if u in users]
            if not canaries["users"]:
                request_manifest["canaries"] = None
        write_json(tmp / "manifest.json", request_manifest)
        if (data_dir / ITEMS_FILE).is_file():  # the catalogue, for the ranking metrics
            shutil.copy2(data_dir / ITEMS_FILE, tmp / ITEMS_FILE)
            write_jsonl(tmp / USERS_FILE, [u for u in read_json_lines(data_dir / USERS_FILE,
                                                                 ("user_id",))
                                           if u["user_id"] not in users])
    return out


def measure(model_dir: Path, data_dir: Path, verification: Verification) -> dict[str, Any]:
    """What verification reads: valid AUC, loss-MIA against audit users, canary success."""
    scorer = ModelScorer(load_model(model_dir))
    splits = ("valid", "forget")
    results, _ = evaluate(scorer, data_dir, splits=splits, max_samples=verification.max_samples,
                          ranking_positives=0)
    out = {"valid_auc": results["valid"]["auc"], "forget_auc": results["forget"]["auc"]}
    if "mia_auc" in results:
        out["mia_auc"] = results["mia_auc"]
    if "canary" in results:
        out["canary_success"] = results["canary"]["success"]
        out["canary_lift"] = results["canary"]["success"] - results["canary"]["base_rate"]
    return out


def verdict(before: dict[str, Any], after: dict[str, Any], verification: Verification
            ) -> str | None:
    """Why the candidate fails verification, or None when it passes."""
    reasons = []
    if after.get("mia_auc", 0.0) > verification.max_mia_auc:
        reasons.append(f"MIA AUC {after['mia_auc']:.3f} > {verification.max_mia_auc}")
    if after.get("canary_lift", 0.0) > verification.max_canary_lift:
        reasons.append(f"the canary trigger still lifts the planted answer by "
                       f"{after['canary_lift']:.3f} > {verification.max_canary_lift}")
    drop = before["valid_auc"] - after["valid_auc"]
    if drop > verification.max_valid_auc_drop:
        reasons.append(f"valid AUC fell {drop:.3f} > {verification.max_valid_auc_drop}")
    return "; ".join(reasons) or None
