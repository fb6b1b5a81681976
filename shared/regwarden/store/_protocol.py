"""What the push pipeline needs from a ledger, as Protocols: `SqliteLedger` (embedded default)
and `DynamoLedger` (AWS) both satisfy `Ledger`, so the pipeline, the actions and the runtime
work with either. Every method takes `now` from the caller; no ledger reads the clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._outcome import DeliveryOutcome, OutboxItem, Outcome
    from ._sqlite import ActionRecord, QuarantineRecord

__all__ = ["EventQueue", "Ledger"]


class Ledger(Protocol):
    """The ledger methods used by `pipeline.py`, `actions/` and `runtime.py` (exactly those)."""

    # -- deliveries (idempotency) -------------------------------------------------------------

    def seen_delivery(self, delivery_id: str, *, now: datetime, ttl: timedelta) -> bool:
        """Record a delivery id; True if it was already recorded and not expired."""
        ...

    def forget_delivery(self, delivery_id: str) -> None:
        """Drop a delivery id so a retry of the same event is processed again."""
        ...

    def delivery_outcome(self, delivery_id: str, *, now: datetime) -> DeliveryOutcome | None:
        """The committed outcome of a delivery, if it was handled and has not expired."""
        ...

    def commit_outcome(
        self, outcome: Outcome, *, now: datetime, ttl: timedelta
    ) -> list[str] | None:
        """In one transaction: the verdict (and a `verdict_log` entry), the delivery marker
        (kept for `ttl`) and the outbox rows. An outbox key already present and unexpired is
        not added again (alert de-duplication). Returns the outbox keys it added, or None
        (and writes nothing) when the delivery's outcome was committed before: a duplicate
        handled side by side with this one."""
        ...

    # -- alert outbox -------------------------------------------------------------------------

    def outbox_pending(self, *, now: datetime, limit: int = 100) -> list[OutboxItem]:
        """Unsent alerts whose next attempt is due, oldest first."""
        ...

    def outbox_sent(self, key: str, *, now: datetime) -> None: ...

    def outbox_retry(self, key: str, *, at: datetime, error: str) -> None:
        """A failed send: try again at `at`."""
        ...

    # -- images and tags ----------------------------------------------------------------------

    def record_push(
        self, registry: str, repository: str, digest: str, tags: tuple[str, ...], *, now: datetime
    ) -> None: ...

    def record_pull(
        self, registry: str, repository: str, digest: str, *, now: datetime
    ) -> None: ...

    def image_times(
        self, registry: str, repository: str
    ) -> dict[str, tuple[datetime, datetime | None]]:
        """digest → (first seen, last pulled) for one repository."""
        ...

    def previous_digest(
        self, registry: str, repository: str, tag: str, *, before: str
    ) -> str | None:
        """The digest `tag` pointed at before it moved to `before`, if the ledger saw it."""
        ...

    def tags_for(self, registry: str, repository: str, digest: str) -> list[str]:
        """Tags whose most recent push (as the ledger saw it) was this digest."""
        ...

    def tag_digests(self, registry: str, repository: str, tag: str) -> list[str]:
        """Every digest `tag` has pointed at, oldest first."""
        ...

    def tag_history(self, registry: str, repository: str) -> list[tuple[str, str, datetime]]:
        """(tag, digest, first seen) for every tag → digest the ledger saw pushed in one
        repository, oldest first (one query: retention reads a whole repository)."""
        ...

    # -- verdicts -----------------------------------------------------------------------------

    def record_verdict(
        self, registry: str, repository: str, digest: str, outcome: str, *, now: datetime
    ) -> None: ...

    def last_verdict(self, registry: str, repository: str, digest: str) -> str | None: ...

    # -- actions (audit and resumable intents) ------------------------------------------------

    def begin_action(
        self,
        key: str,
        *,
        registry: str,
        repository: str,
        digest: str,
        kind: str,
        reason: str,
        state: dict[str, Any],
        now: datetime,
    ) -> ActionRecord:
        """Record the intent before the first write; an existing key returns its record."""
        ...

    def finish_action(
        self, key: str, *, status: str, state: dict[str, Any] | None = None
    ) -> None: ...

    def action(self, key: str) -> ActionRecord | None: ...

    def actions(self, *, status: str | None = None) -> list[ActionRecord]:
        """Every action record (audit), or those with one status ('intent': unfinished)."""
        ...

    # -- quarantine ---------------------------------------------------------------------------

    def record_quarantine(self, rec: QuarantineRecord) -> None: ...

    def quarantined(
        self, registry: str, repository: str, digest: str
    ) -> QuarantineRecord | None: ...

    def mark_released(
        self, registry: str, repository: str, digest: str, *, now: datetime
    ) -> None: ...


class EventQueue(Protocol):
    """The durable queue `service.py` schedules re-checks on (`regwarden serve`: the SQLite
    ledger's queue table). On AWS the SQS queue in front of each function plays this part."""

    def enqueue(
        self,
        source: str,
        body: bytes,
        content_type: str | None,
        *,
        now: datetime,
        not_before: datetime | None = None,
    ) -> int: ...
