"""One recorded request carried out, and retried on the exact path where its
approximate method fails: the same path for a first run, a rerun after a kill and
a batch of queued requests."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from e2urec.config import to_dict
from e2urec.deploy.steps import Outcome, carry_out
from e2urec.deploy.store import Store
from e2urec.deploy.verify import Verification
from e2urec.methods.registry import get_method


def attempt(store: Store, request: dict[str, Any], verification: Verification,
            log: Callable[[str], None], cpu: bool) -> Outcome:
    """Carry out a recorded request and, where its approximate method fails, retry it on
    the exact path: the same path for a first run and for a rerun after a kill."""
    outcome = carry_out(store, request, verification, log, cpu)
    if (outcome.status == "failed" and verification.exact_retry
            and not get_method(request["method"]).exact):
        return retry_exact(store, outcome, request["users"], verification, log,
                           request["requested_by"], cpu)
    return outcome


# How a failed request's reason names its retry (see retry_exact).
RETRIED = re.compile(r"retried on the exact path \(\w+\) as request (\S+)$")
# A single-model store's exact path: a model trained again on the store's data without
# the users, with the store's own recipe (an ensemble store's exact path is its method).
EXACT_METHOD = "retrain"


def retry_exact(store: Store, failed: Outcome, users: list[str], verification: Verification,
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
    retried = carry_out(store, ledger.request(retry), verification, log, cpu)
    return Outcome(retry, retried.status, f"{failed.message}; retried on the exact path as "
                   f"request {retry}: {retried.message}")


