"""What the push pipeline needs from a ledger, as Protocols: `SqliteLedger` (embedded default)
and `DynamoLedger` (AWS) both satisfy `Ledger`, so the pipeline, the actions and the runtime
work with either. Every method takes `now` from the caller; no ledger reads the clock.

The atomic unit is one delivery's outcome (`commit_outcome`): its verdict and verdict-log
entry, its delivery marker and its outbox rows are written together or not at all, and only
once while the marker lives (a second commit of the same delivery writes nothing and returns
None). Nothing else is transactional: every other method is one write that stands alone
(conditional where it says so: `seen_delivery`, `begin_action`). The unit is one delivery so
that it fits within one partition key: a store whose transactions are bound to one
partition (Azure Table Storage's entity-group batches; Firestore is not, DynamoDB's
`TransactWriteItems` is not) writes the delivery's marker, verdict-log entry and outbox rows
under the delivery's key in one batch; what spans deliveries (the latest verdict of an
image, an outbox key already taken by another delivery) it must check around that batch.
`tests/integration/test_ledger_contract.py` holds every store to this, and to the rest of
what this protocol promises, with the same assertions.

`EventQueue` is the durable work queue of `regwarden serve` (the receiver persists each
webhook in it; the worker pool leases, heartbeats and completes its rows). A ledger may be
its own queue (SQLite's file holds both); one that is not (DynamoDB) is paired with a queue
named by `--queue` (`store.open_queue`).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._access import AccessWindow, PullTally
    from ._outcome import DeliveryOutcome, OutboxItem, Outcome
    from ._records import ActionRecord, QuarantineRecord
    from ._sqlite_queue import DeadLetter, QueuedEvent

__all__ = ["EventQueue", "Ledger"]


class Ledger(Protocol):
    """The ledger methods used by `pipeline.py`, `actions/` and `runtime.py` (exactly those)."""

    def close(self) -> None:
        """Release connections (the process is done with this ledger)."""
        ...

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
        """In one transaction (the atomic unit, see the module docstring): the verdict (and a
        `verdict_log` entry), the delivery marker (kept for `ttl`) and the outbox rows. An
        outbox key already present and unexpired is not added again (alert de-duplication).
        Returns the outbox keys it added, or None (and writes nothing) when the delivery's
        outcome was committed before: a duplicate handled side by side with this one."""
        ...

    # -- alert outbox -------------------------------------------------------------------------

    def outbox_pending(self, *, now: datetime, limit: int = 100) -> list[OutboxItem]:
        """Unsent alerts whose next attempt is due, soonest due first (then by key): the
        same order on every store."""
        ...

    def outbox_sent(self, key: str, *, now: datetime) -> None: ...

    def outbox_retry(self, key: str, *, at: datetime, error: str) -> None:
        """A failed send: try again at `at`."""
        ...

    # -- images and tags ----------------------------------------------------------------------

    def record_push(
        self, registry: str, repository: str, digest: str, tags: tuple[str, ...], *, now: datetime
    ) -> datetime:
        """Record a push: the digest's first-seen time (an earlier one is kept) and each tag →
        digest's first sighting. Returns the digest's first-seen time, so the pipeline needs
        no read after its write (on DynamoDB the same request answers it)."""
        ...

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

    def tags_for_push(
        self, registry: str, repository: str, digest: str, tag: str | None
    ) -> tuple[list[str], list[str]]:
        """`tags_for(digest)` and `tag_digests(tag)` (`[]` when `tag` is None) together: what
        judging a push reads, in one query where the ledger keeps a repository's tag rows
        together (its `tags_for` reads them all anyway)."""
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

    # -- access monitoring (pull tallies, tracking, alert windows) ------------------------

    def record_pulls(self, tallies: Sequence[PullTally]) -> None:
        """Add coalesced pulls. Per tally: the image's `last_pulled` becomes the later of the
        stored one and the tally's (an image row it creates gets `first_seen =
        t.last_pulled`, as `record_pull` does); the (digest, principal) row's `last_pulled`
        likewise and its count grows by `t.count`. Atomic increments (no read-modify-write),
        so processes may record the same image side by side; batched where the store can."""
        ...

    def pull_tallies(self, registry: str, repository: str) -> list[PullTally]:
        """One tally per (digest, principal) of one repository — all pulls recorded, the
        last one's time — by digest, then principal. One query per repository."""
        ...

    def start_pull_tracking(self, registry: str, repository: str, *, now: datetime) -> datetime:
        """Record that pulls of this repository are being recorded from `now` on, unless an
        earlier start is recorded (the earliest wins). Returns the stored start."""
        ...

    def pull_tracking_since(self, registry: str, repository: str) -> datetime | None:
        """When pull tracking of this repository began, or None if it never did."""
        ...

    def open_access_window(
        self, window: AccessWindow, *, replacing: datetime | None = None
    ) -> bool:
        """Write `window`: create it when no window has its key (`replacing` None), or
        overwrite the one whose `opened_at == replacing` (a closed window reopened). False,
        and nothing written, otherwise: a conditional write, so of processes racing to open
        one window exactly one wins."""
        ...

    def access_window(self, key: str) -> AccessWindow | None: ...

    def count_access(self, key: str, *, opened_at: datetime, add: int, last_seen: datetime) -> bool:
        """`count += add` and `last_seen` the later of both, only if the window `key` is the
        one opened at `opened_at`; False (nothing written) when it is gone or reopened."""
        ...

    def access_windows_due(self, *, now: datetime, limit: int = 100) -> list[AccessWindow]:
        """Windows with `closes_at <= now`, by closes_at, then key (never a scan of the
        table: few windows are open at once)."""
        ...

    def drop_access_window(self, key: str, *, opened_at: datetime) -> bool:
        """Delete the window `key` if it is the one opened at `opened_at`; False otherwise."""
        ...

    def quarantines(self, *, released: bool | None = None) -> list[QuarantineRecord]:
        """Every quarantine record (None), the standing ones (False) or the released ones
        (True), by `quarantined_at`, then registry, repository and digest: the same order
        on every store (`regwarden quarantine list`; an audit read, it may scan)."""
        ...


@runtime_checkable
class EventQueue(Protocol):
    """The durable queue of `regwarden serve`: the receiver enqueues each webhook body, the
    worker pool (`receiver.WorkerPool`) leases rows under its owner id and heartbeats them,
    `service.py` schedules rechecks on it, `regwarden deadletters` lists and re-queues what
    failed for good. On AWS the SQS queue in front of each function plays this part.
    Semantics: `store/_sqlite_queue.py`."""

    def enqueue(
        self,
        source: str,
        body: bytes,
        content_type: str | None,
        *,
        now: datetime,
        not_before: datetime | None = None,
    ) -> int: ...

    def lease(
        self, *, now: datetime, owner: str, timeout: timedelta, limit: int = 1
    ) -> list[QueuedEvent]: ...

    def heartbeat(self, owner: str, ids: Collection[int], *, now: datetime) -> list[int]: ...

    def release_owner(self, owner: str) -> int: ...

    def complete(
        self, event_id: int, *, now: datetime, error: str | None = None, owner: str | None = None
    ) -> bool: ...

    def retry_at(
        self, event_id: int, *, at: datetime, error: str, owner: str | None = None
    ) -> bool: ...

    def pending_count(self) -> int: ...

    def oldest_due(self, *, now: datetime) -> datetime | None: ...

    def probe(self, *, timeout: float) -> None:
        """Raise unless the queue could be worked on now (`serve`'s /readyz)."""
        ...

    def dead_letter_events(self, ids: Collection[int] | None = None) -> list[DeadLetter]: ...

    def requeue_dead(self, ids: Collection[int]) -> list[int]: ...

    def close(self) -> None: ...
