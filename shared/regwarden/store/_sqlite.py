"""SQLite ledger. Every method takes `now` from the caller; nothing here reads the clock."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
from ._records import ActionRecord, QuarantineRecord
from ._sqlite_queue import QueueMixin
from ._urls import ParsedUrl

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    registry TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
    first_seen TEXT NOT NULL, last_pulled TEXT,
    PRIMARY KEY (registry, repository, digest)
);
CREATE TABLE IF NOT EXISTS tag_history (
    registry TEXT NOT NULL, repository TEXT NOT NULL, tag TEXT NOT NULL,
    digest TEXT NOT NULL, seen_at TEXT NOT NULL,
    PRIMARY KEY (registry, repository, tag, digest)
);
CREATE INDEX IF NOT EXISTS tag_history_by_tag ON tag_history (registry, repository, tag, seen_at);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY, received_at TEXT NOT NULL, expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT UNIQUE NOT NULL,
    at TEXT NOT NULL, registry TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
    kind TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS quarantine (
    registry TEXT NOT NULL, digest TEXT NOT NULL, repository TEXT NOT NULL,
    strategy TEXT NOT NULL, location TEXT NOT NULL, tags TEXT NOT NULL,
    reason TEXT NOT NULL, quarantined_at TEXT NOT NULL, released_at TEXT,
    PRIMARY KEY (registry, repository, digest)
);
CREATE TABLE IF NOT EXISTS verdicts (
    registry TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
    outcome TEXT NOT NULL, at TEXT NOT NULL, findings TEXT,
    PRIMARY KEY (registry, repository, digest)
);
CREATE TABLE IF NOT EXISTS verdict_log (
    delivery_id TEXT, registry TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
    outcome TEXT NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivery_outcomes (
    delivery_id TEXT PRIMARY KEY, handled_at TEXT NOT NULL, expires_at TEXT NOT NULL,
    recheck_at TEXT, recheck_image TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    key TEXT PRIMARY KEY, channel TEXT NOT NULL, alert TEXT NOT NULL,
    created_at TEXT NOT NULL, expires_at TEXT NOT NULL, sent_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt TEXT NOT NULL, error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sent_at, next_attempt);
CREATE TABLE IF NOT EXISTS pulls (
    registry TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
    principal TEXT NOT NULL, last_pulled TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (registry, repository, digest, principal)
);
CREATE TABLE IF NOT EXISTS pull_tracking (
    registry TEXT NOT NULL, repository TEXT NOT NULL, since TEXT NOT NULL,
    PRIMARY KEY (registry, repository)
);
CREATE TABLE IF NOT EXISTS access_windows (
    key TEXT PRIMARY KEY, registry TEXT NOT NULL, repository TEXT NOT NULL,
    digest TEXT NOT NULL, opened_at TEXT NOT NULL, closes_at TEXT NOT NULL,
    count INTEGER NOT NULL, last_seen TEXT, alert TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS access_windows_due ON access_windows (closes_at, key);
"""


def _ts(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class SqliteLedger(QueueMixin):
    """Ledger in one SQLite file. Thread-safe (one connection per thread)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path) if str(path) != ":memory:" else Path(":memory:")
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._shared: sqlite3.Connection | None = None
        self._conn().executescript(_SCHEMA)  # idempotent DDL; executescript commits itself
        _migrate_verdicts(self._conn())
        self._init_queue()  # the queue's table, migrated from older ledgers

    def _conn(self) -> sqlite3.Connection:
        if str(self.path) == ":memory:":  # one in-memory db shared by every thread
            if self._shared is None:
                self._shared = sqlite3.connect(
                    ":memory:", check_same_thread=False, isolation_level=None
                )
            return self._shared
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    # -- deliveries (idempotency) ---------------------------------------------------------

    def seen_delivery(self, delivery_id: str, *, now: datetime, ttl: timedelta) -> bool:
        """Record a delivery id; True if it was already recorded and not expired."""
        with self._tx() as db:
            row = db.execute(
                "SELECT expires_at FROM deliveries WHERE delivery_id = ?", (delivery_id,)
            ).fetchone()
            if row is not None and row[0] > _ts(now):
                return True
            db.execute(
                "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?)",
                (delivery_id, _ts(now), _ts(now + ttl)),
            )
            return False

    def forget_delivery(self, delivery_id: str) -> None:
        """Drop a delivery id so a retry of the same event is processed again."""
        with self._tx() as db:
            db.execute("DELETE FROM deliveries WHERE delivery_id = ?", (delivery_id,))

    def expire_deliveries(self, *, now: datetime) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM deliveries WHERE expires_at <= ?", (_ts(now),)).rowcount

    # -- outcomes (a delivery is handled only together with what it leaves behind) -------

    def delivery_outcome(self, delivery_id: str, *, now: datetime) -> DeliveryOutcome | None:
        row = (
            self._conn()
            .execute(
                "SELECT handled_at, recheck_at, recheck_image FROM delivery_outcomes "
                "WHERE delivery_id = ? AND expires_at > ?",
                (delivery_id, _ts(now)),
            )
            .fetchone()
        )
        if row is None:
            return None
        handled_at, recheck_at, recheck_image = row
        return DeliveryOutcome(
            delivery_id, datetime.fromisoformat(handled_at), _dt(recheck_at), recheck_image
        )

    def commit_outcome(
        self, outcome: Outcome, *, now: datetime, ttl: timedelta
    ) -> list[str] | None:
        added: list[str] = []
        with self._tx() as db:
            o = outcome
            if o.delivery_id is not None:  # committed by a concurrent duplicate: nothing
                row = db.execute(
                    "SELECT 1 FROM delivery_outcomes WHERE delivery_id = ? AND expires_at > ?",
                    (o.delivery_id, _ts(now)),
                ).fetchone()
                if row is not None:
                    return None
            if o.verdict is not None:
                db.execute(
                    "INSERT OR REPLACE INTO verdicts (registry, repository, digest, outcome, "
                    "at, findings) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        o.registry,
                        o.repository,
                        o.digest,
                        o.verdict,
                        _ts(now),
                        findings_json(o.findings),
                    ),
                )
                db.execute(
                    "INSERT INTO verdict_log VALUES (?, ?, ?, ?, ?, ?)",
                    (o.delivery_id, o.registry, o.repository, o.digest, o.verdict, _ts(now)),
                )
            if o.delivery_id is not None:
                db.execute(
                    "INSERT OR REPLACE INTO delivery_outcomes VALUES (?, ?, ?, ?, ?)",
                    (
                        o.delivery_id,
                        _ts(now),
                        _ts(now + ttl),
                        _ts(o.recheck_at) if o.recheck_at else None,
                        o.recheck_image,
                    ),
                )
            for item in o.alerts:
                db.execute(
                    "DELETE FROM outbox WHERE key = ? AND expires_at <= ?", (item.key, _ts(now))
                )
                cur = db.execute(
                    "INSERT OR IGNORE INTO outbox (key, channel, alert, created_at, expires_at, "
                    "next_attempt) VALUES (?, ?, ?, ?, ?, ?)",
                    (item.key, item.channel, item.alert, _ts(now), _ts(now + OUTBOX_TTL), _ts(now)),
                )
                if cur.rowcount:
                    added.append(item.key)
        return added

    def verdict_log(
        self, registry: str, repository: str, digest: str
    ) -> list[tuple[str | None, str, datetime]]:
        """(delivery id, outcome, at) of every verdict committed for a digest, oldest first
        (as `DynamoLedger.verdict_log`: audits and the ledger contract tests)."""
        rows = self._conn().execute(
            "SELECT delivery_id, outcome, at FROM verdict_log WHERE registry = ? "
            "AND repository = ? AND digest = ? ORDER BY at, rowid",
            (registry, repository, digest),
        )
        return [(d, str(o), datetime.fromisoformat(at)) for d, o, at in rows]

    # -- alert outbox ------------------------------------------------------------------------

    def outbox_pending(self, *, now: datetime, limit: int = 100) -> list[OutboxItem]:
        rows = self._conn().execute(
            "SELECT key, channel, alert, attempts, next_attempt, error FROM outbox "
            "WHERE sent_at IS NULL AND next_attempt <= ? ORDER BY next_attempt, key LIMIT ?",
            (_ts(now), limit),
        )
        return [
            OutboxItem(k, c, a, int(n), datetime.fromisoformat(at), e) for k, c, a, n, at, e in rows
        ]

    def outbox_sent(self, key: str, *, now: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET sent_at = ?, attempts = attempts + 1, error = NULL "
                "WHERE key = ?",
                (_ts(now), key),
            )

    def outbox_retry(self, key: str, *, at: datetime, error: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET next_attempt = ?, attempts = attempts + 1, error = ? "
                "WHERE key = ?",
                (_ts(at), error, key),
            )

    def outbox_for(self, digest: str) -> list[OutboxRecord]:
        """Every outbox row whose alert names `digest`, sent or not, oldest first (audits:
        `quarantine show`; not part of `Ledger`, so a caller checks the store has it)."""
        rows = self._conn().execute(
            "SELECT key, channel, alert, attempts, next_attempt, error, created_at, sent_at "
            "FROM outbox WHERE instr(alert, ?) > 0 ORDER BY created_at, key",
            (digest,),
        )
        return [
            OutboxRecord(
                OutboxItem(k, c, a, int(n), datetime.fromisoformat(at), e),
                datetime.fromisoformat(created),
                _dt(sent),
            )
            for k, c, a, n, at, e, created, sent in rows
        ]

    def outbox_unsent(self) -> int:
        """Alerts not yet delivered (due or backing off)."""
        row = self._conn().execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        return int(row[0])

    # -- images and tags ------------------------------------------------------------------

    def record_push(
        self, registry: str, repository: str, digest: str, tags: tuple[str, ...], *, now: datetime
    ) -> datetime:
        """Returns the digest's first-seen time (this push's, or an earlier one kept)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO images (registry, repository, digest, first_seen) "
                "VALUES (?, ?, ?, ?)",
                (registry, repository, digest, _ts(now)),
            )
            db.executemany(
                "INSERT OR IGNORE INTO tag_history VALUES (?, ?, ?, ?, ?)",
                [(registry, repository, t, digest, _ts(now)) for t in tags],
            )
            (first_seen,) = db.execute(
                "SELECT first_seen FROM images WHERE registry = ? AND repository = ? "
                "AND digest = ?",
                (registry, repository, digest),
            ).fetchone()
        return datetime.fromisoformat(first_seen)

    def record_pull(self, registry: str, repository: str, digest: str, *, now: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO images (registry, repository, digest, first_seen, last_pulled) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET last_pulled = "
                "max(coalesce(last_pulled, ''), excluded.last_pulled)",
                (registry, repository, digest, _ts(now), _ts(now)),
            )

    def image_times(
        self, registry: str, repository: str
    ) -> dict[str, tuple[datetime, datetime | None]]:
        """digest → (first seen, last pulled) for one repository."""
        rows = self._conn().execute(
            "SELECT digest, first_seen, last_pulled FROM images WHERE registry = ? "
            "AND repository = ?",
            (registry, repository),
        )
        return {d: (datetime.fromisoformat(f), _dt(p)) for d, f, p in rows}

    def previous_digest(
        self, registry: str, repository: str, tag: str, *, before: str
    ) -> str | None:
        """The digest `tag` pointed at before it moved to `before`, if regwarden saw it."""
        rows = (
            self._conn()
            .execute(
                "SELECT digest FROM tag_history WHERE registry = ? AND repository = ? AND tag = ? "
                "AND digest != ? ORDER BY seen_at DESC LIMIT 1",
                (registry, repository, tag, before),
            )
            .fetchall()
        )
        return str(rows[0][0]) if rows else None

    def tags_for(self, registry: str, repository: str, digest: str) -> list[str]:
        """Tags whose most recent push (as regwarden saw it) was this digest."""
        rows = self._conn().execute(
            "SELECT tag FROM tag_history t WHERE registry = ? AND repository = ? AND digest = ? "
            "AND seen_at = (SELECT max(seen_at) FROM tag_history u WHERE u.registry = t.registry "
            "AND u.repository = t.repository AND u.tag = t.tag) ORDER BY tag",
            (registry, repository, digest),
        )
        return [str(r[0]) for r in rows]

    def tag_digests(self, registry: str, repository: str, tag: str) -> list[str]:
        """Every digest `tag` has pointed at, oldest first."""
        rows = self._conn().execute(
            "SELECT digest FROM tag_history WHERE registry = ? AND repository = ? AND tag = ? "
            "ORDER BY seen_at",
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
        """(tag, digest, first seen) for every tag → digest seen in a repository, oldest first."""
        rows = self._conn().execute(
            "SELECT tag, digest, seen_at FROM tag_history WHERE registry = ? AND repository = ? "
            "ORDER BY seen_at, tag, digest",
            (registry, repository),
        )
        return [(str(t), str(d), datetime.fromisoformat(s)) for t, d, s in rows]

    # -- verdicts --------------------------------------------------------------------------

    def record_verdict(
        self, registry: str, repository: str, digest: str, outcome: str, *, now: datetime
    ) -> None:
        with self._tx() as db:
            db.execute(  # no findings: those there were the replaced verdict's
                "INSERT OR REPLACE INTO verdicts (registry, repository, digest, outcome, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (registry, repository, digest, outcome, _ts(now)),
            )

    def last_verdict(self, registry: str, repository: str, digest: str) -> str | None:
        row = (
            self._conn()
            .execute(
                "SELECT outcome FROM verdicts WHERE registry = ? AND repository = ? AND digest = ?",
                (registry, repository, digest),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def repository_verdicts(self, registry: str, repository: str) -> dict[str, VerdictRecord]:
        """digest → last verdict (outcome, when, findings) of one repository, one query."""
        rows = self._conn().execute(
            "SELECT digest, outcome, at, findings FROM verdicts WHERE registry = ? "
            "AND repository = ?",
            (registry, repository),
        )
        return {
            str(d): VerdictRecord(str(o), datetime.fromisoformat(at), findings_from(f))
            for d, o, at, f in rows
        }

    # -- actions (audit and resumable intents) ---------------------------------------------

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
        """Record the intent before the first write. Returns the existing record if the key
        was already recorded (a retry resumes it rather than starting over)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO actions (key, at, registry, repository, digest, kind, "
                "status, reason, state) VALUES (?, ?, ?, ?, ?, ?, 'intent', ?, ?)",
                (key, _ts(now), registry, repository, digest, kind, reason, json.dumps(state)),
            )
        found = self.action(key)
        assert found is not None
        return found

    def finish_action(self, key: str, *, status: str, state: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            if state is None:
                db.execute("UPDATE actions SET status = ? WHERE key = ?", (status, key))
            else:
                db.execute(
                    "UPDATE actions SET status = ?, state = ? WHERE key = ?",
                    (status, json.dumps(state), key),
                )

    def action(self, key: str) -> ActionRecord | None:
        row = (
            self._conn()
            .execute(
                "SELECT key, at, registry, repository, digest, kind, status, reason, state "
                "FROM actions WHERE key = ?",
                (key,),
            )
            .fetchone()
        )
        return None if row is None else self._action(row)

    def actions(self, *, status: str | None = None) -> list[ActionRecord]:
        sql = (
            "SELECT key, at, registry, repository, digest, kind, status, reason, state FROM actions"
        )
        args: tuple[str, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        return [self._action(r) for r in self._conn().execute(sql + " ORDER BY id", args)]

    @staticmethod
    def _action(row: tuple[Any, ...]) -> ActionRecord:
        key, at, reg, repo, digest, kind, status, reason, state = row
        return ActionRecord(
            key,
            datetime.fromisoformat(at),
            reg,
            repo,
            digest,
            kind,
            status,
            reason,
            json.loads(state),
        )

    # -- quarantine -----------------------------------------------------------------------

    def record_quarantine(self, rec: QuarantineRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.registry,
                    rec.digest,
                    rec.repository,
                    rec.strategy,
                    rec.location,
                    json.dumps(list(rec.tags)),
                    rec.reason,
                    _ts(rec.quarantined_at),
                    _ts(rec.released_at) if rec.released_at else None,
                ),
            )

    _QUARANTINE_COLUMNS = (
        "SELECT registry, repository, digest, strategy, location, tags, reason, "
        "quarantined_at, released_at FROM quarantine"
    )

    def quarantined(self, registry: str, repository: str, digest: str) -> QuarantineRecord | None:
        row = (
            self._conn()
            .execute(
                self._QUARANTINE_COLUMNS + " WHERE registry = ? AND repository = ? AND digest = ?",
                (registry, repository, digest),
            )
            .fetchone()
        )
        return None if row is None else self._quarantine(row)

    def quarantines(self, *, released: bool | None = None) -> list[QuarantineRecord]:
        where = {
            None: "",
            False: " WHERE released_at IS NULL",
            True: " WHERE released_at IS NOT NULL",
        }
        # stored times are UTC ISO text of one width, so text order is time order
        rows = self._conn().execute(
            self._QUARANTINE_COLUMNS
            + where[released]
            + " ORDER BY quarantined_at, registry, repository, digest"
        )
        return [self._quarantine(r) for r in rows]

    @staticmethod
    def _quarantine(row: tuple[Any, ...]) -> QuarantineRecord:
        reg, repo, dig, strategy, location, tags, reason, q_at, r_at = row
        return QuarantineRecord(
            reg,
            repo,
            dig,
            strategy,
            location,
            tuple(json.loads(tags)),
            reason,
            datetime.fromisoformat(q_at),
            _dt(r_at),
        )

    def mark_released(self, registry: str, repository: str, digest: str, *, now: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE quarantine SET released_at = ? WHERE registry = ? AND repository = ? "
                "AND digest = ?",
                (_ts(now), registry, repository, digest),
            )

    # -- access monitoring (pull tallies, tracking, alert windows) ---------------------------

    def record_pulls(self, tallies: Sequence[PullTally]) -> None:
        rows = [check_tally(t) for t in tallies]
        if not rows:
            return
        with self._tx() as db:  # one transaction for the batch
            db.executemany(
                "INSERT INTO images (registry, repository, digest, first_seen, last_pulled) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET last_pulled = "
                "max(coalesce(last_pulled, ''), excluded.last_pulled)",
                [
                    (t.registry, t.repository, t.digest, _ts(t.last_pulled), _ts(t.last_pulled))
                    for t in rows
                ],
            )
            db.executemany(
                "INSERT INTO pulls VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "last_pulled = max(last_pulled, excluded.last_pulled), "
                "count = count + excluded.count",
                [
                    (t.registry, t.repository, t.digest, t.principal, _ts(t.last_pulled), t.count)
                    for t in rows
                ],
            )

    def pull_tallies(self, registry: str, repository: str) -> list[PullTally]:
        rows = self._conn().execute(
            "SELECT digest, principal, last_pulled, count FROM pulls WHERE registry = ? "
            "AND repository = ? ORDER BY digest, principal",
            (registry, repository),
        )
        return [
            PullTally(registry, repository, d, p, datetime.fromisoformat(at), int(n))
            for d, p, at, n in rows
        ]

    def start_pull_tracking(self, registry: str, repository: str, *, now: datetime) -> datetime:
        with self._tx() as db:
            db.execute(
                "INSERT INTO pull_tracking VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET "
                "since = min(since, excluded.since)",
                (registry, repository, _ts(now)),
            )
            (since,) = db.execute(
                "SELECT since FROM pull_tracking WHERE registry = ? AND repository = ?",
                (registry, repository),
            ).fetchone()
        return datetime.fromisoformat(since)

    def pull_tracking_since(self, registry: str, repository: str) -> datetime | None:
        row = (
            self._conn()
            .execute(
                "SELECT since FROM pull_tracking WHERE registry = ? AND repository = ?",
                (registry, repository),
            )
            .fetchone()
        )
        return None if row is None else datetime.fromisoformat(row[0])

    def open_access_window(
        self, window: AccessWindow, *, replacing: datetime | None = None
    ) -> bool:
        w = window
        values = (
            w.registry,
            w.repository,
            w.digest,
            _ts(w.opened_at),
            _ts(w.closes_at),
            w.count,
            _ts(w.last_seen) if w.last_seen else None,
            w.alert,
        )
        with self._tx() as db:
            if replacing is None:
                cur = db.execute(
                    "INSERT OR IGNORE INTO access_windows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (check_window_key(w.key), *values),
                )
            else:
                cur = db.execute(
                    "UPDATE access_windows SET registry = ?, repository = ?, digest = ?, "
                    "opened_at = ?, closes_at = ?, count = ?, last_seen = ?, alert = ? "
                    "WHERE key = ? AND opened_at = ?",
                    (*values, w.key, _ts(replacing)),
                )
            return cur.rowcount == 1

    _WINDOW_COLUMNS = (
        "SELECT key, registry, repository, digest, opened_at, closes_at, count, last_seen, "
        "alert FROM access_windows"
    )

    def access_window(self, key: str) -> AccessWindow | None:
        row = self._conn().execute(self._WINDOW_COLUMNS + " WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._window(row)

    def count_access(self, key: str, *, opened_at: datetime, add: int, last_seen: datetime) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE access_windows SET count = count + ?, "
                "last_seen = max(coalesce(last_seen, ''), ?) WHERE key = ? AND opened_at = ?",
                (add, _ts(last_seen), key, _ts(opened_at)),
            )
            return cur.rowcount == 1

    def access_windows_due(self, *, now: datetime, limit: int = 100) -> list[AccessWindow]:
        rows = self._conn().execute(
            self._WINDOW_COLUMNS + " WHERE closes_at <= ? ORDER BY closes_at, key LIMIT ?",
            (_ts(now), limit),
        )
        return [self._window(r) for r in rows]

    def drop_access_window(self, key: str, *, opened_at: datetime) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM access_windows WHERE key = ? AND opened_at = ?",
                (key, _ts(opened_at)),
            )
            return cur.rowcount == 1

    @staticmethod
    def _window(row: tuple[Any, ...]) -> AccessWindow:
        key, reg, repo, digest, opened, closes, count, last_seen, alert = row
        return AccessWindow(
            key,
            reg,
            repo,
            digest,
            datetime.fromisoformat(opened),
            datetime.fromisoformat(closes),
            int(count),
            _dt(last_seen),
            alert,
        )


def _migrate_verdicts(db: sqlite3.Connection) -> None:
    """A ledger written before verdicts kept their findings gains the column (NULL: not
    known for the verdicts already there)."""
    db.execute("BEGIN IMMEDIATE")  # two processes opening one old file migrate it once
    try:
        columns = {str(r[1]) for r in db.execute("PRAGMA table_info(verdicts)")}
        if "findings" not in columns:
            db.execute("ALTER TABLE verdicts ADD COLUMN findings TEXT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def open_sqlite(url: ParsedUrl) -> SqliteLedger:
    """`PATH`, `sqlite:///ABS/PATH` or `sqlite://REL/PATH`: the SQLite ledger (which is also
    a queue) in that file, or UsageError (exit 2) saying why it cannot be used: a directory,
    a file that is not an SQLite database, no permission, no parent."""
    hint = f"{url.option} must name a writable SQLite file"
    url.only_params()
    if not url.location:
        raise url.refuse("no file after sqlite://", hint=f"sqlite:///ABSOLUTE/PATH; {hint}")
    path = Path(url.location).expanduser()
    if path.is_dir():
        raise url.refuse("it is a directory", hint=hint)
    try:
        return SqliteLedger(path)
    except OSError as exc:  # its directory cannot be made
        cause = exc.strerror or str(exc)
        if exc.filename and str(exc.filename) != str(path):
            cause = f"cannot create {exc.filename}: {cause}"
        raise url.refuse(cause, hint=hint) from None
    except sqlite3.Error as exc:
        cause = str(exc)
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            cause = "permission denied"
        elif isinstance(exc, sqlite3.DatabaseError) and "not a database" in cause:
            cause = "the file is not an SQLite database (corrupt, or not a ledger)"
        raise url.refuse(cause, hint=hint) from None
