"""Deletion requests against a store: record, unlearn, verify, switch, purge.

:func:`forget` is the whole life of one request under the store's lock:

1. checks (users known, not yet forgotten, no other request unfinished), then
   the request is recorded as ``pending`` before any work;
2. the request's data (forget: the users' training rows; retain: everyone
   else's) and the current version's metrics on it; an approximate method is
   not run where they show no power (the check cannot tell the users from
   never-trained users): the request fails, and is retried on the exact path;
3. the method unlearns the current version; the result is merged into one
   model, the candidate, and verified (thresholds in :class:`Verification`);
4. pass: one ledger transaction makes the candidate current and records the
   users as forgotten (``applied``); then the purge deletes their rows from
   the store's data, every earlier version and the request's scratch, and
   trains the auditor's references that held them again without them
   (``done``). Fail: the candidate is deleted, ``current`` stays (``failed``).

A process killed anywhere leaves the request ``pending`` or ``applied``;
running the same request again finishes it (see :func:`resume`).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2urec.checkpoints.folders import (
    META_FILE,
    load_model,
    read_meta,
    repoint_adapters,
    save_model,
)
from e2urec.config import ConfigError, to_dict
from e2urec.data.catalog import ITEMS_FILE, USERS_FILE, VOCABULARY_FILE
from e2urec.data.samples import (
    OPTIONAL_SPLITS,
    read_json_lines,
    read_manifest,
    read_split,
    write_jsonl,
)
from e2urec.deploy.auditor import power_for, request_levels
from e2urec.deploy.auditor import refresh as refresh_references
from e2urec.deploy.ensembles import in_store, self_contained
from e2urec.deploy.ledger import Version, now
from e2urec.deploy.store import (
    Store,
    audit_users,
    check_request_id,
    copy_data,
    data_users,
    delete_inside,
    purge_scratch,
    read_info,
    status,
    without_users,
)
from e2urec.deploy.verify import (
    Verification,
    measure,
    no_power,
    power,
    recorded,
    verdict,
    verification_rows,
)
from e2urec.fileio import atomic_dir, folder_sha256, write_json
from e2urec.methods.base import REGISTRY, get_method, parse_options, run_method

__all__ = ["Outcome", "RequestError", "Verification", "abandon", "forget", "request_data"]


class RequestError(ValueError):
    """The request cannot be carried out as given; nothing was changed."""


@dataclass
class Outcome:
    request_id: str | None  # None when nothing was recorded
    status: str  # done, failed, nothing to do, already done, already failed, abandoned
    message: str


def forget(store: Store, users: Sequence[str], method: str | None = None,
           options: dict[str, Any] | None = None, request_id: str | None = None,
           verification: Verification | None = None,
           log: Callable[[str], None] = print, requested_by: str | None = None,
           cpu: bool = False) -> Outcome:
    """Carry out one deletion request (the caller holds the store's lock).

    ``method`` defaults to the store's own path: retraining its shards on an ensemble
    store (exact), E2URec on a store that serves one model. With
    ``verification.exact_retry``, a request whose approximate method fails (verification,
    power, or an error of the method) is carried out again, as a new request in the
    ledger, by :data:`EXACT_METHOD` (the users are still forgotten).
    ``cpu``: train on the CPU even with a GPU.
    """
    if request_id is not None:
        check_request_id(request_id)
    method = method or default_method(store)
    verification = verification or Verification()
    users = list(dict.fromkeys(str(u).strip() for u in users if str(u).strip()))
    if not users:
        raise RequestError("the request names no users")
    ledger = store.ledger
    if problems := status(store)["problems"]:
        raise RequestError(f"the store is not consistent: {problems[0]}; nothing was changed "
                           "(see e2urec deploy status)")
    if request_id is not None and (earlier := ledger.request(request_id)):
        return resume(store, earlier, users, log, cpu)
    check_method(store, method, options)
    if store.serves_ensemble:  # the ensemble's own options, recorded with the request
        options = store.serving["options"]
    if unfinished := ledger.unfinished():
        other = unfinished[0]
        raise RequestError(f"request {other['id']} is unfinished ({other['status']}); "
                           f"complete it first: e2urec forget --store {store.root} "
                           f"--request-id {other['id']} --users {' '.join(other['users'])} "
                           f"(or give it up: e2urec deploy abandon --store {store.root} "
                           f"--request-id {other['id']})")
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
    ledger.record_request(request_id, todo, method, options or {}, to_dict(verification),
                          requested_by)
    log(f"[forget] request {request_id}: {len(todo)} user(s) recorded as pending")
    if overridden := verification.overridden():
        log(f"[forget] request {request_id}: verification thresholds overridden: {overridden}")
    return _attempt(store, ledger.request(request_id), verification, log, cpu)


def _attempt(store: Store, request: dict[str, Any], verification: Verification,
             log: Callable[[str], None], cpu: bool) -> Outcome:
    """Carry out a recorded request and, where its approximate method fails, retry it on
    the exact path: the same path for a first run and for a rerun after a kill."""
    outcome = _carry_out(store, request, verification, log, cpu)
    if (outcome.status == "failed" and verification.exact_retry
            and not get_method(request["method"]).exact):
        return _retry_exact(store, outcome, request["users"], verification, log,
                            request["requested_by"], cpu)
    return outcome


# How a failed request's reason names its retry (see _retry_exact).
RETRIED = re.compile(r"retried on the exact path \(\w+\) as request (\S+)$")
# A single-model store's exact path: a model trained again on the store's data without
# the users, with the store's own recipe (an ensemble store's exact path is its method).
EXACT_METHOD = "retrain"


def _retry_exact(store: Store, failed: Outcome, users: list[str], verification: Verification,
                 log: Callable[[str], None], requested_by: str | None, cpu: bool) -> Outcome:
    """The failed request's users again, as a new request carried out by Retrain; the
    failed one's reason names it, so the ledger keeps both attempts and their link."""
    ledger, rid = store.ledger, failed.request_id
    retry = ledger.next_request_id()
    ledger.record_request(retry, users, EXACT_METHOD, {}, to_dict(verification), requested_by)
    with ledger.transaction() as db:
        reason = ledger.request(rid)["reason"]
        ledger.update_request(db, rid, reason=f"{reason}; retried on the exact path "
                                              f"({EXACT_METHOD}) as request {retry}")
    log(f"[forget] request {rid} failed verification; retrying on the exact path "
        f"({EXACT_METHOD}) as request {retry}")
    retried = _carry_out(store, ledger.request(retry), verification, log, cpu)
    return Outcome(retry, retried.status, f"{failed.message}; retried on the exact path as "
                   f"request {retry}: {retried.message}")


def abandon(store: Store, request_id: str, reason: str,
            log: Callable[[str], None] = print) -> Outcome:
    """Give up a pending request: recorded as ``abandoned`` with ``reason``, never deleted.

    Its scratch is deleted; nothing else changes (a pending request changed nothing).
    An ``applied`` request cannot be abandoned: its version is current and its
    users are forgotten, so only finishing the purge is right.
    """
    check_request_id(request_id)
    request = store.ledger.request(request_id)
    if request is None:
        raise RequestError(f"no request {request_id} in the ledger")
    if request["status"] != "pending":
        hint = (f"; finish it: e2urec forget --store {store.root} --request-id {request_id} "
                f"--users {' '.join(request['users'])}" if request["status"] == "applied"
                else "")
        raise RequestError(f"request {request_id} is {request['status']}, not pending; only a "
                           f"pending request can be abandoned{hint}")
    removed = delete_inside(store.root, store.work_dir(request_id))
    with store.ledger.transaction() as db:
        store.ledger.update_request(db, request_id, status="abandoned", finished=now(),
                                    reason=f"abandoned: {reason}",
                                    purged=[f"work/{request_id}"] if removed else [])
    log(f"[forget] request {request_id}: abandoned")
    return Outcome(request_id, "abandoned", f"request {request_id} abandoned ({reason}); its "
                   f"users are not forgotten; version {store.ledger.current().id} stays current")


def default_method(store: Store) -> str:
    """What a request runs when it names no method: the store's exact path if it has one."""
    return store.serving["method"] if store.serves_ensemble else "e2urec"


def check_method(store: Store, method: str, options: dict[str, Any] | None) -> None:
    if store.serves_ensemble:
        if method != store.serving["method"]:
            raise ConfigError(f"{store.root} serves a {store.serving['method']} ensemble: a "
                              f"request retrains its shards (--method "
                              f"{store.serving['method']}, the default), not {method!r}")
        if options:
            raise ConfigError("an ensemble store's request takes no options: it retrains "
                              "with the settings the store was made with")
        return
    if not get_method(method).serves_one_model:
        raise ConfigError(f"method {method!r} keeps a shard ensemble; this store serves one "
                          f"model: use one of {', '.join(servable_methods())} (or make an "
                          f"ensemble store: e2urec deploy init --method {method})")
    parse_options(method, options)


def servable_methods() -> list[str]:
    """The methods whose result is one model, the kind a single-model store serves."""
    return sorted(name for name, cls in REGISTRY.items() if cls.serves_one_model)


def resume(store: Store, request: dict[str, Any], users: Sequence[str],
           log: Callable[[str], None], cpu: bool = False) -> Outcome:
    """The same request id again: a no-op if it ended, else finish it."""
    rid = request["id"]
    if set(users) != set(request["users"]):
        raise RequestError(f"request {rid} was for users {request['users']}, not {list(users)}; "
                           "use a new request id")
    if request["status"] == "done":
        return Outcome(rid, "already done", f"request {rid} was carried out on "
                       f"{request['finished']}; nothing to do")
    if request["status"] == "failed":
        retry = RETRIED.search(request["reason"] or "")
        if retry and (again := store.ledger.request(retry.group(1))) and \
                again["status"] in ("pending", "applied"):
            log(f"[forget] request {rid} failed and was retried as request {again['id']}, "
                "which is unfinished; finishing it")
            return resume(store, again, again["users"], log, cpu)
        return Outcome(rid, "already failed", f"request {rid} failed on {request['finished']}: "
                       f"{request['reason']}; send a new request id to try again")
    if request["status"] == "abandoned":
        return Outcome(rid, "already abandoned", f"request {rid} was abandoned on "
                       f"{request['finished']} ({request['reason']}); its users are not "
                       "forgotten: send a new request id to forget them")
    if request["status"] == "applied":
        log(f"[forget] request {rid}: applied before an interruption; finishing the purge")
        return _purge(store, request, log)
    log(f"[forget] request {rid}: pending after an interruption; starting it again")
    # The thresholds recorded with the request hold, whatever this call was given.
    return _attempt(store, request, Verification.from_request(request), log, cpu)


def _carry_out(store: Store, request: dict[str, Any], verification: Verification,
               log: Callable[[str], None], cpu: bool = False) -> Outcome:
    rid, users, ledger = request["id"], request["users"], store.ledger
    began = time.perf_counter()
    cleaned = _remove_leftovers(store, request)
    work = store.work_dir(rid)
    delete_inside(store.root, work)  # an interrupted attempt's scratch
    current = ledger.current()
    data = request_data(store.data_dir, users, work / "data")
    if not read_split(data, "forget"):
        # no training rows (e.g. a holdout user): no model trained on them; purge only
        log(f"[forget] request {rid}: no model trained on these users' rows; purging their "
            "data only")
        return _apply(store, request, current.id, {}, {}, current.model_sha256, 0.0, began,
                      cleaned, log)
    levels = request_levels(store, *verification_rows(data, verification))
    before = measure(store.current_dir(), data, verification, levels)
    exact = get_method(request["method"]).exact
    if verification.power and not exact:
        before["power"] = power(before, verification)
        stated = power_for((read_info(store.root).get("auditor") or {}).get("power"),
                           len(users))
        if reason := no_power(before, verification, stated):  # nothing to unlearn for
            return _fail(store, rid, reason, current.id, before, {}, began, cleaned, work)
    log(f"[forget] request {rid}: unlearning {len(read_split(data, 'forget'))} training rows "
        f"with {request['method']}")
    try:
        record, candidate = _unlearn(store, request, data, work, cpu)
        after = measure(candidate, data, verification, levels)
    except Exception as err:  # noqa: BLE001 - a method's own error, recorded
        delete_inside(store.root, work)  # the users' rows go; the request stays
        if exact:
            raise RequestError(
                f"request {rid} stopped: {type(err).__name__}: {err}; it stays pending "
                f"and work/{rid} was deleted. Rerun it: e2urec forget --store "
                f"{store.root} --request-id {rid} --users {' '.join(users)} (or give it "
                f"up: e2urec deploy abandon --store {store.root} --request-id "
                f"{rid})") from err
        return _fail(store, rid, f"the method stopped: {type(err).__name__}: {err}",
                     current.id, before, {}, began, cleaned, work)
    if reason := (no_step(candidate, store.current_dir(), current.id)
                  or verdict(before, after, verification, exact)):
        return _fail(store, rid, reason, current.id, before, after, began, cleaned, work)
    new_id = f"v{len(ledger.versions()):04d}"
    target = store.version_dir(new_id)
    delete_inside(store.root, target)  # an earlier attempt's unrecorded copy
    candidate.rename(target)
    # LoRA members name the store's base by a path from where they now lie, so the
    # store can be moved or copied whole.
    repoint_adapters(target, store.backbone.name, store.backbone.name)
    return _apply(store, request, new_id, before, after, folder_sha256(target),
                  record["unlearn_seconds"], began, cleaned, log)


def _fail(store: Store, rid: str, reason: str, version: str, before: dict[str, Any],
          after: dict[str, Any], began: float, cleaned: list[str], work: Path) -> Outcome:
    """Record a failed request; its scratch goes and the current version stays."""
    delete_inside(store.root, work)
    with store.ledger.transaction() as db:
        store.ledger.update_request(db, rid, status="failed", finished=now(), reason=reason,
                                    seconds=time.perf_counter() - began,
                                    version_before=version, metrics_before=recorded(before),
                                    metrics_after=recorded(after), purged=cleaned)
    return Outcome(rid, "failed", f"request {rid} failed verification: {reason}; "
                   f"version {version} stays current")


def _apply(store: Store, request: dict[str, Any], new_id: str, before: dict[str, Any],
           after: dict[str, Any], hashes: dict[str, str], unlearn_seconds: float,
           began: float, cleaned: list[str], log: Callable[[str], None]) -> Outcome:
    """One transaction: ``new_id`` current, the users forgotten (``applied``); then purge."""
    ledger, rid, users = store.ledger, request["id"], request["users"]
    current = ledger.current()
    with ledger.transaction() as db:
        if new_id != current.id:
            ledger.add_version(db, Version(new_id, current.id, rid, now(), hashes,
                                           sorted({*current.forgotten, *users}), "retired"))
        else:
            ledger.extend_forgotten(db, new_id, users)
        ledger.add_forgotten(db, users, rid)
        ledger.make_current(db, new_id)
        ledger.update_request(db, rid, status="applied", version_before=current.id,
                              version_after=new_id, metrics_before=recorded(before),
                              metrics_after=recorded(after), model_sha256=hashes,
                              seconds=time.perf_counter() - began,
                              unlearn_seconds=unlearn_seconds, purged=cleaned)
    log(f"[forget] request {rid}: version {new_id} is current; purging")
    return _purge(store, ledger.request(rid), log)


def _unlearn(store: Store, request: dict[str, Any], data: Path, work: Path,
             cpu: bool = False) -> tuple[dict[str, Any], Path]:
    """Run the request's method on the current version; the candidate version's folder."""
    meta = {"role": "deployed", "request": request["id"], "method": request["method"]}
    if store.serves_ensemble:
        # The exact path: the shards that held the users, retrained from their slice
        # checkpoints; every member is then copied in, so the version stands alone.
        options = {**in_store(request["options"], store.backbone, store.train),
                   "initial": str(store.current_dir().resolve())}
        record = run_method(request["method"], data, None, store.backbone, store.train,
                            options, work / "unlearned", cpu=cpu, overwrite=True)
        candidate = self_contained(work / "unlearned", work / "candidate")
        write_json(candidate / META_FILE, {**read_meta(candidate), **meta})
        return record, candidate
    record = run_method(request["method"], data, store.current_dir(), store.backbone,
                        store.train, request["options"], work / "unlearned", cpu=cpu,
                        overwrite=True)
    return record, save_model(load_model(work / "unlearned", merged=True), work / "candidate",
                              meta)


def no_step(candidate: Path, current: Path, current_id: str) -> str | None:
    """Why a candidate is no deletion: its weights are the version's that held the users."""
    weights = {k: v for k, v in folder_sha256(candidate).items() if k.endswith(".safetensors")}
    held = {k: v for k, v in folder_sha256(current).items() if k.endswith(".safetensors")}
    if weights == held:
        return (f"the method took no step: the candidate's weights are version {current_id}'s, "
                "which holds the users (no gap at the start, or its stop rule restored the "
                "start; the request's unlearn_record.json says which)")
    return None


def _remove_leftovers(store: Store, request: dict[str, Any]) -> list[str]:
    """Delete what interrupted writes, rebuilds and requests left (they may hold forgotten
    rows or models trained on them; the request's own scratch is an unfinished request's);
    what went."""
    return (request["purged"] or []) + purge_scratch(store)


def _purge(store: Store, request: dict[str, Any], log: Callable[[str], None]) -> Outcome:
    """Delete the users' rows, every version trained on them, and the request's scratch."""
    ledger, rid = store.ledger, request["id"]
    began = time.perf_counter()
    purged = _remove_leftovers(store, request)
    dropped = copy_data(store.data_dir, store.data_dir, set(ledger.forgotten()))
    purged += [f"data: {n} {kind} row(s)" for kind, n in dropped.items()]
    purged += refresh_references(store, log)  # from the data that holds none of them
    current = ledger.current().id
    for version in ledger.versions():
        if version.state == "retired" and delete_inside(store.root,
                                                        store.version_dir(version.id)):
            purged.append(f"version {version.id}")
    if delete_inside(store.root, store.work_dir(rid)):
        purged.append(f"work/{rid} (request data, augmented model, teacher caches, "
                      "unlearned adapter)")
    outside = outside_holders(store)
    data_hash = folder_sha256(store.data_dir)
    with ledger.transaction() as db:
        for version in ledger.versions():
            if version.state == "retired" and version.id != current:
                ledger.mark_purged(db, version.id)
        ledger.update_request(db, rid, status="done", finished=now(), purged=purged,
                              outside=outside, data_sha256=digest_of(data_hash),
                              seconds=(request["seconds"] or 0.0)
                              + time.perf_counter() - began)
    log(f"[forget] request {rid}: done; purged {len(purged)} item(s)")
    left, needed = len(audit_users(store.data_dir)), Verification.from_request(request)
    if left < 2 * needed.min_audit_users:
        log(f"[forget] {left} never-trained (audit) user(s) left to verify against; under "
            f"{needed.min_audit_users}, an approximate request cannot be verified and "
            "takes the exact path")
    for place in outside:
        log(f"[forget] outside the store, not deleted by it: {place}")
    return Outcome(rid, "done", f"request {rid} done: version {current} is current"
                   + (f"; {len(outside)} place(s) outside the store still hold the users "
                      "(see the log or deploy history --json)" if outside else ""))


def outside_holders(store: Store) -> list[str]:
    """What lies outside the store and held the users when it was made: the store cannot
    delete it (not its own), so it names it."""
    info = read_info(store.root)
    sources = info.get("sources") or [{"original": info.get("original"),
                                       "data": info.get("data")}]
    places = []
    for source in sources:
        for key, what in (("original", "the Original given to deploy init"),
                          ("data", "the data folder given to deploy init")):
            if source.get(key) and Path(source[key]).exists():
                places.append(f"{source[key]} ({what})")
    return places


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
            canaries["users"] = {u: v for u, v in canaries["users"].items() if u in users}
            if not canaries["users"]:
                request_manifest["canaries"] = None
        write_json(tmp / "manifest.json", request_manifest)
        if (data_dir / VOCABULARY_FILE).is_file():
            shutil.copy2(data_dir / VOCABULARY_FILE, tmp / VOCABULARY_FILE)
        if (data_dir / "shards.json").is_file():  # where the users' rows sit (exact path)
            shutil.copy2(data_dir / "shards.json", tmp / "shards.json")
        if (data_dir / ITEMS_FILE).is_file():  # the catalogue, for the ranking metrics
            shutil.copy2(data_dir / ITEMS_FILE, tmp / ITEMS_FILE)
            write_jsonl(tmp / USERS_FILE, [u for u in read_json_lines(data_dir / USERS_FILE,
                                                                 ("user_id",))
                                           if u["user_id"] not in users])
    return out


