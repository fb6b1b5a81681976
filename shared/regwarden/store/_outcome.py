"""What the pipeline commits when it has finished with one delivery, in one transaction.

A delivery counts as handled only once its outcome is durable: the verdict, the delivery
marker and the alerts to send (the outbox) are written together, so a crash anywhere before
leaves the delivery to be retried, and a crash after leaves nothing to redo but sending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

OUTBOX_TTL = timedelta(days=30)
"""An alert with the same key inside this window is the same alert: it is not sent twice."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One alert for one channel, delivered at least once after the outcome commits."""

    key: str
    """`<alert dedup key>:<channel>`: unique while unexpired; the de-duplication of alerts."""
    channel: str
    alert: str
    """The alert as JSON (`Alert.model_dump_json()`)."""
    attempts: int = 0
    next_attempt: datetime | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An outbox row as an audit reads it back (`quarantine show`): the alert, when it was
    queued and when it was sent (None: not yet)."""

    item: OutboxItem
    created_at: datetime
    sent_at: datetime | None


Findings = tuple[tuple[str, int], ...]
"""Finding counts by severity name, worst first: what a verdict's scan evidence found."""


def findings_json(findings: Findings | None) -> str | None:
    """How the stores keep `Outcome.findings` in one text column or attribute (None: none)."""
    return None if findings is None else json.dumps(dict(findings), separators=(",", ":"))


def findings_from(text: object) -> Findings | None:
    """`findings_json` read back; absent, or written before findings were kept: None."""
    if not isinstance(text, str) or not text:
        return None
    doc = json.loads(text)
    if not isinstance(doc, dict):
        return None
    return tuple((str(k), int(v)) for k, v in doc.items())


@dataclass(frozen=True, slots=True)
class VerdictRecord:
    """An image's last verdict as the report reads it, a repository at a time
    (`repository_verdicts`): its outcome, when, and its findings by severity."""

    outcome: str
    at: datetime
    findings: Findings | None = None


@runtime_checkable
class VerdictReader(Protocol):
    """What every store has besides `Ledger` for the report: a repository's last verdicts
    in one read (one query of the repository's partition where the store has one)."""

    def repository_verdicts(self, registry: str, repository: str) -> dict[str, VerdictRecord]:
        """digest → its last verdict, for every digest of one repository judged."""
        ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything one handled delivery leaves behind."""

    delivery_id: str | None
    """None for work with no delivery of its own (the recovery sweep)."""
    registry: str
    repository: str
    digest: str
    verdict: str | None
    """The verdict's outcome value, or None when the delivery judged nothing."""
    recheck_at: datetime | None = None
    recheck_image: str | None = None
    alerts: tuple[OutboxItem, ...] = ()
    findings: Findings | None = None
    """The verdict's findings by severity (`(("critical", 2), ("high", 5))`, worst first, only
    severities found); `()`: scanned, nothing found; None: the verdict had no scan report.
    Kept with the verdict, replaced with it (`record_verdict` clears it)."""


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What a handled delivery recorded: enough for a duplicate to re-schedule its recheck."""

    delivery_id: str
    handled_at: datetime
    recheck_at: datetime | None = None
    recheck_image: str | None = None
