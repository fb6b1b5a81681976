"""PostgreSQL ledger and work queue: `--ledger postgresql://USER@HOST[:PORT]/DB?…`.

One database shared by any number of `serve` replicas. It keeps every promise of the SQLite
ledger (`_sqlite.py`, `_sqlite_queue.py`), by the same means a server database offers:

- `commit_outcome` is one transaction: the delivery marker first, with `INSERT … ON
  CONFLICT DO UPDATE … WHERE expired`, so of concurrent commits of one delivery (two
  replicas handling a redelivered event) exactly one writes; the others find the marker
  and roll back having written nothing. Outbox keys are inserted in sorted order so two
  outcomes sharing alerts never deadlock on each other.
- `seen_delivery` and `begin_action` are single conditional statements.
- `lease` is `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED LIMIT n)`: workers in any
  number of processes lease at the same time, each row to one of them; a row whose
  holder's heartbeat went stale is taken over like a free one.
- `enqueue` sends `NOTIFY regwarden_queue` (payload: the schema) in its transaction, so
  it is delivered when the row is visible; `wait_for_work` LISTENs on a connection of its
  own and returns when a notice for this schema arrives.
- `exclusive(name)` is a session advisory lock on a pooled connection for the `with`
  block: held by one process at a time, released when the block ends or the process dies
  (its connection closes).

psycopg 3 (the `postgres` extra) is imported only when a PostgreSQL URL is opened. The
pool checks a connection before lending it, so after a database restart the next call gets
a fresh connection; a transaction under way when the server went down is lost whole (the
server rolls it back) and its caller gets the psycopg error — as a crash before commit.

Every method takes `now` from the caller; nothing here reads the clock.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ._access import AccessWindow, PullTally, check_tally, check_window_key
from ._outcome import (
    OUTBOX_TTL,
    DeliveryOutcome,
    OutboxItem,
    OutboxRecord,
    Outcome,
    VerdictRecord,
    findings_from,
    findings_json,
)
from ._postgres_schema import SchemaTooNew, advisory_key, migrate
from ._records import ActionRecord, QuarantineRecord
from ._sqlite_queue import DeadLetter, QueuedEvent
from ._urls import ParsedUrl

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["CHANNEL", "PostgresLedger", "open_postgres"]

CHANNEL = "regwarden_queue"
"""The NOTIFY channel `enqueue` announces work on (the payload names the schema)."""
DEFAULT_SCHEMA = "regwarden"
DEFAULT_POOL = 10
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
"""Schema names taken: unquoted PostgreSQL identifiers, so no quoting anywhere."""


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return when.astimezone(UTC)


def _opt(when: datetime | None) -> datetime | None:
    return None if when is None else _utc(when)


class PostgresLedger:
    """Ledger and `EventQueue` in one PostgreSQL schema, through a connection pool."""

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = DEFAULT_POOL,
        display: str = "postgresql",
        source: str = "",
        timeout: float = 30.0,
    ) -> None:
        """`conninfo`: a libpq connection string (with its password, never logged);
        `display`: the URL as messages show it; `source`: the URL as given (no password:
        the URL never holds one), so `open_queue` knows the same URL names this ledger."""
        import psycopg
        from psycopg_pool import ConnectionPool

        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema {schema!r} is not a lowercase PostgreSQL name")
        self.schema = schema
        self.display = display
        self.source = source
        # search_path: this schema's tables without naming it; UTC: times come back aware
        options = f"-c search_path={schema} -c TimeZone=UTC"
        self._conninfo = psycopg.conninfo.make_conninfo(conninfo, options=options)
        with psycopg.connect(self._conninfo, connect_timeout=int(timeout)) as first:
            self.migrated = migrate(first, schema)
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,  # a dead connection is replaced on loan
            timeout=timeout,
            name=f"regwarden-{schema}",
            open=False,
        )
        self._pool.open(wait=True, timeout=timeout)
        self._listener: psycopg.Connection[tuple[Any, ...]] | None = None
        self._listen_lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.display

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._conn() as conn:
            return conn.execute(query.encode(), params).fetchall()

    def close(self) -> None:
        with self._listen_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self._pool.close()

    # -- deliveries (idempotency) ---------------------------------------------------------

    def seen_delivery(self, delivery_id: str, *, now: datetime, ttl: timedelta) -> bool:
        """Record a delivery id; True if it was already recorded and not expired."""
        now = _utc(now)
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO deliveries VALUES (%s, %s, %s) ON CONFLICT (delivery_id) DO UPDATE "
                "SET received_at = excluded.received_at, expires_at = excluded.expires_at "
                "WHERE deliveries.expires_at <= excluded.received_at RETURNING 1",
                (delivery_id, now, now + ttl),
            ).fetchone()
        return row is None  # nothing written: an unexpired marker was there

    def forget_delivery(self, delivery_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM deliveries WHERE delivery_id = %s", (delivery_id,))

    def expire_deliveries(self, *, now: datetime) -> int:
        with self._tx() as db:
            return db.execute(
                "DELETE FROM deliveries WHERE expires_at <= %s", (_utc(now),)
            ).rowcount

    # -- outcomes --------------------------------------------------------------------------

    def delivery_outcome(self, delivery_id: str, *, now: datetime) -> DeliveryOutcome | None:
        rows = self._rows(
            "SELECT handled_at, recheck_at, recheck_image FROM delivery_outcomes "
            "WHERE delivery_id = %s AND expires_at > %s",
            (delivery_id, _utc(now)),
        )
        if not rows:
            return None
        handled_at, recheck_at, recheck_image = rows[0]
        return DeliveryOutcome(delivery_id, handled_at, recheck_at, recheck_image)

    def commit_outcome(
        self, outcome: Outcome, *, now: datetime, ttl: timedelta
    ) -> list[str] | None:
        o = outcome
        now = _utc(now)
        added: set[str] = set()
        with self._conn() as db, db.transaction():
            if o.delivery_id is not None:
                # the marker first: a concurrent commit of the same delivery waits here
                # on the key, then finds it and writes nothing
                won = db.execute(
                    "INSERT INTO delivery_outcomes VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (delivery_id) DO UPDATE SET handled_at = excluded.handled_at,"
                    " expires_at = excluded.expires_at, recheck_at = excluded.recheck_at, "
                    "recheck_image = excluded.recheck_image "
                    "WHERE delivery_outcomes.expires_at <= excluded.handled_at RETURNING 1",
                    (o.delivery_id, now, now + ttl, _opt(o.recheck_at), o.recheck_image),
                ).fetchone()
                if won is None:  # handled already: this transaction wrote nothing
                    return None
            if o.verdict is not None:
                db.execute(
                    "INSERT INTO verdicts (registry, repository, digest, outcome, at, findings) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (registry, repository, digest) "
                    "DO UPDATE SET outcome = excluded.outcome, at = excluded.at, "
                    "findings = excluded.findings",
                    (o.registry, o.repository, o.digest, o.verdict, now, findings_json(o.findings)),
                )
                db.execute(
                    "INSERT INTO verdict_log (delivery_id, registry, repository, digest, "
                    "outcome, at) VALUES (%s, %s, %s, %s, %s, %s)",
                    (o.delivery_id, o.registry, o.repository, o.digest, o.verdict, now),
                )
            by_key = {item.key: item for item in o.alerts}
            for key in sorted(by_key):  # one lock order for every transaction
                item = by_key[key]
                db.execute("DELETE FROM outbox WHERE key = %s AND expires_at <= %s", (key, now))
                if db.execute(
                    "INSERT INTO outbox (key, channel, alert, created_at, expires_at, "
                    "next_attempt) VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (key) DO NOTHING RETURNING 1",
                    (key, item.channel, item.alert, now, now + OUTBOX_TTL, now),
                ).fetchone():
                    added.add(key)
        return [key for key in by_key if key in added]  # in the outcome's order

    def verdict_log(
        self, registry: str, repository: str, digest: str
    ) -> list[tuple[str | None, str, datetime]]:
        """(delivery id, outcome, at) of every verdict committed for a digest, oldest first."""
        rows = self._rows(
            "SELECT delivery_id, outcome, at FROM verdict_log WHERE registry = %s "
            "AND repository = %s AND digest = %s ORDER BY at, seq",
            (registry, repository, digest),
        )
        return [(d, str(o), at) for d, o, at in rows]

    # -- alert outbox ----------------------------------------------------------------------

    def outbox_pending(self, *, now: datetime, limit: int = 100) -> list[OutboxItem]:
        rows = self._rows(
            "SELECT key, channel, alert, attempts, next_attempt, error FROM outbox "
            "WHERE sent_at IS NULL AND next_attempt <= %s ORDER BY next_attempt, key LIMIT %s",
            (_utc(now), limit),
        )
        return [OutboxItem(k, c, a, int(n), at, e) for k, c, a, n, at, e in rows]

    def outbox_sent(self, key: str, *, now: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET sent_at = %s, attempts = attempts + 1, error = NULL "
                "WHERE key = %s",
                (_utc(now), key),
            )

    def outbox_retry(self, key: str, *, at: datetime, error: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET next_attempt = %s, attempts = attempts + 1, error = %s "
                "WHERE key = %s",
                (_utc(at), error, key),
            )

    def outbox_for(self, digest: str) -> list[OutboxRecord]:
        """Every outbox row whose alert names `digest`, sent or not, oldest first."""
        rows = self._rows(
            "SELECT key, channel, alert, attempts, next_attempt, error, created_at, sent_at "
            "FROM outbox WHERE strpos(alert, %s) > 0 ORDER BY created_at, key",
            (digest,),
        )
        return [
            OutboxRecord(OutboxItem(k, c, a, int(n), at, e), created, sent)
            for k, c, a, n, at, e, created, sent in rows
        ]

    def outbox_unsent(self) -> int:
        """Alerts not yet delivered (due or backing off)."""
        return int(self._rows("SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0][0])

    # -- images and tags --------------------------------------------------------------------

    def record_push(
        self, registry: str, repository: str, digest: str, tags: tuple[str, ...], *, now: datetime
    ) -> datetime:
        now = _utc(now)
        with self._tx() as db:
            # DO UPDATE (to itself) so the row, new or old, comes back in one statement
            row = db.execute(
                "INSERT INTO images (registry, repository, digest, first_seen) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (registry, repository, digest) "
                "DO UPDATE SET first_seen = images.first_seen RETURNING first_seen",
                (registry, repository, digest, now),
            ).fetchone()
            for tag in tags:
                db.execute(
                    "INSERT INTO tag_history VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (registry, repository, tag, digest, now),
                )
        assert row is not None
        first_seen: datetime = row[0]
        return first_seen

    def record_pull(self, registry: str, repository: str, digest: str, *, now: datetime) -> None:
        now = _utc(now)
        with self._tx() as db:
            db.execute(
                "INSERT INTO images (registry, repository, digest, first_seen, last_pulled) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (registry, repository, digest) "
                "DO UPDATE SET last_pulled = greatest(images.last_pulled, excluded.last_pulled)",
                (registry, repository, digest, now, now),
            )

    def image_times(
        self, registry: str, repository: str
    ) -> dict[str, tuple[datetime, datetime | None]]:
        rows = self._rows(
            "SELECT digest, first_seen, last_pulled FROM images WHERE registry = %s "
            "AND repository = %s",
            (registry, repository),
        )
        return {d: (f, p) for d, f, p in rows}

    def previous_digest(
        self, registry: str, repository: str, tag: str, *, before: str
    ) -> str | None:
        rows = self._rows(
            "SELECT digest FROM tag_history WHERE registry = %s AND repository = %s AND tag = %s "
            "AND digest <> %s ORDER BY seen_at DESC, digest DESC LIMIT 1",
            (registry, repository, tag, before),
        )
        return str(rows[0][0]) if rows else None

    def tags_for(self, registry: str, repository: str, digest: str) -> list[str]:
        rows = self._rows(
            "SELECT tag FROM tag_history t WHERE registry = %s AND repository = %s "
            "AND digest = %s AND seen_at = (SELECT max(seen_at) FROM tag_history u "
            "WHERE u.registry = t.registry AND u.repository = t.repository AND u.tag = t.tag) "
            "ORDER BY tag",
            (registry, repository, digest),
        )
        return [str(r[0]) for r in rows]

    def tag_digests(self, registry: str, repository: str, tag: str) -> list[str]:
        rows = self._rows(
            "SELECT digest FROM tag_history WHERE registry = %s AND repository = %s "
            "AND tag = %s ORDER BY seen_at, digest",
            (registry, repository, tag),
        )
        return [str(r[0]) for r in rows]

    def tags_for_push(
        self, registry: str, repository: str, digest: str, tag: str | None
    ) -> tuple[list[str], list[str]]:
        """Two indexed queries: each reads only the rows it needs."""
        history = self.tag_digests(registry, repository, tag) if tag is not None else []
        return self.tags_for(registry, repository, digest), history

    def tag_history(self, registry: str, repository: str) -> list[tuple[str, str, datetime]]:
        rows = self._rows(
            "SELECT tag, digest, seen_at FROM tag_history WHERE registry = %s "
            "AND repository = %s ORDER BY seen_at, tag, digest",
            (registry, repository),
        )
        return [(str(t), str(d), s) for t, d, s in rows]

    # -- verdicts ---------------------------------------------------------------------------

    def record_verdict(
        self, registry: str, repository: str, digest: str, outcome: str, *, now: datetime
    ) -> None:
        with self._tx() as db:
            db.execute(  # no findings: those there were the replaced verdict's
                "INSERT INTO verdicts (registry, repository, digest, outcome, at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (registry, repository, digest) "
                "DO UPDATE SET outcome = excluded.outcome, at = excluded.at, findings = NULL",
                (registry, repository, digest, outcome, _utc(now)),
            )

    def last_verdict(self, registry: str, repository: str, digest: str) -> str | None:
        rows = self._rows(
            "SELECT outcome FROM verdicts WHERE registry = %s AND repository = %s AND digest = %s",
            (registry, repository, digest),
        )
        return str(rows[0][0]) if rows else None

    def repository_verdicts(self, registry: str, repository: str) -> dict[str, VerdictRecord]:
        """digest → last verdict (outcome, when, findings) of one repository, one query."""
        rows = self._rows(
            "SELECT digest, outcome, at, findings FROM verdicts WHERE registry = %s "
            "AND repository = %s",
            (registry, repository),
        )
        return {str(d): VerdictRecord(str(o), at, findings_from(f)) for d, o, at, f in rows}

    # -- actions -----------------------------------------------------------------------------

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
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO actions (key, at, registry, repository, digest, kind, status, reason, "
                "state) VALUES (%s, %s, %s, %s, %s, %s, 'intent', %s, %s) "
                "ON CONFLICT (key) DO NOTHING "
                "RETURNING key, at, registry, repository, digest, kind, status, reason, state",
                (key, _utc(now), registry, repository, digest, kind, reason, json.dumps(state)),
            ).fetchone()
            if row is None:  # recorded before: a retry resumes it
                row = db.execute(
                    "SELECT key, at, registry, repository, digest, kind, status, reason, state "
                    "FROM actions WHERE key = %s",
                    (key,),
                ).fetchone()
        assert row is not None
        return self._action(row)

    def finish_action(self, key: str, *, status: str, state: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE actions SET status = %s, state = coalesce(%s, state) WHERE key = %s",
                (status, None if state is None else json.dumps(state), key),
            )

    def action(self, key: str) -> ActionRecord | None:
        rows = self._rows(
            "SELECT key, at, registry, repository, digest, kind, status, reason, state "
            "FROM actions WHERE key = %s",
            (key,),
        )
        return self._action(rows[0]) if rows else None

    def actions(self, *, status: str | None = None) -> list[ActionRecord]:
        rows = self._rows(
            "SELECT key, at, registry, repository, digest, kind, status, reason, state "
            "FROM actions WHERE %s::text IS NULL OR status = %s ORDER BY id",
            (status, status),
        )
        return [self._action(r) for r in rows]

    @staticmethod
    def _action(row: tuple[Any, ...]) -> ActionRecord:
        key, at, reg, repo, digest, kind, status, reason, state = row
        return ActionRecord(key, at, reg, repo, digest, kind, status, reason, json.loads(state))

    # -- quarantine --------------------------------------------------------------------------

    def record_quarantine(self, rec: QuarantineRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO quarantine (registry, repository, digest, strategy, location, tags, "
                "reason, quarantined_at, released_at) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (registry, repository, digest) "
                "DO UPDATE SET strategy = excluded.strategy, location = excluded.location, "
                "tags = excluded.tags, reason = excluded.reason, "
                "quarantined_at = excluded.quarantined_at, released_at = excluded.released_at",
                (
                    rec.registry,
                    rec.repository,
                    rec.digest,
                    rec.strategy,
                    rec.location,
                    json.dumps(list(rec.tags)),
                    rec.reason,
                    _utc(rec.quarantined_at),
                    _opt(rec.released_at),
                ),
            )

    def quarantined(self, registry: str, repository: str, digest: str) -> QuarantineRecord | None:
        rows = self._rows(
            "SELECT registry, repository, digest, strategy, location, tags, reason, "
            "quarantined_at, released_at FROM quarantine WHERE registry = %s "
            "AND repository = %s AND digest = %s",
            (registry, repository, digest),
        )
        return self._quarantine(rows[0]) if rows else None

    def quarantines(self, *, released: bool | None = None) -> list[QuarantineRecord]:
        rows = self._rows(
            "SELECT registry, repository, digest, strategy, location, tags, reason, "
            "quarantined_at, released_at FROM quarantine "
            "WHERE %s::boolean IS NULL OR (released_at IS NOT NULL) = %s "
            "ORDER BY quarantined_at, registry, repository, digest",
            (released, released),
        )
        return [self._quarantine(r) for r in rows]

    @staticmethod
    def _quarantine(row: tuple[Any, ...]) -> QuarantineRecord:
        reg, repo, dig, strategy, location, tags, reason, q_at, r_at = row
        return QuarantineRecord(
            reg, repo, dig, strategy, location, tuple(json.loads(tags)), reason, q_at, r_at
        )

    def mark_released(self, registry: str, repository: str, digest: str, *, now: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE quarantine SET released_at = %s WHERE registry = %s "
                "AND repository = %s AND digest = %s",
                (_utc(now), registry, repository, digest),
            )

    # -- access monitoring (pull tallies, tracking, alert windows) ---------------------------

    def record_pulls(self, tallies: Sequence[PullTally]) -> None:
        rows = [check_tally(t) for t in tallies]
        if not rows:
            return
        # one row per key, written in key order: two batches over the same images never
        # deadlock on each other
        latest: dict[tuple[str, str, str], datetime] = {}
        pulls: dict[tuple[str, str, str, str], tuple[datetime, int]] = {}
        for t in rows:
            at = _utc(t.last_pulled)
            image = (t.registry, t.repository, t.digest)
            latest[image] = max(latest.get(image, at), at)
            key = (*image, t.principal)
            last, count = pulls.get(key, (at, 0))
            pulls[key] = (max(last, at), count + t.count)
        with self._tx() as db, db.cursor() as cur:
            cur.executemany(
                b"INSERT INTO images (registry, repository, digest, first_seen, last_pulled) "
                b"VALUES (%s, %s, %s, %s, %s) ON CONFLICT (registry, repository, digest) "
                b"DO UPDATE SET last_pulled = greatest(images.last_pulled, excluded.last_pulled)",
                [(*k, at, at) for k, at in sorted(latest.items())],
            )
            cur.executemany(
                b"INSERT INTO pulls VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT "
                b"(registry, repository, digest, principal) DO UPDATE SET "
                b"last_pulled = greatest(pulls.last_pulled, excluded.last_pulled), "
                b"count = pulls.count + excluded.count",
                [(*k, at, n) for k, (at, n) in sorted(pulls.items())],
            )

    def pull_tallies(self, registry: str, repository: str) -> list[PullTally]:
        rows = self._rows(
            "SELECT digest, principal, last_pulled, count FROM pulls WHERE registry = %s "
            "AND repository = %s ORDER BY digest, principal",
            (registry, repository),
        )
        return [PullTally(registry, repository, d, p, at, int(n)) for d, p, at, n in rows]

    def start_pull_tracking(self, registry: str, repository: str, *, now: datetime) -> datetime:
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO pull_tracking VALUES (%s, %s, %s) ON CONFLICT "
                "(registry, repository) DO UPDATE SET "
                "since = least(pull_tracking.since, excluded.since) RETURNING since",
                (registry, repository, _utc(now)),
            ).fetchone()
        assert row is not None
        since: datetime = row[0]
        return since

    def pull_tracking_since(self, registry: str, repository: str) -> datetime | None:
        rows = self._rows(
            "SELECT since FROM pull_tracking WHERE registry = %s AND repository = %s",
            (registry, repository),
        )
        return rows[0][0] if rows else None

    def open_access_window(
        self, window: AccessWindow, *, replacing: datetime | None = None
    ) -> bool:
        w = window
        values = (
            w.registry,
            w.repository,
            w.digest,
            _utc(w.opened_at),
            _utc(w.closes_at),
            w.count,
            _opt(w.last_seen),
            w.alert,
        )
        with self._tx() as db:
            if replacing is None:
                cur = db.execute(
                    "INSERT INTO access_windows VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (key) DO NOTHING",
                    (check_window_key(w.key), *values),
                )
            else:
                cur = db.execute(
                    "UPDATE access_windows SET registry = %s, repository = %s, digest = %s, "
                    "opened_at = %s, closes_at = %s, count = %s, last_seen = %s, alert = %s "
                    "WHERE key = %s AND opened_at = %s",
                    (*values, w.key, _utc(replacing)),
                )
            return cur.rowcount == 1

    _WINDOW_COLUMNS = (
        "SELECT key, registry, repository, digest, opened_at, closes_at, count, last_seen, "
        "alert FROM access_windows"
    )

    def access_window(self, key: str) -> AccessWindow | None:
        rows = self._rows(self._WINDOW_COLUMNS + " WHERE key = %s", (key,))
        return self._window(rows[0]) if rows else None

    def count_access(self, key: str, *, opened_at: datetime, add: int, last_seen: datetime) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE access_windows SET count = count + %s, "
                "last_seen = greatest(last_seen, %s) WHERE key = %s AND opened_at = %s",
                (add, _utc(last_seen), key, _utc(opened_at)),
            )
            return cur.rowcount == 1

    def access_windows_due(self, *, now: datetime, limit: int = 100) -> list[AccessWindow]:
        rows = self._rows(
            self._WINDOW_COLUMNS + " WHERE closes_at <= %s ORDER BY closes_at, key LIMIT %s",
            (_utc(now), limit),
        )
        return [self._window(r) for r in rows]

    def drop_access_window(self, key: str, *, opened_at: datetime) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM access_windows WHERE key = %s AND opened_at = %s",
                (key, _utc(opened_at)),
            )
            return cur.rowcount == 1

    @staticmethod
    def _window(row: tuple[Any, ...]) -> AccessWindow:
        key, reg, repo, digest, opened, closes, count, last_seen, alert = row
        return AccessWindow(key, reg, repo, digest, opened, closes, int(count), last_seen, alert)

    # -- the work queue ----------------------------------------------------------------------

    def enqueue(
        self,
        source: str,
        body: bytes,
        content_type: str | None,
        *,
        now: datetime,
        not_before: datetime | None = None,
    ) -> int:
        """Persist an event; with `not_before`, it is handed out no earlier than that. An
        event due now is announced to every replica's `wait_for_work` once committed."""
        now, later = _utc(now), _opt(not_before)
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO queue (source, body, content_type, received_at, not_before) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (source, body, content_type, now, later),
            ).fetchone()
            if later is None or later <= now:
                db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.schema))
        assert row is not None
        return int(row[0])

    def lease(
        self, *, now: datetime, owner: str, timeout: timedelta, limit: int = 1
    ) -> list[QueuedEvent]:
        """Lease up to `limit` due events to `owner`, oldest first: those nobody holds, and
        those whose holder's last heartbeat is `timeout` or more old. Rows another worker is
        leasing at this moment are skipped, not waited for."""
        if timeout <= timedelta(0):
            raise ValueError(f"lease timeout must be positive, got {timeout}")
        now = _utc(now)
        with self._tx() as db:
            rows = db.execute(
                "UPDATE queue q SET owner = %s, heartbeat = %s, attempts = q.attempts + 1 "
                "FROM (SELECT id, owner FROM queue WHERE done_at IS NULL "
                "AND (not_before IS NULL OR not_before <= %s) "
                "AND (owner IS NULL OR heartbeat IS NULL OR heartbeat <= %s) "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) AS was "
                "WHERE q.id = was.id RETURNING q.id, q.source, q.body, q.content_type, "
                "q.received_at, q.attempts, was.owner",
                (owner, now, now, now - timeout, limit),
            ).fetchall()
        return [
            QueuedEvent(int(i), str(s), bytes(b), ct, rec, int(n), prev)
            for i, s, b, ct, rec, n, prev in sorted(rows, key=lambda r: int(r[0]))
        ]

    def heartbeat(self, owner: str, ids: Collection[int], *, now: datetime) -> list[int]:
        if not ids:
            return []
        with self._tx() as db:
            rows = db.execute(
                "UPDATE queue SET heartbeat = %s WHERE owner = %s AND done_at IS NULL "
                "AND id = ANY(%s) RETURNING id",
                (_utc(now), owner, [int(i) for i in ids]),
            ).fetchall()
        return sorted(int(r[0]) for r in rows)

    def release_owner(self, owner: str) -> int:
        with self._tx() as db:
            return db.execute(
                "UPDATE queue SET owner = NULL, heartbeat = NULL "
                "WHERE owner = %s AND done_at IS NULL",
                (owner,),
            ).rowcount

    def complete(
        self, event_id: int, *, now: datetime, error: str | None = None, owner: str | None = None
    ) -> bool:
        with self._tx() as db:
            return (
                db.execute(
                    "UPDATE queue SET done_at = %s, error = %s, owner = NULL, heartbeat = NULL "
                    "WHERE id = %s AND done_at IS NULL AND (%s::text IS NULL OR owner = %s)",
                    (_utc(now), error, event_id, owner, owner),
                ).rowcount
                > 0
            )

    def retry_at(
        self, event_id: int, *, at: datetime, error: str, owner: str | None = None
    ) -> bool:
        with self._tx() as db:
            return (
                db.execute(
                    "UPDATE queue SET not_before = %s, error = %s, owner = NULL, heartbeat = NULL "
                    "WHERE id = %s AND done_at IS NULL AND (%s::text IS NULL OR owner = %s)",
                    (_utc(at), error, event_id, owner, owner),
                ).rowcount
                > 0
            )

    def pending_count(self) -> int:
        return int(self._rows("SELECT count(*) FROM queue WHERE done_at IS NULL")[0][0])

    def oldest_due(self, *, now: datetime) -> datetime | None:
        rows = self._rows(
            "SELECT min(greatest(received_at, not_before)) FROM queue "
            "WHERE done_at IS NULL AND greatest(received_at, not_before) <= %s",
            (_utc(now),),
        )
        found: datetime | None = rows[0][0]
        return found

    def probe(self, *, timeout: float) -> None:
        """Raise unless a connection can be had and the queue read within `timeout` s."""
        with self._pool.connection(timeout=timeout) as conn, conn.transaction():
            conn.execute(
                "SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout * 1000)}",)
            )
            conn.execute("SELECT 1 FROM queue LIMIT 1").fetchall()

    def dead_letters(self) -> list[tuple[int, str, str]]:
        """(id, source, error) of events that failed for good."""
        rows = self._rows(
            "SELECT id, source, error FROM queue WHERE done_at IS NOT NULL "
            "AND error IS NOT NULL ORDER BY id"
        )
        return [(int(i), str(s), str(e)) for i, s, e in rows]

    def dead_letter_events(self, ids: Collection[int] | None = None) -> list[DeadLetter]:
        rows = self._rows(
            "SELECT id, source, body, content_type, received_at, done_at, attempts, error "
            "FROM queue WHERE done_at IS NOT NULL AND error IS NOT NULL "
            "AND (%s::bigint[] IS NULL OR id = ANY(%s)) ORDER BY id",
            (None, None) if ids is None else ([int(i) for i in ids],) * 2,
        )
        return [
            DeadLetter(int(i), str(s), bytes(b), ct, rec, failed, int(n), str(e))
            for i, s, b, ct, rec, failed, n, e in rows
        ]

    def requeue_dead(self, ids: Collection[int]) -> list[int]:
        with self._tx() as db:
            rows = db.execute(
                "UPDATE queue SET done_at = NULL, attempts = 0, not_before = NULL, owner = NULL, "
                "heartbeat = NULL WHERE done_at IS NOT NULL AND error IS NOT NULL "
                "AND id = ANY(%s) RETURNING id",
                ([int(i) for i in ids],),
            ).fetchall()
            if rows:
                db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.schema))
        return sorted(int(r[0]) for r in rows)

    # -- replicas: wake-ups and a lock across processes -----------------------------------

    def wait_for_work(self, timeout: float) -> bool:
        """Block until some process enqueued work on this schema (True) or `timeout`
        seconds passed (False). LISTENs on a connection of its own, kept between calls so
        no notice is missed between them; psycopg.Error when the database cannot be
        reached (the next call connects again)."""
        import psycopg

        deadline = time.monotonic() + timeout
        with self._listen_lock:
            if self._listener is None or self._listener.closed:
                conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
                conn.execute(f"LISTEN {CHANNEL}".encode())
                self._listener = conn
            try:
                while (left := deadline - time.monotonic()) > 0:
                    for notice in self._listener.notifies(timeout=left, stop_after=1):
                        if notice.payload == self.schema:
                            return True
                return False
            except psycopg.Error:
                self._listener.close()
                self._listener = None
                raise

    @contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """Try to hold the lock `name` across every process on this schema, without
        waiting: True for the block when held (released at its end, or with this
        process's connection), False when another holds it."""
        import psycopg

        key = advisory_key("regwarden-lock", self.schema, name)
        with self._conn() as conn:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            held = bool(row and row[0])
            try:
                yield held
            finally:
                if held:
                    # a connection that died took the lock with it: nothing to undo
                    with suppress(psycopg.Error):
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


# -- the URL ------------------------------------------------------------------------------

_PARAMS = ("password_file", "password", "sslmode", "sslrootcert", "schema", "pool_size")


def open_postgres(url: ParsedUrl) -> PostgresLedger:
    """`postgresql://USER@HOST[:PORT]/DATABASE[?password_file=PATH|password=secret://NAME
    &sslmode=…&sslrootcert=PATH&schema=NAME&pool_size=N]` (also `postgres://`): the
    PostgreSQL ledger, which is also the work queue. The password is never in the URL's
    text: a file (read at start) or a `secret://` name; UsageError (exit 2) otherwise, or
    when the database cannot be reached or refuses the login."""
    from urllib.parse import unquote, urlsplit

    hint = "postgresql://USER@HOST:PORT/DATABASE?password_file=PATH (or password=secret://NAME)"
    url.only_params(*_PARAMS)
    try:
        import psycopg
        from psycopg.conninfo import make_conninfo
    except ImportError:
        raise url.refuse(
            "psycopg is not installed", hint="pip install 'regwarden[postgres]'"
        ) from None
    parts = urlsplit(f"postgresql://{url.location}")
    try:
        port = parts.port
    except ValueError:
        raise url.refuse("the port is not a number", hint=hint) from None
    if parts.password is not None:
        raise url.refuse("a password in the URL: put it in a file or secret://", hint=hint)
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database or "/" in database:
        raise url.refuse("it needs a host and a database", hint=hint)
    password = _password(url)
    schema = url.params.get("schema", DEFAULT_SCHEMA)
    if not _SCHEMA_NAME.fullmatch(schema):
        raise url.refuse(
            f"schema {schema!r} is not a PostgreSQL name",
            hint="lowercase letters, digits and _, not first a digit, up to 63",
        )
    pool = url.params.get("pool_size", str(DEFAULT_POOL))
    if not pool.isdigit() or not 1 <= int(pool) <= 1000:
        raise url.refuse(f"pool_size {pool!r} is not a number from 1 to 1000")
    fields: dict[str, Any] = {
        "host": parts.hostname,
        "port": port,
        "dbname": database,
        "user": unquote(parts.username) if parts.username else None,  # libpq: the OS user
        "password": password,
        "sslmode": url.params.get("sslmode"),
        "sslrootcert": url.params.get("sslrootcert"),
        "application_name": "regwarden",
    }
    conninfo = make_conninfo("", **{k: v for k, v in fields.items() if v is not None})
    from ._urls import display_url

    try:
        return PostgresLedger(
            conninfo,
            schema=schema,
            pool_size=int(pool),
            display=display_url(url.text),
            source=url.text,
        )
    except SchemaTooNew as exc:
        raise url.refuse(str(exc), hint="run the regwarden that migrated it, or newer") from None
    except psycopg.OperationalError as exc:
        cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise url.refuse(f"cannot connect: {cause}", hint=hint) from None


def _password(url: ParsedUrl) -> str | None:
    given = [name for name in ("password_file", "password") if name in url.params]
    if len(given) > 1:
        raise url.refuse("give password_file or password, not both")
    if "password_file" in url.params:
        from pathlib import Path

        path = Path(url.params["password_file"]).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise url.refuse(f"cannot read password_file {path}: {exc.strerror or exc}") from None
        password = text.removesuffix("\n").removesuffix("\r")
        if not password:
            raise url.refuse(f"password_file {path} is empty")
        return password
    if "password" in url.params:
        value = url.params["password"]
        if not value.startswith("secret://"):
            raise url.refuse(
                "a password in the URL: put it in a file or secret://",
                hint="password=secret://NAME (from REGWARDEN_SECRET_NAME) or password_file=PATH",
            )
        import os

        from ..errors import UsageError
        from ..policy import resolve_secret

        try:
            return resolve_secret(value, os.environ)
        except UsageError as exc:  # said of this URL, with the variable to set
            raise url.refuse(str(exc), hint=exc.hint) from None
    return None
