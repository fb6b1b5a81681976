"""What the pipeline commits when it has finished with one delivery, in one transaction.

A delivery counts as handled only once its outcome is durable: the verdict, the delivery
marker and the alerts to send (the outbox) are written together, so a crash anywhere before
leaves the delivery to be retried, and a crash after leaves nothing to redo but sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

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


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What a handled delivery recorded: enough for a duplicate to re-schedule its recheck."""

    delivery_id: str
    handled_at: datetime
    recheck_at: datetime | None = None
    recheck_image: str | None = None
