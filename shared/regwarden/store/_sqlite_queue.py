"""The durable event queue of `regwarden serve`, in the ledger's SQLite file.

A row is pending until it is done. It is handed out once its `not_before` is due (a
recheck's deadline, a retry's backoff; NULL = at once) and nobody holds it. A holder is a
lease: an `owner` (one process: `serve --instance`, by default host:port) and the time of
its last `heartbeat`. The owner refreshes the heartbeat while it works, so only the lease of
an owner that died or hung goes stale; after `timeout` any worker may take it over. A
restarted process knows it is no longer working on anything, so it frees its own leases at
once (`release_owner`) instead of waiting them out.

A row that failed for good is done with an error: a dead letter, which an operator can
re-queue (`regwarden deadletters retry`).

Every method takes `now` from the caller; nothing here reads the clock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

__all__ = ["DeadLetter", "QueueMixin", "QueuedEvent", "migrate_queue"]

_QUEUE_TABLE = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL, body BLOB NOT NULL, content_type TEXT,
    received_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    not_before TEXT, owner TEXT, heartbeat TEXT,
    done_at TEXT, error TEXT
)
"""
_QUEUE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS queue_pending ON queue (done_at, not_before)",
    # release_owner at start-up; done rows (the bulk of the table) are never leased
    "CREATE INDEX IF NOT EXISTS queue_owner ON queue (owner) WHERE done_at IS NULL",
)


def _ts(when: datetime) -> str:
    # the same text form as the rest of the ledger: UTC, fixed width, so text order = time order
    if when.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def migrate_queue(db: sqlite3.Connection) -> None:
    """Create the queue table, or bring one written by an older regwarden up to date.

    Older ledgers had one `lease_until` column doing two jobs: the not-before time of a
    recheck or retry, and the expiry of a worker's lease. It becomes `not_before`; a row an
    older process held is then due when its old lease would have run out, as before.
    """
    db.execute("BEGIN IMMEDIATE")  # two processes opening one old file migrate it once
    try:
        columns = {str(r[1]) for r in db.execute("PRAGMA table_info(queue)")}
        if not columns:
            db.execute(_QUEUE_TABLE)
        else:
            if "not_before" not in columns and "lease_until" in columns:
                # renames it in the old (done_at, lease_until) index too
                db.execute("ALTER TABLE queue RENAME COLUMN lease_until TO not_before")
            for column in ("owner", "heartbeat"):
                if column not in columns:
                    db.execute(f"ALTER TABLE queue ADD COLUMN {column} TEXT")
        for ddl in _QUEUE_INDEXES:
            db.execute(ddl)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    id: int
    source: str
    body: bytes
    content_type: str | None
    received_at: datetime
    attempts: int
    """Times it has been handed out, this one included (a lease lost in a crash counts)."""
    reclaimed_from: str | None = None
    """The owner whose stale lease this one replaced; None for a row nobody held."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event the receiver gave up on after its attempts ran out."""

    id: int
    source: str
    body: bytes
    content_type: str | None
    received_at: datetime
    failed_at: datetime
    attempts: int
    error: str


def _quote_path(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def _id_list(ids: Collection[int]) -> str:
    # one JSON array bound as a parameter (`IN (SELECT value FROM json_each(?))`), so the
    # SQL text stays constant whatever the number of ids
    return json.dumps([int(i) for i in ids])


class QueueMixin:
    """The queue methods of `SqliteLedger` (which provides the connection and transactions)."""

    if TYPE_CHECKING:
        path: Path

        def _conn(self) -> sqlite3.Connection: ...

        def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def _init_queue(self) -> None:
        migrate_queue(self._conn())

    def enqueue(
        self,
        source: str,
        body: bytes,
        content_type: str | None,
        *,
        now: datetime,
        not_before: datetime | None = None,
    ) -> int:
        """Persist an event; with `not_before`, it is handed out no earlier than that."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO queue (source, body, content_type, received_at, not_before) "
                "VALUES (?, ?, ?, ?, ?)",
                (source, body, content_type, _ts(now), _ts(not_before) if not_before else None),
            )
            return int(cur.lastrowid or 0)

    def lease(
        self, *, now: datetime, owner: str, timeout: timedelta, limit: int = 1
    ) -> list[QueuedEvent]:
        """Lease up to `limit` due events to `owner`, oldest first: those nobody holds, and
        those whose holder's last heartbeat is `timeout` or more old (it died or hung)."""
        if timeout <= timedelta(0):
            raise ValueError(f"lease timeout must be positive, got {timeout}")
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, source, body, content_type, received_at, attempts, owner FROM queue "
                "WHERE done_at IS NULL "
                "AND (not_before IS NULL OR not_before <= ?) "
                "AND (owner IS NULL OR heartbeat IS NULL OR heartbeat <= ?) "
                "ORDER BY id LIMIT ?",
                (_ts(now), _ts(now - timeout), limit),
            ).fetchall()
            db.executemany(
                "UPDATE queue SET owner = ?, heartbeat = ?, attempts = attempts + 1 WHERE id = ?",
                [(owner, _ts(now), r[0]) for r in rows],
            )
        return [
            QueuedEvent(
                int(r[0]),
                str(r[1]),
                bytes(r[2]),
                r[3],
                datetime.fromisoformat(r[4]),
                int(r[5]) + 1,
                r[6],
            )
            for r in rows
        ]

    def heartbeat(self, owner: str, ids: Collection[int], *, now: datetime) -> list[int]:
        """`owner` is still working on `ids`: refresh their leases. Returns the ids it still
        holds; one missing was finished, or taken over after its lease went stale."""
        if not ids:
            return []
        with self._tx() as db:
            db.execute(
                "UPDATE queue SET heartbeat = ? WHERE owner = ? AND done_at IS NULL "
                "AND id IN (SELECT value FROM json_each(?))",
                (_ts(now), owner, _id_list(ids)),
            )
            rows = db.execute(
                "SELECT id FROM queue WHERE owner = ? AND done_at IS NULL "
                "AND id IN (SELECT value FROM json_each(?)) ORDER BY id",
                (owner, _id_list(ids)),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def release_owner(self, owner: str) -> int:
        """Free every lease `owner` holds (its process restarted and works on none of them):
        they are handed out again at once. Returns how many were freed."""
        with self._tx() as db:
            return db.execute(
                "UPDATE queue SET owner = NULL, heartbeat = NULL "
                "WHERE owner = ? AND done_at IS NULL",
                (owner,),
            ).rowcount

    def complete(
        self, event_id: int, *, now: datetime, error: str | None = None, owner: str | None = None
    ) -> bool:
        """Done (with `error`: for good, a dead letter); the lease ends. With `owner`, only if
        it still holds the lease: a worker that lost it leaves the event to its new holder.
        Returns whether the row changed."""
        with self._tx() as db:
            return (
                db.execute(
                    "UPDATE queue SET done_at = ?, error = ?, owner = NULL, heartbeat = NULL "
                    "WHERE id = ? AND done_at IS NULL AND (? IS NULL OR owner = ?)",
                    (_ts(now), error, event_id, owner, owner),
                ).rowcount
                > 0
            )

    def retry_at(
        self, event_id: int, *, at: datetime, error: str, owner: str | None = None
    ) -> bool:
        """Hand the event out again at `at` (backoff after a failed attempt); the lease ends.
        With `owner`, only if it still holds the lease. Returns whether the row changed."""
        with self._tx() as db:
            return (
                db.execute(
                    "UPDATE queue SET not_before = ?, error = ?, owner = NULL, heartbeat = NULL "
                    "WHERE id = ? AND done_at IS NULL AND (? IS NULL OR owner = ?)",
                    (_ts(at), error, event_id, owner, owner),
                ).rowcount
                > 0
            )

    def pending_count(self) -> int:
        row = self._conn().execute("SELECT count(*) FROM queue WHERE done_at IS NULL").fetchone()
        return int(row[0])

    def oldest_due(self, *, now: datetime) -> datetime | None:
        """When the longest-waiting pending event became due (its receipt, or its
        `not_before` if later), among those due by `now`; None when nothing is due. A
        recheck planned for later is not waiting yet, so it does not count."""
        row = (
            self._conn()
            .execute(
                "SELECT min(due) FROM (SELECT CASE WHEN not_before IS NULL OR not_before < "
                "received_at THEN received_at ELSE not_before END AS due FROM queue "
                "WHERE done_at IS NULL) WHERE due <= ?",
                (_ts(now),),
            )
            .fetchone()
        )
        return datetime.fromisoformat(row[0]) if row and row[0] is not None else None

    def probe(self, *, timeout: float) -> None:
        """Raise (sqlite3.Error) unless the queue could take a write within `timeout`
        seconds: its file still there and a writer's lock to be had (BEGIN IMMEDIATE, then
        rolled back: nothing written). A fresh connection each time, opened without
        `create`, so a ledger file removed under a running server is not recreated empty
        and the probe never waits behind its own thread's long busy timeout."""
        path = str(self.path)
        if path == ":memory:":
            self._conn().execute("SELECT 1 FROM queue LIMIT 1").fetchall()
            return
        uri = f"file:{_quote_path(path)}?mode=rw"
        db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("SELECT 1 FROM queue LIMIT 1").fetchall()
            db.execute("ROLLBACK")
        finally:
            db.close()

    # -- dead letters ------------------------------------------------------------------------

    def dead_letters(self) -> list[tuple[int, str, str]]:
        """(id, source, error) of events that failed for good."""
        rows = self._conn().execute(
            "SELECT id, source, error FROM queue WHERE done_at IS NOT NULL AND error IS NOT NULL "
            "ORDER BY id"
        )
        return [(int(i), str(s), str(e)) for i, s, e in rows]

    def dead_letter_events(self, ids: Collection[int] | None = None) -> list[DeadLetter]:
        """Every dead letter in full (or those among `ids`), oldest first."""
        rows = self._conn().execute(
            "SELECT id, source, body, content_type, received_at, done_at, attempts, error "
            "FROM queue WHERE done_at IS NOT NULL AND error IS NOT NULL "
            "AND (? IS NULL OR id IN (SELECT value FROM json_each(?))) ORDER BY id",
            (None, None) if ids is None else (_id_list(ids), _id_list(ids)),
        )
        return list(self._dead(rows))

    def requeue_dead(self, ids: Collection[int]) -> list[int]:
        """Queue these dead letters again, due at once, as if new (attempts back to 0; the
        last error stays until the next attempt ends). Returns the ids re-queued: those of
        `ids` that were dead letters."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id FROM queue WHERE done_at IS NOT NULL AND error IS NOT NULL "
                "AND id IN (SELECT value FROM json_each(?)) ORDER BY id",
                (_id_list(ids),),
            ).fetchall()
            db.executemany(
                "UPDATE queue SET done_at = NULL, attempts = 0, not_before = NULL, owner = NULL, "
                "heartbeat = NULL WHERE id = ?",
                rows,
            )
        return [int(r[0]) for r in rows]

    @staticmethod
    def _dead(rows: sqlite3.Cursor) -> Iterator[DeadLetter]:
        for id_, source, body, content_type, received, failed, attempts, error in rows:
            yield DeadLetter(
                int(id_),
                str(source),
                bytes(body),
                content_type,
                datetime.fromisoformat(received),
                datetime.fromisoformat(failed),
                int(attempts),
                str(error),
            )
