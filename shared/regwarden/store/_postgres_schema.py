"""The PostgreSQL ledger's schema, as numbered migrations applied at start-up.

`MIGRATIONS` is append-only: a released step is never edited, a change is a new step. Each
process that opens the ledger calls `migrate`: under a transaction-scoped advisory lock (so
replicas starting together migrate once, the others wait and then find nothing to do) it
reads the highest version in `regwarden_schema` and applies, in the same transaction, each
later step, recording it. A database migrated by a newer regwarden (a version this one does
not know) is refused rather than used with a schema it does not understand.

Text that orders results (registries, repositories, digests, tags, keys) is `COLLATE "C"`:
byte order, the same on every database whatever its locale, and the order the other stores
give. Times are `timestamptz` (microseconds, as the other stores keep them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "Migration", "SchemaTooNew", "advisory_key", "migrate"]


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer regwarden than this one."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sql: tuple[str, ...]


_V1 = (
    """CREATE TABLE images (
        registry TEXT COLLATE "C" NOT NULL, repository TEXT COLLATE "C" NOT NULL,
        digest TEXT COLLATE "C" NOT NULL,
        first_seen TIMESTAMPTZ NOT NULL, last_pulled TIMESTAMPTZ,
        PRIMARY KEY (registry, repository, digest))""",
    """CREATE TABLE tag_history (
        registry TEXT COLLATE "C" NOT NULL, repository TEXT COLLATE "C" NOT NULL,
        tag TEXT COLLATE "C" NOT NULL, digest TEXT COLLATE "C" NOT NULL,
        seen_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (registry, repository, tag, digest))""",
    "CREATE INDEX tag_history_by_tag ON tag_history (registry, repository, tag, seen_at)",
    """CREATE TABLE deliveries (
        delivery_id TEXT PRIMARY KEY, received_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL)""",
    "CREATE INDEX deliveries_expiry ON deliveries (expires_at)",
    """CREATE TABLE actions (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key TEXT UNIQUE NOT NULL, at TIMESTAMPTZ NOT NULL,
        registry TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
        kind TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT '{}')""",
    "CREATE INDEX actions_by_status ON actions (status, id)",
    """CREATE TABLE quarantine (
        registry TEXT COLLATE "C" NOT NULL, repository TEXT COLLATE "C" NOT NULL,
        digest TEXT COLLATE "C" NOT NULL,
        strategy TEXT NOT NULL, location TEXT NOT NULL, tags TEXT NOT NULL,
        reason TEXT NOT NULL, quarantined_at TIMESTAMPTZ NOT NULL, released_at TIMESTAMPTZ,
        PRIMARY KEY (registry, repository, digest))""",
    """CREATE TABLE verdicts (
        registry TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
        outcome TEXT NOT NULL, at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (registry, repository, digest))""",
    """CREATE TABLE verdict_log (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, delivery_id TEXT,
        registry TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL,
        outcome TEXT NOT NULL, at TIMESTAMPTZ NOT NULL)""",
    "CREATE INDEX verdict_log_by_image ON verdict_log (registry, repository, digest, at, seq)",
    """CREATE TABLE delivery_outcomes (
        delivery_id TEXT PRIMARY KEY, handled_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL, recheck_at TIMESTAMPTZ, recheck_image TEXT)""",
    """CREATE TABLE outbox (
        key TEXT COLLATE "C" PRIMARY KEY, channel TEXT NOT NULL, alert TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL,
        sent_at TIMESTAMPTZ, attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt TIMESTAMPTZ NOT NULL, error TEXT)""",
    "CREATE INDEX outbox_due ON outbox (next_attempt, key) WHERE sent_at IS NULL",
    """CREATE TABLE queue (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        source TEXT NOT NULL, body BYTEA NOT NULL, content_type TEXT,
        received_at TIMESTAMPTZ NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        not_before TIMESTAMPTZ, owner TEXT, heartbeat TIMESTAMPTZ,
        done_at TIMESTAMPTZ, error TEXT)""",
    # what lease() scans: pending rows only (done rows, the bulk of the table, never)
    "CREATE INDEX queue_pending ON queue (id) WHERE done_at IS NULL",
    "CREATE INDEX queue_owner ON queue (owner) WHERE done_at IS NULL",
    "CREATE INDEX queue_dead ON queue (id) WHERE done_at IS NOT NULL AND error IS NOT NULL",
)

_V2 = (
    """CREATE TABLE pulls (
        registry TEXT COLLATE "C" NOT NULL, repository TEXT COLLATE "C" NOT NULL,
        digest TEXT COLLATE "C" NOT NULL, principal TEXT COLLATE "C" NOT NULL,
        last_pulled TIMESTAMPTZ NOT NULL, count BIGINT NOT NULL,
        PRIMARY KEY (registry, repository, digest, principal))""",
    """CREATE TABLE pull_tracking (
        registry TEXT NOT NULL, repository TEXT NOT NULL, since TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (registry, repository))""",
    """CREATE TABLE access_windows (
        key TEXT COLLATE "C" PRIMARY KEY, registry TEXT NOT NULL, repository TEXT NOT NULL,
        digest TEXT NOT NULL, opened_at TIMESTAMPTZ NOT NULL, closes_at TIMESTAMPTZ NOT NULL,
        count BIGINT NOT NULL, last_seen TIMESTAMPTZ, alert TEXT NOT NULL)""",
    "CREATE INDEX access_windows_due ON access_windows (closes_at, key)",
)

_V3 = (
    # the verdict's findings by severity (`store._outcome.findings_json`); NULL for the
    # verdicts written before, and for a verdict judged without a scan report
    "ALTER TABLE verdicts ADD COLUMN findings TEXT",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "ledger and queue tables (as the SQLite ledger of session 7)", _V1),
    Migration(2, "access monitoring: pull tallies, pull tracking, access-alert windows", _V2),
    Migration(3, "verdicts keep their findings by severity", _V3),
)
"""Every step, in order; versions are 1, 2, … with no gap."""


def advisory_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key for a name (stable across processes and versions:
    the first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def migrate(
    conn: psycopg.Connection[Any],
    schema: str,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> list[int]:
    """Bring `schema` up to the last of `migrations` in one transaction; the versions
    applied now (none when another process, or an earlier start, did it already)."""
    from psycopg import sql

    applied: list[int] = []
    with conn.transaction():
        # held to the end of this transaction: replicas starting together queue up here
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s)", (advisory_key("regwarden-migrate", schema),)
        )
        name = sql.Identifier(schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(name))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS regwarden_schema (version INTEGER PRIMARY KEY, "
            "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM regwarden_schema").fetchone()
        current = int(row[0]) if row else 0
        known = migrations[-1].version if migrations else 0
        if current > known:
            raise SchemaTooNew(
                f"the database's schema {schema!r} is at version {current}, this regwarden "
                f"knows up to {known}: a newer regwarden migrated it"
            )
        for step in migrations:
            if step.version <= current:
                continue
            for statement in step.sql:
                conn.execute(statement.encode())
            conn.execute(
                "INSERT INTO regwarden_schema (version, description) VALUES (%s, %s)",
                (step.version, step.description),
            )
            applied.append(step.version)
    return applied
