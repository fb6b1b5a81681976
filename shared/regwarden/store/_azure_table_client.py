"""The plumbing of the Table Storage ledger (`_azure_table.py`): its tables, made on first
write, and the reads and writes every method is built from, with Table Storage's answers
sorted into what the ledger acts on — `Conflict` (409 on a create, 412 on an ETag, 404 on
an update: another writer went first; read and decide again, at most `ROUNDS` times),
`Missing` (the table is not there yet) and the ledger's RegistryError (anything else: the
event is retried).

azure-data-tables is imported on first use: importing this module costs nothing.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ..errors import RegistryError, UsageError
from ._azure_table_rows import plain_time

__all__ = [
    "DEFAULT_PREFIX",
    "KINDS",
    "MAX_BATCH",
    "PULL_ROUNDS",
    "ROUNDS",
    "ROWS_PER_QUERY",
    "Conflict",
    "Missing",
    "TableLedgerBase",
    "etag_of",
    "int64",
    "live",
    "rounds",
    "table_names",
]

DEFAULT_PREFIX = "regwarden"
KINDS = (
    "deliveries",
    "outcomes",
    "outboxkeys",
    "images",
    "verdicts",
    "actions",
    "quarantine",
    "failures",
    "accesswindows",
)
MAX_BATCH = 100
"""Operations in one entity-group transaction, Table Storage's limit."""
ROWS_PER_QUERY = 14
"""Rows one query names (`RowKey eq … or …`): a filter holds at most 15 comparisons, one of
them the PartitionKey's."""
ROUNDS = 10
"""Read-decide-write rounds of one write before contention is an error."""
PULL_ROUNDS = 2 * ROUNDS
"""Rounds of one `record_pulls` batch: processes flushing pulls of one hot image contend on
its rows, and a flush is background work that had better wait its turn than fail."""
REMEMBERED = frozenset({"actions", "outcomes", "accesswindows"})
"""Kinds whose entities one process writes and then changes (an action's record while its
steps are saved; an outbox row a commit wrote, marked sent next; an access window it opened,
counted into next): their last known ETag spares `_change` its read."""
_KNOWN_MAX = 256
"""Entities remembered at most (the oldest forgotten first): a long-running process stays
small, and the entity just written is the one changed next."""
_FIRST_PAUSE = 0.01
_MAX_PAUSE = 0.5
T = TypeVar("T")


def table_names(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """Kind → table name for a prefix (what the Terraform creates)."""
    return {kind: f"{prefix}{kind}" for kind in KINDS}


class Conflict(Exception):
    """Another writer went first (409 on a create, 412 on an ETag, 404 on an update)."""


class Missing(Exception):
    """The table does not exist yet."""


def rounds(count: int = ROUNDS) -> Iterator[int]:
    """`count` round numbers, with a random pause growing up to 0.5 s before each round
    after the first (full jitter: colliding writers spread out rather than collide again)."""
    for n in range(count):
        if n:
            pause = min(_MAX_PAUSE, _FIRST_PAUSE * 2 ** (n - 1))
            time.sleep(random.uniform(0, pause))  # noqa: S311  (jitter, not a secret)
        yield n


def int64(value: int) -> Any:
    """`value` as an Edm.Int64 property (an `EntityProperty`; a plain int is sent as Int32,
    which the SDK refuses past 2**31)."""
    from azure.data.tables import EdmType, EntityProperty

    return EntityProperty(value, EdmType.INT64)


def live(entity: Mapping[str, Any] | None, now: datetime) -> bool:
    """Present and not past its `expireAt` (one without never expires)."""
    if entity is None:
        return False
    expires = entity.get("expireAt")
    return expires is None or plain_time(expires) > now


def etag_of(entity: Mapping[str, Any]) -> str:
    return str(entity.metadata["etag"])  # type: ignore[attr-defined]


class TableLedgerBase:
    """One storage account's ledger tables, and the operations on them. Thread-safe (one
    service client, shared)."""

    def __init__(
        self,
        account: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        service: Any = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`service`: a `TableServiceClient` to use; else one is made on first use from
        `env` (default: the process environment)."""
        self.account = account
        self.prefix = prefix
        self.tables = table_names(prefix)
        self._service = service
        self._env = env
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._outbox_where: dict[str, str] = {}
        """alert key → the partition of its newest row (what this process last saw)."""
        self._known: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}
        """(kind, pk, rk) → (ETag, fields) of an entity of a `REMEMBERED` kind as this
        process last wrote or read it: `_change` replaces it on condition of that ETag with
        no read first (412 or 404 when it moved on: then read and decide again)."""

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def service(self) -> Any:
        with self._lock:
            if self._service is None:
                from azure.data.tables import TableServiceClient

                from .. import azure_clients

                env = os.environ if self._env is None else self._env
                endpoint = azure_clients.storage_endpoint("table", self.account, env)
                if endpoint.startswith("http:") and not env.get(azure_clients.STORAGE_KEY_ENV):
                    raise UsageError(
                        f"Table Storage endpoint {endpoint} is plain http: the managed "
                        "identity's token is never sent over it",
                        hint=f"set {azure_clients.STORAGE_KEY_ENV} (Azurite, local runs)",
                    )
                bundle = azure_clients.ca_bundle(env)
                kwargs: dict[str, Any] = {
                    "retry_total": 3,
                    **azure_clients.transport_options(bundle or True),
                }
                self._service = TableServiceClient(
                    endpoint=endpoint,
                    credential=azure_clients.storage_credential(self.account, env),
                    **kwargs,
                )
            return self._service

    def _table(self, kind: str) -> Any:
        service = self.service
        with self._lock:
            client = self._clients.get(kind)
            if client is None:
                client = self._clients[kind] = service.get_table_client(self.tables[kind])
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
            if self._service is not None:
                self._service.close()
            self._service = None

    def _failed(self, what: str, exc: Exception) -> RegistryError:
        """A storage error as the pipeline's infrastructure error (the event is retried)."""
        return RegistryError(f"Table Storage account {self.account}: {what} failed: {exc}")

    def _call(self, kind: str, what: str, fn: Callable[[Any], T]) -> T:
        """`fn(table)`, its errors sorted: `Conflict`, `Missing`, else RegistryError."""
        from azure.core.exceptions import (
            AzureError,
            HttpResponseError,
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        try:
            return fn(self._table(kind))
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise Conflict from exc
        except HttpResponseError as exc:
            code = str(getattr(exc, "error_code", "") or "")
            if code == "TableNotFound" or "TableNotFound" in str(exc):
                raise Missing from exc
            if exc.status_code in (409, 412) or isinstance(exc, ResourceNotFoundError):
                raise Conflict from exc
            raise self._failed(f"{what} on {self.tables[kind]}", exc) from exc
        except AzureError as exc:
            raise self._failed(f"{what} on {self.tables[kind]}", exc) from exc

    def _write(self, kind: str, what: str, fn: Callable[[Any], T]) -> T:
        """A write: a missing table is created and the write sent again."""
        try:
            return self._call(kind, what, fn)
        except Missing:
            self._create_table(kind)
        try:
            return self._call(kind, what, fn)
        except Missing as exc:
            raise self._failed(f"{what} (table just created)", exc) from exc

    def _create_table(self, kind: str) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            self.service.create_table(self.tables[kind])
        except ResourceExistsError:
            pass  # another process made it first
        except AzureError as exc:
            raise self._failed(f"create table {self.tables[kind]}", exc) from exc

    def _get(self, kind: str, pk: str, rk: str = "") -> Any:
        """One entity, or None (absent, or its table is)."""
        try:
            return self._call(kind, "get", lambda t: t.get_entity(pk, rk))
        except (Missing, Conflict):  # Conflict here is a 404: no such entity
            return None

    def _query(
        self, kind: str, query: str, parameters: Mapping[str, Any] | None = None
    ) -> list[Any]:
        """Every entity `query` selects (an OData filter, values as @parameters)."""
        try:
            return self._call(
                kind,
                "query",
                lambda t: list(t.query_entities(query, parameters=dict(parameters or {}))),
            )
        except (Missing, Conflict):
            return []

    def _contended(self, what: str, count: int = ROUNDS) -> RegistryError:
        return RegistryError(
            f"Table Storage account {self.account}: {what} did not go through in {count} "
            "rounds (other writers changed its entities each time)"
        )

    @staticmethod
    def _replace(entity: Mapping[str, Any], etag: str | None) -> tuple[str, Any, Any]:
        """A batch operation: create `entity` (etag None) or replace it on condition."""
        if etag is None:
            return ("create", dict(entity), {})
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        options = {"mode": UpdateMode.REPLACE, "etag": etag}
        return (
            "update",
            dict(entity),
            options | {"match_condition": MatchConditions.IfNotModified},
        )

    def _put(self, kind: str, what: str, entity: Mapping[str, Any], etag: str | None) -> str | None:
        """Create `entity` (etag None) or replace it if unchanged since read. Returns the
        new ETag (None if the service gave none). An entity of a `REMEMBERED` kind is
        remembered as written."""
        op, body, options = self._replace(entity, etag)
        if op == "create":
            written = self._write(kind, what, lambda t: t.create_entity(body))
        else:
            written = self._write(kind, what, lambda t: t.update_entity(body, **options))
        new = written.get("etag") if isinstance(written, Mapping) else None
        self._remember(kind, body, None if new is None else str(new))
        return None if new is None else str(new)

    def _remember(self, kind: str, fields: Mapping[str, Any], etag: str | None) -> None:
        """Keep `fields` as the entity's content at `etag` (None: forget it)."""
        if kind not in REMEMBERED:
            return
        where = (kind, str(fields["PartitionKey"]), str(fields["RowKey"]))
        with self._lock:
            self._known.pop(where, None)
            if etag is None:
                return
            self._known[where] = (etag, dict(fields))
            while len(self._known) > _KNOWN_MAX:
                del self._known[next(iter(self._known))]

    def _remember_read(self, kind: str, found: Any) -> None:
        """Keep an entity as read (with its ETag)."""
        if kind in REMEMBERED and found is not None:
            self._remember(kind, found, etag_of(found))

    def _forget(self, kind: str, pk: str, rk: str) -> None:
        with self._lock:
            self._known.pop((kind, pk, rk), None)

    def _known_entity(self, kind: str, pk: str, rk: str) -> tuple[str, dict[str, Any]] | None:
        with self._lock:
            known = self._known.get((kind, pk, rk))
        return None if known is None else (known[0], dict(known[1]))

    def _batch(self, kind: str, what: str, ops: list[tuple[str, Any, Any]]) -> list[str | None]:
        """One entity-group transaction (all of `ops`, one partition, or none of them).
        Returns each operation's new ETag, in order (None where the service gave none)."""
        if not ops:
            return []
        answers = self._write(kind, what, lambda t: t.submit_transaction(ops))
        etags = [a.get("etag") if isinstance(a, Mapping) else None for a in answers or ()]
        return [None if e is None else str(e) for e in etags] + [None] * (len(ops) - len(etags))

    def _upsert(self, kind: str, what: str, entity: Mapping[str, Any]) -> None:
        from azure.data.tables import UpdateMode

        body = dict(entity)
        self._write(kind, what, lambda t: t.upsert_entity(body, mode=UpdateMode.REPLACE))

    def _change(
        self,
        kind: str,
        what: str,
        pk: str,
        rk: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        *,
        now: datetime | None = None,
    ) -> bool:
        """Read, compute the new entity with `change(fields or None)` (None: leave it), and
        write it on condition that it did not change meanwhile; again when it did. An
        entity past its `expireAt` (with `now` given) is read as absent. An entity this
        process remembers (`REMEMBERED`) is not read first: the write on condition of its
        ETag is the check, and a refusal (it moved on, or went) sends the read round.
        Returns whether it wrote (False: `change` left it as it was)."""
        known = self._known_entity(kind, pk, rk)
        for _ in rounds():
            found: Mapping[str, Any] | None
            found_etag: str | None
            if known is not None:
                found_etag, found = known
                known = None
            else:
                found = self._get(kind, pk, rk)
                self._remember_read(kind, found)
                found_etag = None if found is None else etag_of(found)
            current = found if found is None or now is None or live(found, now) else None
            fields = change(None if current is None else dict(current))
            if fields is None:
                return False
            fields |= {"PartitionKey": pk, "RowKey": rk}
            try:
                self._put(kind, what, fields, found_etag)
            except Conflict:
                self._forget(kind, pk, rk)
                continue
            return True
        raise self._contended(what)

    def _delete_as_read(self, kind: str, entity: Any) -> None:
        self._delete_at(kind, entity["PartitionKey"], entity["RowKey"], etag_of(entity))

    def _delete_at(self, kind: str, pk: str, rk: str, etag: str) -> None:
        """Delete an entity on condition of its ETag (`Conflict`: it moved on, or went)."""
        from azure.core import MatchConditions

        self._call(
            kind,
            "delete",
            lambda t: t.delete_entity(
                pk, rk, etag=etag, match_condition=MatchConditions.IfNotModified
            ),
        )
        self._forget(kind, pk, rk)

    def _rows(self, kind: str, pk: str, rks: Sequence[str]) -> dict[str, Any]:
        """RowKey → entity of the rows `rks` of one partition that are there: one point
        read for one row, else queries naming up to `ROWS_PER_QUERY` rows each."""
        wanted = list(dict.fromkeys(rks))
        if len(wanted) == 1:
            found = self._get(kind, pk, wanted[0])
            return {} if found is None else {wanted[0]: found}
        out: dict[str, Any] = {}
        for start in range(0, len(wanted), ROWS_PER_QUERY):
            some = wanted[start : start + ROWS_PER_QUERY]
            names = " or ".join(f"RowKey eq @r{n}" for n in range(len(some)))
            parameters = {"pk": pk} | {f"r{n}": rk for n, rk in enumerate(some)}
            # spaces around the parentheses: the SDK finds @names by splitting on spaces
            for entity in self._query(kind, f"PartitionKey eq @pk and ( {names} )", parameters):
                out[str(entity["RowKey"])] = entity
        return out
