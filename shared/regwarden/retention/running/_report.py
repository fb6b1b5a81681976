"""One alert per team summarising what a retention run did (or, tripped, refused to do).

Alerts go through the policy's notifications (the Runtime's router) with action `delete`,
so routes can send deletions to an ops channel. Each (run, team, status) is alerted once:
an interrupted apply alerts nothing; the resume that completes it does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ...errors import RegistryError
from ...model import Outcome
from ...reference import ImageRef
from ..planning import RegistryPlan
from ._execute import ApplyResult
from ._run import RunLedger, RunPlan

if TYPE_CHECKING:
    from ...notify import Alert, Router
    from ...policy import Policy

__all__ = ["send_alerts", "team_alerts"]

log = logging.getLogger("regwarden.retention")

ALERT_TTL = timedelta(days=90)
_MAX_REASONS = 20


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def team_alerts(
    result: ApplyResult,
    run: RunPlan,
    policy: Policy,
    *,
    now: datetime,
    plan: RegistryPlan | None = None,
) -> list[Alert]:
    """One alert per team with deletions, failures or a tripped guard in this run.
    Nothing for an interrupted run or a dry run (the completing resume alerts)."""
    from ...notify import Alert

    if result.status in ("interrupted", "dry-run"):
        return []
    plan = plan or run.plan
    teams: dict[str | None, list[str]] = {}
    repos = [r.repository for r in result.repositories]
    tripped: dict[str, str] = {}
    if result.status == "tripped" and plan is not None:
        for p in plan.plans:
            if p.trip is not None:
                tripped[p.repository] = p.trip.message
                repos.append(p.repository)
    for repo in dict.fromkeys(repos):
        teams.setdefault(policy.for_repository(repo).team, []).append(repo)
    by_repo = {r.repository: r for r in result.repositories}
    alerts: list[Alert] = []
    for team, names in teams.items():
        lines: list[str] = []
        deleted = freed = failed = 0
        first: ImageRef | None = None
        for repo in names:
            r = by_repo.get(repo)
            if repo in tripped:
                lines.append(f"{repo}: {tripped[repo]}")
            if r is None:
                continue
            deleted += r.done
            freed += r.bytes_freed
            failed += len(r.failed)
            if r.done or r.failed:
                text = f"{repo}: {r.done} deleted ({_size(r.bytes_freed)})"
                if r.failed:
                    text += f", {len(r.failed)} failed (first: {r.failed[0].error})"
                if r.not_started:
                    text += f", {r.not_started} not started"
                lines.append(text)
            if first is None:
                work = next((w for w in run.work if w.repository == repo), None)
                digest = work.phases[0][0] if work is not None and work.phases else None
                first = ImageRef(registry=run.registry, repository=repo, digest=digest)
        if not lines:
            continue
        if result.status == "tripped":
            outcome = Outcome.FAILED
            summary = f"retention run {run.run_id}: a guard rail tripped; nothing was deleted"
        elif failed or result.status in ("failed", "aborted"):
            outcome = Outcome.ERROR
            summary = (
                f"retention run {run.run_id}: {deleted} images deleted ({_size(freed)}), "
                f"{failed} failed"
            )
        else:
            outcome = Outcome.PASSED
            summary = (
                f"retention run {run.run_id}: {deleted} images deleted ({_size(freed)}) in "
                f"{len(names)} repositories"
            )
        if len(lines) > _MAX_REASONS:
            lines = [*lines[:_MAX_REASONS], f"… and {len(lines) - _MAX_REASONS} more repositories"]
        alerts.append(
            Alert(
                time=now,
                image=first or ImageRef(registry=run.registry, repository=names[0]),
                team=team,
                outcome=outcome,
                action="delete",
                summary=summary,
                reasons=tuple(lines),
                state=f"run {run.run_id}: {result.status}",
            )
        )
    return alerts


def send_alerts(
    alerts: Sequence[Alert],
    router: Router,
    ledger: RunLedger,
    *,
    run_id: str,
    status: str,
    now: datetime,
) -> int:
    """Deliver each alert once per (run, team, status); returns deliveries made. A channel
    that fails is logged and does not stop the others."""
    sent = 0
    for alert in alerts:
        key = f"retention-alert:{run_id}:{alert.team or '-'}:{status}"
        if ledger.seen_delivery(key, now=now, ttl=ALERT_TTL):
            continue
        for channel in router.channels_for(alert):
            try:
                channel.send(alert)
                sent += 1
            except RegistryError as exc:
                log.error("retention alert to %s failed: %s", channel.name, exc)
    return sent
