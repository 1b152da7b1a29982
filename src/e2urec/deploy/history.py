"""Plain-text views of the ledger and of a store's status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2urec.config import to_dict

COLUMNS = ("request", "received", "status", "users", "method", "versions", "seconds",
           "power", "MIA before>after", "canary lift before>after", "valid AUC before>after",
           "purged", "checks")


def format_history(requests: list[dict[str, Any]]) -> str:
    """One row a request, oldest first."""
    if not requests:
        return "no requests yet"
    rows = [COLUMNS] + [_row(r) for r in requests]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    ended = [f"{r['status']} {r['id']}: {r['reason']}" for r in requests
             if r["status"] in ("failed", "abandoned", "queued")
             or (r["status"] == "done" and r.get("due"))]
    asked = [f"requested by {r['id']}: {r['requested_by']}" for r in requests
             if r.get("requested_by")]
    return "\n".join(lines + ended + asked)


def _row(request: dict[str, Any]) -> tuple[str, ...]:
    users = request["users"]
    shown = " ".join(users[:3]) + (f" (+{len(users) - 3})" if len(users) > 3 else "")
    before, after = request["metrics_before"] or {}, request["metrics_after"] or {}
    versions = f"{request['version_before'] or '-'}>{request['version_after'] or '-'}"
    seconds = f"{request['seconds']:.1f}" if request["seconds"] is not None else "-"
    return (request["id"], request["received"].replace("+00:00", "Z"), request["status"],
            shown, request["method"] or "-", versions, seconds, _power(before),
            _pair(before, after, "mia_auc"), _pair(before, after, "canary_lift"),
            _pair(before, after, "valid_auc"), str(len(request["purged"] or [])),
            _checks(request))


def _power(before: dict[str, Any]) -> str:
    """Of the request's users, how many the check told from never-trained users before
    unlearning ("+together" where the users together were told): an approximate
    deletion needs that to be shown. "-": not asked (an exact path, or nothing measured)."""
    seen = before.get("power")
    if not seen:
        return "-"
    told = sum(bool(v) for v in seen["users"].values())
    return f"{told}/{len(seen['users'])}" + ("+together" if seen["group"] else "")


def _checks(request: dict[str, Any]) -> str:
    """"default", or the thresholds the request overrode (a forced pass shows here)."""
    from e2urec.deploy.verify import Verification

    recorded = request["verification"] or {}
    default = to_dict(Verification())
    changed = [f"{k}={v}" for k, v in recorded.items() if k in default and default[k] != v]
    return "overridden: " + ",".join(changed) if changed else "default"


def _pair(before: dict[str, Any], after: dict[str, Any], key: str) -> str:
    if key not in before and key not in after:
        return "-"
    return f"{_num(before.get(key))}>{_num(after.get(key))}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_status(report: dict[str, Any], root: Path) -> str:
    lines = [f"store {root}: {'consistent' if report['consistent'] else 'NOT consistent'}",
             f"  current version {report['current']} ({report['versions']} kept), "
             f"{report['forgotten_users']} user(s) forgotten"]
    lines += [f"  problem: {p}" for p in report["problems"]]
    for request in report["unfinished"]:
        lines.append(f"  unfinished request {request['id']} ({request['status']}); finish it "
                     f"with: e2urec forget --store {root} --request-id {request['id']} "
                     f"--users {' '.join(request['users'])}")
    for request in report.get("queued", []):
        lines.append(f"  queued request {request['id']} ({len(request['users'])} user(s)), "
                     f"due {request['due']}" + (": OVERDUE, run e2urec deploy flush --store "
                                                f"{root}" if request["overdue"] else ""))
    if report["unrecorded_versions"]:
        lines.append(f"  unrecorded version folders (an interrupted request's; removed when "
                     f"it finishes): {', '.join(report['unrecorded_versions'])}")
    if report["leftover_copies"]:
        lines.append(f"  copies left by an interrupted write (they may hold forgotten users' "
                     f"rows; the next request, or rerunning the unfinished one, deletes them): "
                     f"{', '.join(report['leftover_copies'])}")
    if report["leftover_work"]:
        lines.append(f"  scratch of unfinished requests: {', '.join(report['leftover_work'])}")
    if report.get("stale_scratch"):
        lines.append(f"  stale scratch (may hold forgotten users' rows or models trained on "
                     f"them; purged by the next status or request): "
                     f"{', '.join(report['stale_scratch'])}")
    if report.get("purged_now"):
        lines.append(f"  purged now: {', '.join(report['purged_now'])}")
    if report.get("audit_users") is not None:
        lines.append(f"  never-trained (audit) users left to verify against: "
                     f"{report['audit_users']} (an approximate request needs "
                     f"{report['min_audit_users']}; fewer, and requests take the exact path)")
    lines.append(f"  auditor: {format_auditor(report.get('auditor'))}")
    return "\n".join(lines)


def format_auditor(auditor: dict[str, Any] | None) -> str:
    """The store's reference models and their stated power, in one line."""
    if not auditor:
        return ("none (deploy init --references 0): users are verified by a loss-threshold "
                "attack, which cannot see one user")
    power = auditor["power"]
    if not power.get("by_size"):
        return f"{auditor['count']} reference models; power not stated: {power['reason']}"
    sizes = ", ".join(f"{k} user(s) {v:.0%}" for k, v in power["by_size"].items())
    return (f"{auditor['count']} reference models ({auditor['seconds']:.0f}s to train); a "
            f"request is told from never-trained users at alpha {power['alpha']}: {sizes} "
            f"(false-alarm rate {power['false_alarm_rate']:.2f}, measured at init on "
            f"{power['users']} users)")


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
