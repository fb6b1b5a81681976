"""What the push pipeline needs from a ledger, as Protocols: `SqliteLedger` (embedded default)
and `DynamoLedger` (AWS) both satisfy `Ledger`, so the pipeline, the actions and the runtime
work with either. Every method takes `now` from the caller; no ledger reads the clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
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
