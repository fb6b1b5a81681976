"""Opening the ledger and the queue a command line names (`--ledger`, `--queue`), by URL.

`open_ledger("~/ledger.db")` or `open_ledger("dynamodb://regwarden?region=eu-west-1")`: the
URL's scheme picks the factory in `LEDGERS` (see `_urls.py`); a scheme nothing registers is
a usage error (exit 2) naming those that are, never a file of that name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from ..errors import UsageError
from ..plugins import PluginRegistry
from ._protocol import EventQueue, Ledger
from ._urls import LEDGERS, QUEUES, ParsedUrl, parse_store_url

__all__ = ["open_ledger", "open_queue"]

T = TypeVar("T")

_LATER: dict[str, str] = {}
"""Ledger schemes the project plans but has not built (scheme → the issue that brings
it): said so, not 'unknown'. Empty since PostgreSQL (issue #19) landed."""

_QUEUE_HINT = "pass --queue sqlite:///PATH (or REGWARDEN_QUEUE): an SQLite file for the queue"


# The built-in stores, each imported when its URL is first opened: a function loads only
# its own ledger's module (the SQLite one loads sqlite3, the others their clients' glue).


@LEDGERS.register("sqlite")
def _sqlite_ledger(url: ParsedUrl) -> Ledger:
    from ._sqlite import open_sqlite

    return open_sqlite(url)


@QUEUES.register("sqlite")
def _sqlite_queue(url: ParsedUrl) -> EventQueue:
    from ._sqlite import open_sqlite

    return open_sqlite(url)


@LEDGERS.register("dynamodb")
def _dynamodb(url: ParsedUrl) -> Ledger:
    from ._dynamo import open_dynamodb

    return open_dynamodb(url)


@LEDGERS.register("firestore")
def _firestore(url: ParsedUrl) -> Ledger:
    from ._firestore import open_firestore

    return open_firestore(url)


@LEDGERS.register("azuretable")
def _azuretable(url: ParsedUrl) -> Ledger:
    from ._azure_table import open_azuretable

    return open_azuretable(url)


@LEDGERS.register("postgresql", "postgres")
def _postgres_ledger(url: ParsedUrl) -> Ledger:
    from ._postgres import open_postgres

    return open_postgres(url)


@QUEUES.register("postgresql", "postgres")
def _postgres_queue(url: ParsedUrl) -> EventQueue:
    from ._postgres import open_postgres

    return open_postgres(url)


def open_ledger(url: str | os.PathLike[str]) -> Ledger:
    """The ledger `url` names: a path (an SQLite file), `sqlite:///PATH`,
    `dynamodb://TABLE?region=…&endpoint=…`, `firestore://PROJECT[/DATABASE][?prefix=…]`,
    `azuretable://ACCOUNT[?prefix=…]` or `postgresql://USER@HOST:PORT/DB[?password_file=…]`;
    UsageError (exit 2) if it cannot be used."""
    parsed = parse_store_url(url, role="ledger")
    return _factory(LEDGERS, parsed)(parsed)


def open_queue(
    url: str | os.PathLike[str] | None = None, *, ledger: Ledger | None = None
) -> EventQueue:
    """The work queue `url` names (`sqlite:///PATH`, a path, or `postgresql://…`). None: the
    ledger's own queue, which only a ledger that is also a queue has (SQLite, PostgreSQL);
    for any other a usage error says to pass `--queue`. A `url` naming the SQLite ledger's
    own file, or the PostgreSQL ledger's own URL, gives the ledger itself."""
    if url is None:
        if ledger is None:
            raise ValueError("open_queue needs a URL or a ledger")
        if not isinstance(ledger, EventQueue):
            note = getattr(ledger, "queue_note", None)  # why a cloud ledger has none
            raise UsageError(
                "this ledger has no work queue: only an SQLite or PostgreSQL ledger is its own "
                "queue" + (f" ({note})" if note else ""),
                hint=_QUEUE_HINT,
            )
        return ledger
    parsed = parse_store_url(url, role="queue")
    if ledger is not None and parsed.scheme == "sqlite":
        from ._sqlite import SqliteLedger

        if isinstance(ledger, SqliteLedger) and _same_file(ledger.path, parsed.location):
            return ledger  # one file: one object, one set of connections
    if ledger is not None and parsed.scheme in ("postgresql", "postgres"):
        from ._postgres import PostgresLedger

        if isinstance(ledger, PostgresLedger) and parsed.text == ledger.source:
            return ledger  # one database: one pool
    return _factory(QUEUES, parsed)(parsed)


def _same_file(path: Path, location: str) -> bool:
    if ":memory:" in (str(path), location):
        return False
    return path.resolve() == Path(location).expanduser().resolve()


def _factory(registry: PluginRegistry[T], url: ParsedUrl) -> T:
    if url.scheme in registry:
        return registry.get(url.scheme)
    valid = ", ".join(f"{name}://" for name in registry.names())
    hint = f"valid: a path (an SQLite file), {valid}"
    later = _LATER.get(url.scheme) if url.role == "ledger" else None
    if later is not None:
        raise url.refuse(
            f"{url.scheme}:// {url.role}s are not built yet (they come with {later})", hint=hint
        )
    raise url.refuse(f"unknown {url.role} scheme {url.scheme}://", hint=hint)
