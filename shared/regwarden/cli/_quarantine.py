"""`regwarden quarantine list | show`, and what `quarantine release` checks first.

Everything here reads the ledger (`--ledger`, any store `store.open_ledger` opens) and
nothing else: no registry is contacted, so the audit works where the registry does not.
The team of an image comes from the policy (`--policy`), as the gate assigns it; without
one it is unknown ("-").
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ..errors import RegwardenError, UsageError
from ._render import print_json

if TYPE_CHECKING:
    from ..policy import Policy
    from ..reference import ImageRef
    from ..store import ActionRecord, Ledger, OutboxRecord, QuarantineRecord

__all__ = [
    "NotQuarantined",
    "ensure_quarantined",
    "operator_name",
    "release_action",
    "run_list",
    "run_show",
]


class NotQuarantined(RegwardenError):
    """The image has no standing quarantine (never quarantined, or released already)."""

    exit_code: ClassVar[int] = 1


@runtime_checkable
class _VerdictLog(Protocol):
    def verdict_log(
        self, registry: str, repository: str, digest: str
    ) -> list[tuple[str | None, str, datetime]]: ...


@runtime_checkable
class _OutboxAudit(Protocol):
    def outbox_for(self, digest: str) -> list[OutboxRecord]: ...


def _now() -> datetime:
    return datetime.now(UTC)


def operator_name() -> str | None:
    """Who runs this command, for the audit: `$USER` (then the other login variables and
    the password database, as `getpass` looks)."""
    try:
        return os.environ.get("USER") or getpass.getuser() or None
    except (KeyError, OSError):  # no login name at all (a bare container)
        return None


def release_action(ledger: Ledger, rec: QuarantineRecord) -> ActionRecord | None:
    """The release action of one quarantine (`actions.release` keys it by the record's
    quarantine time, so a re-quarantined image's releases stay apart)."""
    key = f"release:{rec.registry}/{rec.repository}@{rec.digest}#{rec.quarantined_at.isoformat()}"
    return ledger.action(key)


def ensure_quarantined(ledger: Ledger, image: ImageRef) -> QuarantineRecord:
    """The standing quarantine record of `image` (by digest), or NotQuarantined saying why
    there is nothing to release."""
    assert image.digest is not None
    rec = ledger.quarantined(image.registry, image.repository, image.digest)
    if rec is None:
        raise NotQuarantined(
            f"{image} is not quarantined: the ledger has no quarantine record of it",
            hint="regwarden quarantine list shows what is quarantined",
        )
    if rec.released_at is not None:
        done = release_action(ledger, rec)
        by = _released_by(done)
        raise NotQuarantined(
            f"{image} is not quarantined: released {rec.released_at.isoformat()}"
            + (f" by {by}" if by else "")
            + (f" ({done.reason})" if done else "")
        )
    return rec


def _released_by(action: ActionRecord | None) -> str | None:
    by = action.state.get("by") if action else None
    return by if isinstance(by, str) else None


# -- list ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListFilters:
    team: str | None = None
    repositories: Sequence[str] = ()
    older_than: timedelta | None = None
    released: bool | None = False
    """None: all; False: standing only (the default); True: released only."""


def _globs(patterns: Sequence[str]) -> list[Any]:
    from ..policy import Glob

    out = []
    for pattern in patterns:
        try:
            out.append(Glob.compile(pattern))
        except ValueError as exc:
            raise UsageError(f"--repository: {exc}") from None
    return out


def parse_age(text: str | None) -> timedelta | None:
    if text is None:
        return None
    from ..policy import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None


def _load_policy(path: Path | None) -> Policy | None:
    if path is None:
        return None
    from ..policy import load_policy

    return load_policy(path)


def _team(policy: Policy | None, repository: str) -> str | None:
    return policy.for_repository(repository).team if policy is not None else None


def quarantine_rows(
    ledger: Ledger, policy: Policy | None, filters: ListFilters, *, now: datetime
) -> list[dict[str, Any]]:
    """The records `filters` select, each with its team and release (who, when, why)."""
    globs = _globs(filters.repositories)
    rows = []
    for rec in ledger.quarantines(released=filters.released):
        age = now - rec.quarantined_at
        if filters.older_than is not None and age < filters.older_than:
            continue
        if globs and not any(g.matches(rec.repository) for g in globs):
            continue
        team = _team(policy, rec.repository)
        if filters.team is not None and team != filters.team:
            continue
        released = release_action(ledger, rec) if rec.released_at is not None else None
        rows.append(
            {
                "image": f"{rec.registry}/{rec.repository}@{rec.digest}",
                "registry": rec.registry,
                "repository": rec.repository,
                "digest": rec.digest,
                "team": team,
                "strategy": rec.strategy,
                "location": rec.location,
                "tags": list(rec.tags),
                "reason": rec.reason,
                "quarantinedAt": rec.quarantined_at.isoformat(),
                "ageSeconds": int(age.total_seconds()),
                "releasedAt": rec.released_at.isoformat() if rec.released_at else None,
                "releasedBy": _released_by(released),
                "releaseReason": released.reason if released else None,
            }
        )
    return rows


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def run_list(*, ledger: str, policy: Path | None, filters: ListFilters, output: str) -> None:
    from ..store import open_ledger

    if filters.team is not None and policy is None:
        raise UsageError(
            "--team needs --policy: a team is the policy's, matched by repository",
            hint="pass --policy regwarden.yaml (or set REGWARDEN_POLICY)",
        )
    loaded = _load_policy(policy)
    store = open_ledger(ledger)
    try:
        rows = quarantine_rows(store, loaded, filters, now=_now())
    finally:
        store.close()
    if output == "json":
        print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False, title_justify="left")
    for name in ("IMAGE", "STRATEGY", "SINCE", "AGE", "TEAM", "REASON", "RELEASED"):
        table.add_column(name, no_wrap=name in ("IMAGE", "SINCE", "AGE"))
    for r in rows:
        released = "-"
        if r["releasedAt"]:
            released = f"{r['releasedAt'][:16].replace('T', ' ')} by {r['releasedBy'] or '?'}"
            if r["releaseReason"]:
                released += f": {r['releaseReason']}"
        table.add_row(
            f"{r['registry']}/{r['repository']}@{r['digest'][:19]}",
            r["strategy"],
            r["quarantinedAt"][:16].replace("T", " "),
            _age(r["ageSeconds"]),
            r["team"] or "-",
            r["reason"],
            released,
        )
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    console.print(table)
    what = {None: "record(s)", False: "standing", True: "released"}[filters.released]
    console.print(f"{len(rows)} {what}", style="dim")


# -- show ---------------------------------------------------------------------------------


def audit_trail(ledger: Ledger, image: ImageRef) -> dict[str, Any] | None:
    """Everything the ledger holds about one digest: its quarantine record, its verdicts,
    its actions (quarantine and release, with who and why) and the alerts queued for it
    (when the store keeps them readable); None when it holds nothing."""
    assert image.digest is not None
    reg, repo, digest = image.registry, image.repository, image.digest
    rec = ledger.quarantined(reg, repo, digest)
    verdicts = ledger.verdict_log(reg, repo, digest) if isinstance(ledger, _VerdictLog) else []
    actions = [
        a for a in ledger.actions() if (a.registry, a.repository, a.digest) == (reg, repo, digest)
    ]
    alerts: list[dict[str, Any]] | None = None
    if isinstance(ledger, _OutboxAudit):
        alerts = [_alert_row(r) for r in ledger.outbox_for(digest)]
        alerts = [a for a in alerts if a.pop("_image") == str(image.with_tag(None))]
    if rec is None and not verdicts and not actions and not alerts:
        return None
    return {
        "image": str(image.with_tag(None)),
        "quarantine": None
        if rec is None
        else {
            "strategy": rec.strategy,
            "location": rec.location,
            "tags": list(rec.tags),
            "reason": rec.reason,
            "quarantinedAt": rec.quarantined_at.isoformat(),
            "releasedAt": rec.released_at.isoformat() if rec.released_at else None,
            "standing": rec.released_at is None,
        },
        "verdicts": [
            {"outcome": outcome, "at": at.isoformat(), "deliveryId": delivery}
            for delivery, outcome, at in verdicts
        ],
        "actions": [
            {
                "kind": a.kind,
                "status": a.status,
                "at": a.at.isoformat(),
                "reason": a.reason,
                "by": _released_by(a),
                "key": a.key,
                "state": a.state,
            }
            for a in sorted(actions, key=lambda a: (a.at, a.key))
        ],
        "alerts": alerts,
    }


def _alert_row(record: OutboxRecord) -> dict[str, Any]:
    from ..nesting import loads_json

    doc = loads_json(record.item.alert)
    doc = doc if isinstance(doc, dict) else {}
    return {
        "_image": doc.get("image"),
        "channel": record.item.channel,
        "outcome": doc.get("outcome"),
        "action": doc.get("action"),
        "summary": doc.get("summary"),
        "reasons": doc.get("reasons") or [],
        "queuedAt": record.created_at.isoformat(),
        "sentAt": record.sent_at.isoformat() if record.sent_at else None,
        "attempts": record.item.attempts,
        "error": record.item.error,
    }


def run_show(image: str, *, ledger: str, output: str) -> None:
    from ..reference import ImageRef
    from ..store import open_ledger

    ref = ImageRef.parse(image)
    if ref.digest is None:
        raise UsageError(
            f"quarantine show needs the image by digest, got {image!r}",
            hint="REPO@sha256:… (quarantine list and the alert give it)",
        )
    store = open_ledger(ledger)
    try:
        trail = audit_trail(store, ref.with_tag(None))
    finally:
        store.close()
    if trail is None:
        raise NotQuarantined(
            f"the ledger has no record of {ref.with_tag(None)}: never judged, quarantined "
            "or released here",
            hint="check the digest, and that --ledger names the deployment's ledger",
        )
    if output == "json":
        print_json(trail)
        return
    _print_trail(trail)


def _when(text: str) -> str:
    return text[:19].replace("T", " ")


def _print_trail(trail: dict[str, Any]) -> None:
    print(trail["image"])
    q = trail["quarantine"]
    if q is None:
        print("  quarantine: none recorded")
    else:
        state = "standing" if q["standing"] else f"released {_when(q['releasedAt'])}"
        print(f"  quarantine: {q['strategy']} since {_when(q['quarantinedAt'])} ({state})")
        print(f"    reason:   {q['reason']}")
        print(f"    location: {q['location']}; tags: {', '.join(q['tags']) or 'none'}")
    print("  verdicts:" + ("" if trail["verdicts"] else " none"))
    for v in trail["verdicts"]:
        print(f"    {_when(v['at'])}  {v['outcome']:7}  ({v['deliveryId'] or 'no delivery'})")
    print("  actions:" + ("" if trail["actions"] else " none"))
    for a in trail["actions"]:
        by = f" by {a['by']}" if a["by"] else ""
        print(f"    {_when(a['at'])}  {a['kind']} ({a['status']}){by}: {a['reason']}")
    if trail["alerts"] is None:
        print("  alerts: this ledger does not keep them readable")
        return
    print("  alerts:" + ("" if trail["alerts"] else " none"))
    for al in trail["alerts"]:
        sent = f"sent {_when(al['sentAt'])}" if al["sentAt"] else "not sent yet"
        print(f"    {_when(al['queuedAt'])}  → {al['channel']} ({sent}): {al['summary']}")
