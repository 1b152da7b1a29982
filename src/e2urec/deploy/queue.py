"""The queue: requests the check cannot see alone, forgotten together.

A request that may wait (``forget(queue_days=...)``) and whose users the check
cannot tell from never-trained users on the current version is ``queued``
rather than failed (steps.py). :func:`flush` forgets every queued request's
users in one request: on the exact path where one is due, else with the oldest
queued request's method once the check can see the users together. A queued
request ends ``done`` when all its users are forgotten, by a batch or by any
later request that named them.
"""

from __future__ import annotations

from collections.abc import Callable

from e2urec.config import to_dict
from e2urec.deploy.attempt import EXACT_METHOD, attempt
from e2urec.deploy.ledger import now
from e2urec.deploy.steps import Outcome, measure_before, unseen
from e2urec.deploy.store import Store, delete_inside
from e2urec.deploy.verify import Verification


def flush(store: Store, log: Callable[[str], None] = print, cpu: bool = False,
          exact: bool = False) -> Outcome:
    """Forget the queued requests' users together (the caller holds the store's lock).

    Where a queued request is due (or ``exact``), the exact path forgets them all at
    once; else, where the check can see them together on the current version, the
    oldest queued request's method does, with its thresholds (and the exact path if it
    then fails); else they wait. Each queued request whose users are all forgotten
    ends ``done``, naming the request that forgot them.
    """
    close_queued(store, log)
    queued, forgotten = store.ledger.queued(), store.ledger.forgotten()
    users = list(dict.fromkeys(u for r in queued for u in r["users"] if u not in forgotten))
    if not users:
        return Outcome(None, "nothing to do", "no request is queued")
    oldest = queued[0]
    verification = Verification.from_request(oldest)
    due = [r["id"] for r in queued if r["due"] <= now()]
    method, options = oldest["method"], oldest["options"]
    if due or exact:
        method, options = EXACT_METHOD, {}
    elif reason := _batch_unseen(store, users, verification):
        log(f"[forget] {len(queued)} queued request(s), {len(users)} user(s): still waiting: "
            f"{reason}")
        return Outcome(None, "queued", f"{len(queued)} request(s) wait, the first due "
                       f"{min(r['due'] for r in queued)}: {reason}")
    batch = store.ledger.next_request_id()
    why = "the check can see them together" if method != EXACT_METHOD else \
        f"due: {', '.join(due)}" if due else "asked for the exact path"
    store.ledger.record_request(batch, users, method, options, to_dict(verification),
                                f"queue ({why}): {', '.join(r['id'] for r in queued)}")
    log(f"[forget] request {batch}: the {len(queued)} queued request(s) together, "
        f"{len(users)} user(s), with {method} ({why})")
    outcome = attempt(store, store.ledger.request(batch), verification, log, cpu)
    close_queued(store, log)
    return outcome


def _batch_unseen(store: Store, users: list[str], verification: Verification) -> str | None:
    """Why the check cannot see ``users`` together on the current version (None: it can);
    measured in a scratch folder that no request id can name, deleted after."""
    work = store.root / "work" / QUEUE_SCRATCH
    try:
        _, rows, _, before = measure_before(store, users, verification, work)
        return unseen(store, before, verification) if rows else None
    finally:
        delete_inside(store.root, work)


# A scratch name no request id can take (ids start with a letter or digit).
QUEUE_SCRATCH = "_queue"


def close_queued(store: Store, log: Callable[[str], None]) -> None:
    """End ``done`` each queued request whose users are all forgotten, naming the
    request(s) that forgot them; the wait is its received and finished times."""
    ledger = store.ledger
    forgotten = ledger.forgotten()
    for request in ledger.queued():
        if not all(u in forgotten for u in request["users"]):
            continue
        by = sorted({forgotten[u] for u in request["users"]})
        with ledger.transaction() as db:
            ledger.update_request(db, request["id"], status="done", finished=now(),
                                  version_after=ledger.request(by[-1])["version_after"],
                                  reason=f"{request['reason']}; forgotten by request(s) "
                                         f"{', '.join(by)}")
        log(f"[forget] queued request {request['id']}: done (forgotten by {', '.join(by)})")


def own_outcome(store: Store, request_id: str, flushed: Outcome) -> Outcome | None:
    """A queued request's outcome after the queue was tried: done when a batch forgot its
    users (the batch's message), else None (it stays queued)."""
    if store.ledger.request(request_id)["status"] != "done":
        return None
    return Outcome(request_id, "done", f"forgotten with the queue: {flushed.message}")
