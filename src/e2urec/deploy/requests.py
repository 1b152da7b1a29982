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

A request that may wait (``queue_days``) and that the check cannot see alone is
``queued`` instead of failing: :func:`flush` forgets the queued requests
together once the check can see their users together, or on the exact path when
one is due (``e2urec deploy flush``, run daily; every queued request also tries
it). A queued request blocks no other; one that names a queued user forgets
them at once, and the queued request ends ``done`` when all its users are.

A process killed anywhere leaves the request ``pending`` or ``applied``;
running the same request again finishes it (see :func:`resume`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from e2urec.config import ConfigError, to_dict
from e2urec.deploy.attempt import RETRIED, attempt
from e2urec.deploy.ledger import now
from e2urec.deploy.queue import close_queued, flush, own_outcome
from e2urec.deploy.redaction import data_users, request_data
from e2urec.deploy.status import status
from e2urec.deploy.steps import Outcome, RequestError, purge
from e2urec.deploy.store import Store, check_request_id, delete_inside
from e2urec.deploy.teacher import request_options as teacher_options
from e2urec.deploy.verify import Verification
from e2urec.methods.registry import REGISTRY, get_method, parse_options

__all__ = ["Outcome", "RequestError", "Verification", "abandon", "flush", "forget",
           "request_data"]


def forget(store: Store, users: Sequence[str], method: str | None = None,
           options: dict[str, Any] | None = None, request_id: str | None = None,
           verification: Verification | None = None,
           log: Callable[[str], None] = print, requested_by: str | None = None,
           cpu: bool = False, queue_days: float | None = None) -> Outcome:
    """Carry out one deletion request (the caller holds the store's lock).

    ``method`` defaults to the store's own path: retraining its shards on an ensemble
    store (exact), E2URec on a store that serves one model. With
    ``verification.exact_retry``, a request whose approximate method fails (verification,
    power, or an error of the method) is carried out again, as a new request in the
    ledger, by :data:`EXACT_METHOD` (the users are still forgotten).
    ``cpu``: train on the CPU even with a GPU. ``queue_days``: where the check cannot see
    the users alone, the request may wait this long to be forgotten with others (see
    :func:`flush`) rather than take the exact path at once.
    """
    if request_id is not None:
        check_request_id(request_id)
    if queue_days is not None and not 0 < queue_days <= MAX_QUEUE_DAYS:
        raise ConfigError(f"queue_days {queue_days}: a request may wait more than 0 and at "
                          f"most {MAX_QUEUE_DAYS} days")
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
    todo = _users_to_forget(store, users, log)
    if not todo:
        return Outcome(request_id, "nothing to do",
                       "every user in the request was already forgotten")
    request_id = request_id or ledger.next_request_id()
    due = None if queue_days is None or get_method(method).exact else \
        (datetime.now(UTC) + timedelta(days=queue_days)).isoformat(timespec="seconds")
    ledger.record_request(request_id, todo, method, options or {}, to_dict(verification),
                          requested_by, due)
    log(f"[forget] request {request_id}: {len(todo)} user(s) recorded as pending")
    if overridden := verification.overridden():
        log(f"[forget] request {request_id}: verification thresholds overridden: {overridden}")
    outcome = attempt(store, ledger.request(request_id), verification, log, cpu)
    if outcome.status == "queued":
        flushed = flush(store, log, cpu)
        return own_outcome(store, request_id, flushed) or outcome
    close_queued(store, log)  # a queued request whose users this one forgot ends here
    return outcome


# The longest a request may wait in the queue (deletion law allows about a month).
MAX_QUEUE_DAYS = 30


def _users_to_forget(store: Store, users: list[str], log: Callable[[str], None]
                     ) -> list[str]:
    """The users a new request unlearns (those not yet forgotten), once no other request
    is unfinished and every user is known."""
    ledger = store.ledger
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
    for user in (u for u in users if u in forgotten):
        log(f"[forget] user {user} was already forgotten by request {forgotten[user]}; "
            "not unlearned again")
    waiting = {u: r["id"] for r in ledger.queued() for u in r["users"]}
    for user in (u for u in users if u in waiting and u not in forgotten):
        log(f"[forget] user {user} waits in queued request {waiting[user]}; this request "
            "forgets them now")
    return [u for u in users if u not in forgotten]


def abandon(store: Store, request_id: str, reason: str,
            log: Callable[[str], None] = print) -> Outcome:
    """Give up a pending or queued request: recorded as ``abandoned`` with ``reason``,
    never deleted.

    Its scratch is deleted; nothing else changes (a pending request changed nothing).
    An ``applied`` request cannot be abandoned: its version is current and its
    users are forgotten, so only finishing the purge is right.
    """
    check_request_id(request_id)
    request = store.ledger.request(request_id)
    if request is None:
        raise RequestError(f"no request {request_id} in the ledger")
    if request["status"] not in ("pending", "queued"):
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
    try:  # the shards teacher is the store's own: one it lacks fails here, before any work
        teacher_options(store, method, options or {})
    except ValueError as err:
        raise ConfigError(str(err)) from None


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
    if request["status"] == "queued":
        log(f"[forget] request {rid} is queued (due {request['due']}); trying the queue")
        return own_outcome(store, rid, flush(store, log, cpu)) or Outcome(
            rid, "queued", f"request {rid} is queued until {request['due']}")
    if request["status"] == "applied":
        log(f"[forget] request {rid}: applied before an interruption; finishing the purge")
        return purge(store, request, log)
    log(f"[forget] request {rid}: pending after an interruption; starting it again")
    # The thresholds recorded with the request hold, whatever this call was given.
    return attempt(store, request, Verification.from_request(request), log, cpu)


