"""One request's steps under the store's lock: measure, unlearn, verify, apply, purge.

A failed step records the request as ``failed`` with its reason; an applied one
makes the candidate current and the users forgotten in one transaction, then
purges (requests.py says when each runs).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
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
from e2urec.data.samples import (
    read_split,
)
from e2urec.deploy.auditor import power_for, request_levels
from e2urec.deploy.auditor import refresh as refresh_references
from e2urec.deploy.ensembles import in_store, self_contained
from e2urec.deploy.ledger import Version, now
from e2urec.deploy.measurements import measure_request, recorded, verification_rows
from e2urec.deploy.redaction import copy_data, request_data
from e2urec.deploy.status import audit_users, purge_scratch
from e2urec.deploy.store import Store, delete_inside, read_info
from e2urec.deploy.teacher import refresh as refresh_teacher
from e2urec.deploy.teacher import request_options as teacher_options
from e2urec.deploy.verify import Verification, cannot_show, power, verdict
from e2urec.fileio import folder_sha256, write_json
from e2urec.methods.registry import get_method
from e2urec.methods.run import run_method


class RequestError(ValueError):
    """The request cannot be carried out as given; nothing was changed."""


@dataclass
class Outcome:
    request_id: str | None  # None when nothing was recorded
    status: str  # done, failed, nothing to do, already done, already failed, abandoned
    message: str


def carry_out(store: Store, request: dict[str, Any], verification: Verification,
              log: Callable[[str], None], cpu: bool = False) -> Outcome:
    rid, users, ledger = request["id"], request["users"], store.ledger
    began = time.perf_counter()
    cleaned = _remove_leftovers(store, request)
    work = store.work_dir(rid)
    delete_inside(store.root, work)  # an interrupted attempt's scratch
    current = ledger.current()
    data, rows, levels, before = measure_before(store, users, verification, work)
    if not rows:
        # no training rows (e.g. a holdout user): no model trained on them; purge only
        log(f"[forget] request {rid}: no model trained on these users' rows; purging their "
            "data only")
        return _apply(store, request, current.id, {}, {}, current.model_sha256, 0.0, began,
                      cleaned, log)
    exact = get_method(request["method"]).exact
    # An approximate deletion that could not pass is not attempted: it fails, or a
    # request that may wait is queued.
    if not exact and (reason := unseen(store, before, verification)):
        if request["due"] and request["due"] > now():
            return _queue(store, rid, reason, current.id, before, began, cleaned, work)
        return _fail(store, rid, reason, current.id, before, {}, began, cleaned, work)
    log(f"[forget] request {rid}: unlearning {rows} training rows with {request['method']}")
    try:
        record, candidate = _unlearn(store, request, data, work, cpu)
        after = measure_request(candidate, data, verification, levels)
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


def measure_before(store: Store, users: list[str], verification: Verification, work: Path
                   ) -> tuple[Path, int, Any, dict[str, Any]]:
    """The request's data (in ``work``), its forget rows, the auditor's levels and the
    current version's measures on it (none where the users have no training row)."""
    data = request_data(store.data_dir, users, work / "data")
    rows = len(read_split(data, "forget"))
    if not rows:
        return data, 0, None, {}
    levels = request_levels(store, *verification_rows(data, verification))
    return data, rows, levels, measure_request(store.current_dir(), data, verification,
                                               levels)


def unseen(store: Store, before: dict[str, Any], verification: Verification) -> str | None:
    """Why no approximate deletion of the measured users could be shown (None: one could);
    ``before`` gains what the check saw (its ``power``)."""
    if verification.power:
        before["power"] = power(before, verification)
    stated = power_for((read_info(store.root).get("auditor") or {}).get("power"),
                       len(before["users"]))
    return cannot_show(before, verification, stated)


def _queue(store: Store, rid: str, reason: str, version: str, before: dict[str, Any],
           began: float, cleaned: list[str], work: Path) -> Outcome:
    """Record a request that waits for others to be forgotten with (nothing changed)."""
    delete_inside(store.root, work)
    request = store.ledger.request(rid)
    with store.ledger.transaction() as db:
        store.ledger.update_request(db, rid, status="queued", reason=f"queued: {reason}",
                                    seconds=time.perf_counter() - began,
                                    version_before=version, metrics_before=recorded(before),
                                    purged=cleaned)
    return Outcome(rid, "queued", f"request {rid} is queued until {request['due']}: the check "
                   "cannot see these users alone; they are forgotten with later queued "
                   "requests once it can see them together, or on the exact path by then")


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
    return purge(store, ledger.request(rid), log)


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
    options = teacher_options(store, request["method"], request["options"])
    record = run_method(request["method"], data, store.current_dir(), store.backbone,
                        store.train, options, work / "unlearned", cpu=cpu, overwrite=True)
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


def purge(store: Store, request: dict[str, Any], log: Callable[[str], None]) -> Outcome:
    """Delete the users' rows, every version trained on them, and the request's scratch."""
    ledger, rid = store.ledger, request["id"]
    began = time.perf_counter()
    purged = _remove_leftovers(store, request)
    dropped = copy_data(store.data_dir, store.data_dir, set(ledger.forgotten()))
    purged += [f"data: {n} {kind} row(s)" for kind, n in dropped.items()]
    purged += refresh_references(store, log)  # from the data that holds none of them
    purged += refresh_teacher(store, log)  # so that no later request's teacher holds them
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
