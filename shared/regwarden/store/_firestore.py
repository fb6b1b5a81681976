"""Firestore ledger: the `Ledger` protocol in Firestore (Native mode), for Google Cloud.

`firestore://PROJECT[/DATABASE][?prefix=NAME]` opens it (database `(default)` unless named;
collections are named `NAME_<kind>`, `regwarden_<kind>` by default). One collection per
kind of record, each document at an id made from its key (`_firestore_values.doc_id`), so
every read but the listings below is a direct get by name:

| kind          | document id (its key's parts, `#`-joined)  | expires (`expireAt`) |
| ------------- | ------------------------------------------ | -------------------- |
| `deliveries`  | delivery id                                | yes                  |
| `outcomes`    | delivery id                                | yes                  |
| `images`      | registry, repository, digest               | no                   |
| `tags`        | registry, repository, tag, digest          | no                   |
| `verdicts`    | registry, repository, digest               | no                   |
| `verdict_log` | registry, repository, digest, time, nonce  | no                   |
| `quarantine`  | registry, repository, digest               | no                   |
| `actions`     | action key                                 | no                   |
| `outbox`      | alert key (`<dedup key>:<channel>`)        | once sent            |
| `failures`    | function, message key                      | yes                  |
| `pulls`       | registry, repository, digest, principal    | no                   |
| `pull_tracking` | registry, repository                     | no                   |
| `access_windows` | window key                              | no                   |

Listings are `runQuery`s that Firestore's automatic single-field indexes serve, so the
database needs no composite index: equality filters only (`repo` for a repository's images
and tag history, `repo` and `tag` for one tag, `image` for a digest's verdict log, `status`
for actions, `pending` for unsent alerts, `repo` for a repository's pull tallies), or one
range filter ordered by the same field (`pendingAt <= now` for the alerts due, `expireAt <=
now` for `expire_deliveries`, `closesAt <= now` for the access windows due).

Concurrency: optimistic. A write reads the documents it depends on (one `batchGet`, which
answers each document's `updateTime`), decides, and commits with a precondition on each of
them — `currentDocument.exists = false` where it found none, `currentDocument.updateTime`
where it found one — in one `commit`, which Firestore applies atomically, all or nothing.
A precondition that fails (ALREADY_EXISTS or FAILED_PRECONDITION) or a contended commit
(ABORTED) means another writer went first: the round is read and decided again, at most
`ROUNDS` times, after a random pause that grows each round (each lost round is some
other writer's progress; the pauses keep writers of one hot document from colliding in
step). Chosen over
`beginTransaction` + `commit(transaction)` because it is two requests instead of three,
holds no lock on the server across a function's network latency (a read-write
transaction's reads lock their documents until it commits or times out), and states the
exact condition of each write in the request itself.

`commit_outcome` is the atomic unit: verdict, verdict-log entry, the delivery's outcome
marker (only if none lives) and the outbox rows (each only if its key is absent or past
its 30-day window) in ONE commit; rows already there are left out and the round repeated
if a precondition failed. A commit holds at most 500 writes: outbox rows past that are
committed first on their own (alerts are at-least-once anyway). Every commit carries a
nonce in what it writes, so a commit the client library re-sent after it went through
(it retries UNAVAILABLE) is recognised as this attempt's own, not a rival's.

Expiry: expiring documents carry `expireAt`, a timestamp for the database's TTL policy
(`TTL_FIELD` on each of `EXPIRING`; the Terraform declares them), and since TTL deletion
is lazy (within days) every reader compares `expireAt` with the caller's `now` itself: an
expired document counts as absent. An alert's de-duplication window is `dedupUntil`; it
becomes its `expireAt` only once sent, so an alert never sent is never dropped.

Pull tallies (`record_pulls`) are counted without a read: each tally document is written
with an update mask of its identity fields and two field transforms, `increment` of `count`
and `maximum` of `lastPulledMicros` (the last pull as microseconds since the epoch: the
transforms take numbers only, not timestamps), so processes counting pulls of one image side
by side never conflict over a tally. The image documents' `lastPulled` (a timestamp that
`record_pull` and `image_times` share) is read and written on condition, in the same commit
as the transforms; each such write carries the commit's nonce, so a commit the client
library re-sent after it went through is recognised as its own and its increments are not
made twice. Access windows (`open_access_window`, `count_access`, `drop_access_window`) are
read and written on condition of their update time; the window's `openedAt` is what the
caller names.

No work queue: on Google Cloud, events arrive through Pub/Sub and rechecks through Cloud
Tasks; `regwarden serve` on this ledger takes `--queue sqlite:///PATH`.

The Firestore client (`google-cloud-firestore`'s GAPIC `FirestoreClient`, REST transport,
made by `gcp_clients.client_kwargs`) is imported on first use: importing this module
costs nothing.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

from ..errors import RegistryError
from ._access import AccessWindow, PullTally, check_tally, check_window_key
from ._firestore_values import decode, doc_id, encode, from_micros, micros, protos, utc
from ._outcome import (
    OUTBOX_TTL,
    DeliveryOutcome,
    Findings,
    OutboxItem,
    Outcome,
    VerdictRecord,
    findings_from,
    findings_json,
)
from ._records import ActionRecord, FailureNote, QuarantineRecord, select_quarantines
from ._tag_rows import TagRowQueries
from ._urls import ParsedUrl

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_PREFIX",
    "EXPIRING",
    "KINDS",
    "MAX_WRITES",
    "PULL_ROUNDS",
    "ROUNDS",
    "TALLIES_PER_COMMIT",
    "TTL_FIELD",
    "FirestoreLedger",
    "collection_names",
    "open_firestore",
]

DEFAULT_DATABASE = "(default)"
DEFAULT_PREFIX = "regwarden"
TTL_FIELD = "expireAt"
"""The timestamp field of the database's TTL policies (one per collection in `EXPIRING`)."""
KINDS = (
    "deliveries",
    "outcomes",
    "images",
    "tags",
    "verdicts",
    "verdict_log",
    "quarantine",
    "actions",
    "outbox",
    "failures",
    "pulls",
    "pull_tracking",
    "access_windows",
)
EXPIRING = ("deliveries", "outcomes", "outbox", "failures")
"""The kinds whose documents carry `expireAt`."""
MAX_WRITES = 500
"""Writes in one commit, Firestore's limit."""
ROUNDS = 10
"""Read-decide-commit rounds of one write before contention is an error."""
PULL_ROUNDS = 2 * ROUNDS
"""Rounds of one `record_pulls` commit: processes flushing pulls of one hot image contend on
its document, and a flush is background work that had better wait its turn than fail."""
TALLIES_PER_COMMIT = MAX_WRITES // 2
"""Pull tallies in one commit: each writes its tally and, at most, its image."""
_FIRST_PAUSE = 0.01
_MAX_PAUSE = 0.5

_ABSENT: Final = "absent"
_ANY: Final = "any"


def collection_names(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """Kind → collection id for a prefix (what the Terraform's TTL policies name)."""
    return {kind: f"{prefix}_{kind}" for kind in KINDS}


@dataclass(frozen=True, slots=True)
class _Doc:
    """A document as read: its fields and the update time a precondition names."""

    name: str
    fields: dict[str, Any]
    update_time: Any  # google.protobuf.Timestamp

    def live(self, now: datetime) -> bool:
        """Not past its `expireAt` (a document without one never expires)."""
        expires = self.fields.get(TTL_FIELD)
        return expires is None or expires > now


Guard = _Doc | str
"""A write's precondition: the document as read (unchanged since), `_ABSENT` (must not
exist) or `_ANY` (none)."""


class _Conflict(Exception):
    """A commit's precondition failed or it was aborted: another writer went first."""


def _rounds(count: int = ROUNDS) -> Iterator[int]:
    """`count` round numbers, with a random pause before each round after the first (up
    to 10 ms, 20 ms, … 0.5 s): writers that collided on one document spread out instead of
    colliding again in step (full jitter, as Google's client libraries back off)."""
    for n in range(count):
        if n:
            pause = min(_MAX_PAUSE, _FIRST_PAUSE * 2 ** (n - 1))
            time.sleep(random.uniform(0, pause))  # noqa: S311  (jitter, not a secret)
        yield n


def _repo(registry: str, repository: str) -> str:
    return f"{registry}/{repository}"


def _unique(alerts: Sequence[OutboxItem]) -> list[OutboxItem]:
    """One row per key (one commit writes a document once): the first wins."""
    seen: dict[str, OutboxItem] = {}
    for alert in alerts:
        seen.setdefault(alert.key, alert)
    return list(seen.values())


class FirestoreLedger(TagRowQueries):
    """Ledger in one Firestore database. Thread-safe (one client, shared)."""

    queue_note: ClassVar[str] = (
        "on Google Cloud, events arrive through Pub/Sub and rechecks through Cloud Tasks"
    )
    """Why `open_queue` finds no queue in this ledger (said with its usage error)."""

    def __init__(
        self,
        project: str,
        *,
        database: str = DEFAULT_DATABASE,
        prefix: str = DEFAULT_PREFIX,
        client: Any = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`client`: a `FirestoreClient` to use; else one is made on first use from `env`
        (default: the process environment; `REGWARDEN_GCP_ENDPOINT_FIRESTORE`)."""
        self.project = project
        self.database = database
        self.prefix = prefix
        self.root = f"projects/{project}/databases/{database}"
        self.collections = collection_names(prefix)
        self._client = client
        self._env = env
        self._lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud.firestore_v1.services.firestore import FirestoreClient

                from .. import gcp_clients

                env = os.environ if self._env is None else self._env
                self._client = FirestoreClient(**gcp_clients.client_kwargs("firestore", env))
            return self._client

    def close(self) -> None:
        with self._lock:
            transport = getattr(self._client, "transport", None)
            close = getattr(transport, "close", None)
            if callable(close):
                close()
            self._client = None

    def name(self, kind: str, *key: str) -> str:
        """The full resource name of the `kind` document with key `key`."""
        return f"{self.root}/documents/{self.collections[kind]}/{doc_id(*key)}"

    @staticmethod
    def _errors() -> tuple[type[Exception], ...]:
        import requests
        from google.api_core.exceptions import GoogleAPIError
        from google.auth.exceptions import GoogleAuthError

        return (GoogleAPIError, GoogleAuthError, requests.RequestException)

    def _failed(self, what: str, exc: Exception) -> RegistryError:
        """A Firestore error as the pipeline's infrastructure error (the event is retried)."""
        return RegistryError(f"Firestore {self.root}: {what} failed: {exc}")

    def _get_many(self, names: Iterable[str]) -> dict[str, _Doc | None]:
        """The documents `names` (None: absent), by one `batchGet`."""
        wanted = list(dict.fromkeys(names))
        found: dict[str, _Doc | None] = dict.fromkeys(wanted)
        if not wanted:
            return found
        request = protos().BatchGetDocumentsRequest(database=self.root, documents=wanted)
        try:
            answers = list(self.client.batch_get_documents(request=request))
        except self._errors() as exc:
            raise self._failed("batchGet", exc) from exc
        for answer in answers:
            pb = type(answer).pb(answer)
            if pb.HasField("found"):
                found[pb.found.name] = self._doc(pb.found)
        return found

    def _get(self, name: str) -> _Doc | None:
        """One document (None: absent), by GetDocument: a unary call, where batchGet is a
        server stream that the REST transport reads one byte at a time (~5 ms a read)."""
        from google.api_core.exceptions import NotFound

        try:
            pb = self.client.get_document(request={"name": name})
        except NotFound:
            return None
        except self._errors() as exc:
            raise self._failed("get", exc) from exc
        return self._doc(type(pb).pb(pb))

    @staticmethod
    def _doc(pb: Any) -> _Doc:
        fields = {k: decode(v) for k, v in pb.fields.items()}
        return _Doc(pb.name, fields, pb.update_time)

    def _query(
        self,
        kind: str,
        *,
        equal: Mapping[str, Any] | None = None,
        at_most: tuple[str, datetime] | None = None,
        limit: int | None = None,
    ) -> list[_Doc]:
        """`runQuery` on one collection: equality filters, or one `<=` filter ordered by its
        field (what single-field indexes serve), up to `limit` documents."""
        p = protos()
        sq = p.StructuredQuery()
        sq.from_.add(collection_id=self.collections[kind])  # proto-plus names `from` so
        filters = [
            p.StructuredQuery.FieldFilter(
                field=p.StructuredQuery.FieldReference(field_path=field),
                op=p.StructuredQuery.FieldFilter.Operator.EQUAL,
                value=encode(value),
            )
            for field, value in (equal or {}).items()
        ]
        if at_most is not None:
            field, bound = at_most
            filters.append(
                p.StructuredQuery.FieldFilter(
                    field=p.StructuredQuery.FieldReference(field_path=field),
                    op=p.StructuredQuery.FieldFilter.Operator.LESS_THAN_OR_EQUAL,
                    value=encode(bound),
                )
            )
            sq.order_by.add(
                field=p.StructuredQuery.FieldReference(field_path=field),
                direction=p.StructuredQuery.Direction.ASCENDING,
            )
        if len(filters) == 1:
            sq.where.field_filter.CopyFrom(filters[0])
        elif filters:
            sq.where.composite_filter.op = p.StructuredQuery.CompositeFilter.Operator.AND
            for one in filters:
                sq.where.composite_filter.filters.add(field_filter=one)
        if limit is not None:
            sq.limit.value = limit
        request = p.RunQueryRequest(parent=f"{self.root}/documents", structured_query=sq)
        try:
            answers = list(self.client.run_query(request=request))
        except self._errors() as exc:
            raise self._failed(f"runQuery on {self.collections[kind]}", exc) from exc
        docs = []
        for answer in answers:
            pb = type(answer).pb(answer)
            if pb.HasField("document"):
                docs.append(self._doc(pb.document))
        return docs

    @staticmethod
    def _put(name: str, fields: Mapping[str, Any], guard: Guard) -> Any:
        """A write of the whole document (fields that are None are left out), with the
        precondition `guard` names."""
        p = protos()
        values = {k: encode(v) for k, v in fields.items() if v is not None}
        write = p.Write(update=p.Document(name=name, fields=values))
        if guard == _ABSENT:
            write.current_document.exists = False
        elif isinstance(guard, _Doc):
            write.current_document.update_time.CopyFrom(guard.update_time)
        return write

    @staticmethod
    def _guard(found: _Doc | None) -> Guard:
        return _ABSENT if found is None else found

    def _commit(self, writes: Sequence[Any]) -> None:
        """One atomic commit. Raises `_Conflict` when a precondition failed or the commit was
        aborted, RegistryError for anything else."""
        if not writes:
            return
        from google.api_core.exceptions import GoogleAPICallError

        request = protos().CommitRequest(database=self.root, writes=list(writes))
        try:
            self.client.commit(request=request)
        except GoogleAPICallError as exc:
            if _is_conflict(exc):
                raise _Conflict from exc
            raise self._failed("commit", exc) from exc
        except self._errors() as exc:
            raise self._failed("commit", exc) from exc

    def _write(self, what: str, writes: Sequence[Any]) -> None:
        """A commit with no precondition of its own: only an aborted one is tried again."""
        for _ in _rounds():
            try:
                self._commit(writes)
            except _Conflict:
                continue
            return
        raise self._contended(what)

    def _contended(self, what: str, count: int = ROUNDS) -> RegistryError:
        return RegistryError(
            f"Firestore {self.root}: {what} did not go through in {count} rounds "
            "(other writers changed its documents each time)"
        )

    def _change(
        self,
        what: str,
        name: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        *,
        now: datetime | None = None,
    ) -> dict[str, Any] | None:
        """Read `name`, compute its new fields with `change(fields or None)` (None: leave it
        as it is) and write them on condition that it did not change meanwhile; again when
        it did. A document past its `expireAt` (with `now` given) is read as absent."""
        for _ in _rounds():
            found = self._get(name)
            if found is not None and now is not None and not found.live(now):
                current = None
            else:
                current = found
            fields = change(None if current is None else dict(current.fields))
            if fields is None:
                return None
            try:
                self._commit([self._put(name, fields, self._guard(found))])
            except _Conflict:
                continue
            return dict(fields)
        raise self._contended(what)

    # -- deliveries (idempotency) -------------------------------------------------------------

    def seen_delivery(self, delivery_id: str, *, now: datetime, ttl: timedelta) -> bool:
        """Record a delivery id; True if it was already recorded and not expired."""
        at, expires = utc(now), utc(now + ttl)
        name = self.name("deliveries", delivery_id)
        for _ in _rounds():
            found = self._get(name)
            if found is not None and found.live(at):
                return True
            fields = {"deliveryId": delivery_id, "receivedAt": at, TTL_FIELD: expires}
            try:
                self._commit([self._put(name, fields, self._guard(found))])
            except _Conflict:
                continue
            return False
        raise self._contended("seen_delivery")

    def forget_delivery(self, delivery_id: str) -> None:
        """Drop a delivery id so a retry of the same event is processed again."""
        self._write(
            "forget_delivery", [protos().Write(delete=self.name("deliveries", delivery_id))]
        )

    def expire_deliveries(self, *, now: datetime) -> int:
        """Delete expired delivery ids and outcomes now (the TTL policy does this on its own,
        lazily; for parity with the SQLite ledger and for tests)."""
        at = utc(now)
        expired = self._query("deliveries", at_most=(TTL_FIELD, at))
        expired += self._query("outcomes", at_most=(TTL_FIELD, at))
        p = protos()
        deleted = 0
        for first in range(0, len(expired), MAX_WRITES):
            chunk = expired[first : first + MAX_WRITES]
            writes = []
            for doc in chunk:
                write = p.Write(delete=doc.name)  # only as read: a renewed one stays
                write.current_document.update_time.CopyFrom(doc.update_time)
                writes.append(write)
            try:
                self._commit(writes)
            except _Conflict:
                continue  # one was renewed meanwhile: the sweep after this one takes the rest
            deleted += len(chunk)
        return deleted

    # -- outcomes (a delivery is handled only together with what it leaves behind) -----------

    def delivery_outcome(self, delivery_id: str, *, now: datetime) -> DeliveryOutcome | None:
        """The committed outcome of a delivery, if it was handled and has not expired."""
        found = self._get(self.name("outcomes", delivery_id))
        if found is None or not found.live(utc(now)):
            return None
        f = found.fields
        return DeliveryOutcome(
            delivery_id, f["handledAt"], f.get("recheckAt"), f.get("recheckImage")
        )

    def commit_outcome(
        self, outcome: Outcome, *, now: datetime, ttl: timedelta
    ) -> list[str] | None:
        """In one commit: the verdict and its log entry, the delivery's outcome marker (kept
        for `ttl`, written only if no unexpired one is there) and the outbox rows (each only
        if its key is absent or past its window). Returns the outbox keys it added, or None
        when the delivery was committed before (nothing is written)."""
        o = outcome
        at, expires = utc(now), utc(now + ttl)
        recheck_at = utc(o.recheck_at) if o.recheck_at is not None else None
        nonce = uuid.uuid4().hex
        core: list[Any] = []
        if o.verdict is not None:
            verdict = self._verdict_fields(
                o.registry, o.repository, o.digest, o.verdict, at, o.findings
            )
            core.append(
                self._put(self.name("verdicts", o.registry, o.repository, o.digest), verdict, _ANY)
            )
            entry = {
                "repo": _repo(o.registry, o.repository),
                "image": f"{_repo(o.registry, o.repository)}@{o.digest}",
                "digest": o.digest,
                "deliveryId": o.delivery_id,
                "outcome": o.verdict,
                "at": at,
            }
            # the nonce keeps every entry: a verdict committed twice shows as two (and a
            # re-sent commit of this one writes the same entry again, not a second)
            log = self.name(
                "verdict_log", o.registry, o.repository, o.digest, at.isoformat(), nonce
            )
            core.append(self._put(log, entry, _ANY))
        marker: tuple[str, dict[str, Any]] | None = None
        if o.delivery_id is not None:
            marker = (
                self.name("outcomes", o.delivery_id),
                {
                    "deliveryId": o.delivery_id,
                    "handledAt": at,
                    "recheckAt": recheck_at,
                    "recheckImage": o.recheck_image,
                    "commit": nonce,
                    TTL_FIELD: expires,
                },
            )
        rows = [
            (a.key, self.name("outbox", a.key), self._outbox_row(a, at, nonce))
            for a in _unique(o.alerts)
        ]
        room = MAX_WRITES - len(core) - (marker is not None)
        added: list[str] = []
        for first in range(room, len(rows), MAX_WRITES):  # past the limit: committed first
            done = self._commit_rows([], None, rows[first : first + MAX_WRITES], at, nonce)
            added += done or []
        done = self._commit_rows(core, marker, rows[:room], at, nonce)
        return None if done is None else done + added

    def _commit_rows(
        self,
        core: list[Any],
        marker: tuple[str, dict[str, Any]] | None,
        rows: list[tuple[str, str, dict[str, Any]]],
        at: datetime,
        nonce: str,
    ) -> list[str] | None:
        """Rounds of one commit of `core`, `marker` (if none lives) and the `rows` whose key
        is free. Returns the keys of the rows this commit wrote, or None when a live marker
        of another commit was found."""
        for _ in _rounds():
            names = [marker[0]] if marker is not None else []
            found = self._get_many(names + [name for _, name, _ in rows])
            writes = list(core)
            if marker is not None:
                there = found[marker[0]]
                if there is not None and there.live(at):
                    if there.fields.get("commit") != nonce:
                        return None  # another attempt committed this delivery
                    # this commit went through before the client library re-sent it
                    return [k for k, n, _ in rows if _written_by(found[n], nonce)]
                writes.append(self._put(marker[0], marker[1], self._guard(there)))
            keys = []
            for key, name, row in rows:
                there = found[name]
                if there is not None and there.fields.get("dedupUntil", at) > at:
                    if _written_by(there, nonce):
                        keys.append(key)
                    continue  # the same alert is in its window: not added again
                writes.append(self._put(name, row, self._guard(there)))
                keys.append(key)
            try:
                self._commit(writes)
            except _Conflict:
                continue
            return keys
        raise self._contended("commit_outcome")

    @staticmethod
    def _outbox_row(item: OutboxItem, at: datetime, nonce: str) -> dict[str, Any]:
        return {
            "key": item.key,
            "channel": item.channel,
            "alert": item.alert,
            "createdAt": at,
            "dedupUntil": at + OUTBOX_TTL,
            "attempts": 0,
            "nextAttempt": at,
            "pending": True,
            "pendingAt": at,
            "commit": nonce,
        }

    def verdict_log(
        self, registry: str, repository: str, digest: str
    ) -> list[tuple[str | None, str, datetime]]:
        """(delivery id, outcome, at) of every verdict committed for a digest, oldest first
        (audits and the chaos tests: one handled delivery, one entry)."""
        docs = self._query(
            "verdict_log", equal={"image": f"{_repo(registry, repository)}@{digest}"}
        )
        out = [(d.fields.get("deliveryId"), str(d.fields["outcome"]), d.fields["at"]) for d in docs]
        return sorted(out, key=lambda r: r[2])

    # -- alert outbox -------------------------------------------------------------------------

    def outbox_pending(self, *, now: datetime, limit: int = 100) -> list[OutboxItem]:
        """Unsent alerts whose next attempt is due, soonest due first, then by key."""
        at = utc(now)
        if limit <= 0:
            return []
        docs = self._query("outbox", at_most=("pendingAt", at), limit=limit)
        if len(docs) == limit:
            # Firestore breaks ties by document id, not by key: take every row due at the
            # last one's moment, so the cut falls where the key order puts it
            last = docs[-1].fields["pendingAt"]
            docs = [d for d in docs if d.fields["pendingAt"] < last]
            docs += self._query("outbox", equal={"pendingAt": last})
        docs.sort(key=lambda d: (d.fields["pendingAt"], str(d.fields["key"])))
        return [
            OutboxItem(
                str(f["key"]),
                str(f["channel"]),
                str(f["alert"]),
                int(f.get("attempts", 0)),
                f.get("nextAttempt"),
                f.get("error"),
            )
            for f in (d.fields for d in docs[:limit])
        ]

    def outbox_sent(self, key: str, *, now: datetime) -> None:
        """Delivered: no longer pending, and expiring with its de-duplication window."""
        at = utc(now)

        def sent(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            if fields is None:
                return None  # an unknown key: nothing appears
            for gone in ("pending", "pendingAt", "error"):
                fields.pop(gone, None)
            fields["sentAt"] = at
            fields["attempts"] = int(fields.get("attempts", 0)) + 1
            fields[TTL_FIELD] = fields["dedupUntil"]
            return fields

        self._change("outbox_sent", self.name("outbox", key), sent)

    def outbox_retry(self, key: str, *, at: datetime, error: str) -> None:
        """A failed send: try again at `at` (a row already sent stays sent)."""
        due = utc(at)

        def retry(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            if fields is None or not fields.get("pending"):
                return None
            fields |= {"nextAttempt": due, "pendingAt": due, "error": error}
            fields["attempts"] = int(fields.get("attempts", 0)) + 1
            return fields

        self._change("outbox_retry", self.name("outbox", key), retry)

    def outbox_unsent(self) -> int:
        """Alerts not yet delivered (due or backing off)."""
        return len(self._query("outbox", equal={"pending": True}))

    # -- failed records (the dead letters' "why") ---------------------------------------------

    def note_failure(
        self, function: str, key: str, error: str, *, now: datetime, ttl: timedelta
    ) -> None:
        """Count one failed attempt of a message (`key`), keeping its first and its latest
        error, for `ttl` (as long as the subscription and its dead-letter topic keep it)."""
        at, expires = utc(now), utc(now + ttl)

        def noted(fields: dict[str, Any] | None) -> dict[str, Any]:
            fields = fields or {"firstError": error, "firstAt": at, "failures": 0}
            fields |= {"lastError": error, "lastAt": at, TTL_FIELD: expires}
            fields["failures"] = int(fields["failures"]) + 1
            return fields

        self._change("note_failure", self.name("failures", function, key), noted, now=at)

    def failure(self, function: str, key: str) -> FailureNote | None:
        """The note of a failed message (kept until the TTL policy deletes it)."""
        found = self._get(self.name("failures", function, key))
        if found is None:
            return None
        f = found.fields
        return FailureNote(
            str(f["firstError"]), f["firstAt"], str(f["lastError"]), f["lastAt"], int(f["failures"])
        )

    # -- images and tags ----------------------------------------------------------------------

    def record_push(
        self, registry: str, repository: str, digest: str, tags: tuple[str, ...], *, now: datetime
    ) -> datetime:
        """Returns the digest's first-seen time. One read of the image and its tags, one
        commit of those not there yet (the first sighting of each wins)."""
        at = utc(now)
        repo = _repo(registry, repository)
        image = self.name("images", registry, repository, digest)
        tag_docs = {tag: self.name("tags", registry, repository, tag, digest) for tag in tags}
        for _ in _rounds():
            found = self._get_many([image, *tag_docs.values()])
            there = found[image]
            first_seen: datetime = there.fields["firstSeen"] if there is not None else at
            writes = []
            if there is None:
                fields: dict[str, Any] = {"registry": registry, "repository": repository}
                fields |= {"repo": repo, "digest": digest, "firstSeen": at}
                writes.append(self._put(image, fields, _ABSENT))
            for tag, name in tag_docs.items():
                if found[name] is None:
                    row: dict[str, Any] = {"registry": registry, "repository": repository}
                    row |= {"repo": repo, "tag": tag, "digest": digest, "seenAt": at}
                    writes.append(self._put(name, row, _ABSENT))
            try:
                self._commit(writes)
            except _Conflict:
                continue
            return first_seen
        raise self._contended("record_push")

    def record_pull(self, registry: str, repository: str, digest: str, *, now: datetime) -> None:
        """Pull times only move forward (late, out-of-order events are ignored)."""
        at = utc(now)

        def pulled(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            if fields is None:
                fields = {"registry": registry, "repository": repository, "digest": digest}
                fields |= {"repo": _repo(registry, repository), "firstSeen": at}
            elif fields.get("lastPulled") is not None and fields["lastPulled"] >= at:
                return None
            fields["lastPulled"] = at
            return fields

        self._change("record_pull", self.name("images", registry, repository, digest), pulled)

    def image_times(
        self, registry: str, repository: str
    ) -> dict[str, tuple[datetime, datetime | None]]:
        """digest → (first seen, last pulled) for one repository."""
        docs = self._query("images", equal={"repo": _repo(registry, repository)})
        return {
            str(d.fields["digest"]): (d.fields["firstSeen"], d.fields.get("lastPulled"))
            for d in docs
        }

    def _tag_rows(
        self, registry: str, repository: str, tag: str | None
    ) -> list[tuple[str, str, datetime]]:
        """(tag, digest, seen at) of the tag history, oldest first."""
        equal: dict[str, Any] = {"repo": _repo(registry, repository)}
        if tag is not None:
            equal["tag"] = tag
        rows = [
            (str(d.fields["tag"]), str(d.fields["digest"]), d.fields["seenAt"])
            for d in self._query("tags", equal=equal)
        ]
        return sorted(rows, key=lambda r: (r[2], r[1]))

    def tag_history(self, registry: str, repository: str) -> list[tuple[str, str, datetime]]:
        """(tag, digest, first seen) for every tag → digest seen in a repository, oldest first
        (one query of the repository's tag documents)."""
        rows = self._tag_rows(registry, repository, None)
        return sorted(rows, key=lambda r: (r[2], r[0], r[1]))

    # -- verdicts -----------------------------------------------------------------------------

    @staticmethod
    def _verdict_fields(
        registry: str,
        repository: str,
        digest: str,
        outcome: str,
        at: datetime,
        findings: Findings | None = None,
    ) -> dict[str, Any]:
        fields = {
            "registry": registry,
            "repository": repository,
            "digest": digest,
            "outcome": outcome,
            "at": at,
        }
        if findings is not None:
            fields["findings"] = findings_json(findings)
        return fields

    def record_verdict(
        self, registry: str, repository: str, digest: str, outcome: str, *, now: datetime
    ) -> None:
        fields = self._verdict_fields(registry, repository, digest, outcome, utc(now))
        name = self.name("verdicts", registry, repository, digest)
        self._write("record_verdict", [self._put(name, fields, _ANY)])

    def last_verdict(self, registry: str, repository: str, digest: str) -> str | None:
        found = self._get(self.name("verdicts", registry, repository, digest))
        return None if found is None else str(found.fields["outcome"])

    def repository_verdicts(self, registry: str, repository: str) -> dict[str, VerdictRecord]:
        """digest → last verdict (outcome, when, findings) of one repository: one query, two
        equality filters (served by the single-field indexes, no composite index)."""
        docs = self._query("verdicts", equal={"registry": registry, "repository": repository})
        return {
            str(d.fields["digest"]): VerdictRecord(
                str(d.fields["outcome"]), d.fields["at"], findings_from(d.fields.get("findings"))
            )
            for d in docs
        }

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
        """Record the intent before the first write. Returns the existing record if the key
        was already recorded (a retry resumes it rather than starting over): one commit
        that creates the document only if it is absent, and a read only when it was not."""
        fields = {
            "key": key,
            "at": utc(now),
            "registry": registry,
            "repository": repository,
            "digest": digest,
            "kind": kind,
            "status": "intent",
            "reason": reason,
            "state": json.dumps(state),
        }
        name = self.name("actions", key)
        for _ in _rounds():
            try:
                self._commit([self._put(name, fields, _ABSENT)])
            except _Conflict:
                found = self._get(name)
                if found is None:
                    continue  # the commit was aborted, not refused: try again
                return self._action(found.fields)
            return self._action(fields)
        raise self._contended("begin_action")

    def finish_action(self, key: str, *, status: str, state: dict[str, Any] | None = None) -> None:
        """Set the status (and state); an unknown key changes nothing."""
        encoded = json.dumps(state) if state is not None else None

        def finished(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            if fields is None:
                return None
            fields["status"] = status
            if encoded is not None:
                fields["state"] = encoded
            return fields

        self._change("finish_action", self.name("actions", key), finished)

    def action(self, key: str) -> ActionRecord | None:
        found = self._get(self.name("actions", key))
        return None if found is None else self._action(found.fields)

    def actions(self, *, status: str | None = None) -> list[ActionRecord]:
        """Every action (or those with `status`), in the order they began."""
        equal = {"status": status} if status is not None else None
        records = [self._action(d.fields) for d in self._query("actions", equal=equal)]
        return sorted(records, key=lambda r: (r.at, r.key))

    @staticmethod
    def _action(f: Mapping[str, Any]) -> ActionRecord:
        return ActionRecord(
            str(f["key"]),
            f["at"],
            str(f["registry"]),
            str(f["repository"]),
            str(f["digest"]),
            str(f["kind"]),
            str(f["status"]),
            str(f["reason"]),
            json.loads(f["state"]),
        )

    # -- quarantine (never expires) -----------------------------------------------------------

    def record_quarantine(self, rec: QuarantineRecord) -> None:
        fields = {
            "registry": rec.registry,
            "repository": rec.repository,
            "digest": rec.digest,
            "strategy": rec.strategy,
            "location": rec.location,
            "tags": list(rec.tags),
            "reason": rec.reason,
            "quarantinedAt": utc(rec.quarantined_at),
            "releasedAt": utc(rec.released_at) if rec.released_at else None,
        }
        name = self.name("quarantine", rec.registry, rec.repository, rec.digest)
        self._write("record_quarantine", [self._put(name, fields, _ANY)])

    def quarantined(self, registry: str, repository: str, digest: str) -> QuarantineRecord | None:
        found = self._get(self.name("quarantine", registry, repository, digest))
        return None if found is None else self._quarantine(found.fields)

    def quarantines(self, *, released: bool | None = None) -> list[QuarantineRecord]:
        """The whole collection (an audit read), filtered and ordered here: an equality on
        a missing `releasedAt` is not something a Firestore query can ask."""
        records = [self._quarantine(d.fields) for d in self._query("quarantine")]
        return select_quarantines(records, released)

    @staticmethod
    def _quarantine(f: Mapping[str, Any]) -> QuarantineRecord:
        return QuarantineRecord(
            str(f["registry"]),
            str(f["repository"]),
            str(f["digest"]),
            str(f["strategy"]),
            str(f["location"]),
            tuple(str(t) for t in f.get("tags") or ()),
            str(f["reason"]),
            f["quarantinedAt"],
            f.get("releasedAt"),
        )

    def mark_released(self, registry: str, repository: str, digest: str, *, now: datetime) -> None:
        at = utc(now)

        def released(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if fields is None else fields | {"releasedAt": at}

        self._change(
            "mark_released", self.name("quarantine", registry, repository, digest), released
        )

    # -- access monitoring: pull tallies, tracking, alert windows -----------------------------

    def record_pulls(self, tallies: Sequence[PullTally]) -> None:
        """Add coalesced pulls: per tally, its (digest, principal) document's count grows
        and its last pull moves forward (field transforms, no read), and its image's
        `lastPulled` moves forward (read and written on condition; an image document it
        creates gets `firstSeen` = the first tally's time, as `record_pull` does). One
        `batchGet` (or GetDocument) and one commit per `TALLIES_PER_COMMIT` tallies."""
        checked = [check_tally(t) for t in tallies]  # all refused before anything is written
        first: dict[tuple[str, str, str], datetime] = {}
        merged: dict[tuple[str, str, str, str], tuple[datetime, int]] = {}
        for t in checked:
            at = utc(t.last_pulled)
            first.setdefault((t.registry, t.repository, t.digest), at)
            key = (t.registry, t.repository, t.digest, t.principal)
            last, count = merged.get(key, (at, 0))
            merged[key] = (max(last, at), count + t.count)
        items = list(merged.items())
        for start in range(0, len(items), TALLIES_PER_COMMIT):
            self._record_tallies(items[start : start + TALLIES_PER_COMMIT], first)

    def _record_tallies(
        self,
        chunk: list[tuple[tuple[str, str, str, str], tuple[datetime, int]]],
        first: Mapping[tuple[str, str, str], datetime],
    ) -> None:
        """One commit: the images' last pulls (on condition) and the tallies' transforms."""
        latest: dict[tuple[str, str, str], datetime] = {}
        for (registry, repository, digest, _), (last, _) in chunk:
            image = (registry, repository, digest)
            latest[image] = max(latest.get(image, last), last)
        names = {image: self.name("images", *image) for image in latest}
        tallies = [self._tally_write(key, last, count) for key, (last, count) in chunk]
        nonce = uuid.uuid4().hex
        for _ in _rounds(PULL_ROUNDS):
            if len(names) == 1:
                (only,) = names.values()
                found = {only: self._get(only)}
            else:
                found = self._get_many(names.values())
            if any(_written_by(doc, nonce) for doc in found.values()):
                return  # this commit went through before the client library re-sent it
            writes = []
            for image, name in names.items():
                there = found[name]
                if there is None:
                    registry, repository, digest = image
                    fields: dict[str, Any] = {"registry": registry, "repository": repository}
                    fields |= {"repo": _repo(registry, repository), "digest": digest}
                    fields |= {"firstSeen": first[image], "lastPulled": latest[image]}
                else:
                    fields = dict(there.fields)
                    old = fields.get("lastPulled")
                    fields["lastPulled"] = latest[image] if old is None else max(old, latest[image])
                fields["commit"] = nonce  # written even when unchanged: the commit's own mark
                writes.append(self._put(name, fields, self._guard(there)))
            try:
                self._commit(writes + tallies)
            except _Conflict:
                continue
            return
        raise self._contended("record_pulls", PULL_ROUNDS)

    def _tally_write(self, key: tuple[str, str, str, str], last: datetime, count: int) -> Any:
        """A tally document's write: its identity fields (an update mask: nothing else is
        touched), `count` incremented and `lastPulledMicros` raised to `last`."""
        registry, repository, digest, principal = key
        fields = {"registry": registry, "repository": repository, "digest": digest}
        fields |= {"principal": principal, "repo": _repo(registry, repository)}
        p = protos()
        values = {k: encode(v) for k, v in fields.items()}
        write = p.Write(update=p.Document(name=self.name("pulls", *key), fields=values))
        write.update_mask.field_paths.extend(fields)
        write.update_transforms.add(field_path="count").increment.CopyFrom(encode(count))
        raised = write.update_transforms.add(field_path="lastPulledMicros")
        raised.maximum.CopyFrom(encode(micros(last)))
        return write

    def pull_tallies(self, registry: str, repository: str) -> list[PullTally]:
        """One tally per (digest, principal) of a repository, by digest, then principal (one
        query of the repository's tally documents)."""
        docs = self._query("pulls", equal={"repo": _repo(registry, repository)})
        out = [
            PullTally(
                str(f["registry"]),
                str(f["repository"]),
                str(f["digest"]),
                str(f["principal"]),
                from_micros(int(f["lastPulledMicros"])),
                int(f["count"]),
            )
            for f in (d.fields for d in docs)
        ]
        return sorted(out, key=lambda t: (t.digest, t.principal))

    def start_pull_tracking(self, registry: str, repository: str, *, now: datetime) -> datetime:
        """When pull tracking of the repository began: `now` unless an earlier start is
        recorded. A create on condition that none is there (one request, the usual case);
        when one is, a read and, only if it is later than `now`, a write on condition."""
        at = utc(now)
        name = self.name("pull_tracking", registry, repository)
        fields = {"registry": registry, "repository": repository, "since": at}
        found: _Doc | None = None
        for n in _rounds():
            if n:
                found = self._get(name)
            if found is not None and found.fields["since"] <= at:
                since: datetime = found.fields["since"]
                return since
            try:
                self._commit([self._put(name, fields, self._guard(found))])
            except _Conflict:
                continue
            return at
        raise self._contended("start_pull_tracking")

    def pull_tracking_since(self, registry: str, repository: str) -> datetime | None:
        found = self._get(self.name("pull_tracking", registry, repository))
        return None if found is None else found.fields["since"]

    @staticmethod
    def _window_fields(w: AccessWindow) -> dict[str, Any]:
        return {
            "key": w.key,
            "registry": w.registry,
            "repository": w.repository,
            "digest": w.digest,
            "openedAt": utc(w.opened_at),
            "closesAt": utc(w.closes_at),
            "count": w.count,
            "lastSeen": utc(w.last_seen) if w.last_seen is not None else None,
            "alert": w.alert,
        }

    @staticmethod
    def _window(f: Mapping[str, Any]) -> AccessWindow:
        return AccessWindow(
            str(f["key"]),
            str(f["registry"]),
            str(f["repository"]),
            str(f["digest"]),
            f["openedAt"],
            f["closesAt"],
            int(f.get("count", 0)),
            f.get("lastSeen"),
            str(f.get("alert", "")),
        )

    def open_access_window(
        self, window: AccessWindow, *, replacing: datetime | None = None
    ) -> bool:
        """Create the window (a create on condition that its key is free), or overwrite
        the one opened at `replacing` (a read, then a write on condition of its update
        time). False, and nothing written, when the key holds another window."""
        name = self.name("access_windows", check_window_key(window.key))
        fields = self._window_fields(window)
        over = utc(replacing) if replacing is not None else None
        for _ in _rounds():
            if over is None:
                try:
                    self._commit([self._put(name, fields, _ABSENT)])
                except _Conflict:
                    if self._get(name) is not None:
                        return False  # another window holds the key
                    continue  # aborted, not refused: try again
                return True
            found = self._get(name)
            if found is None or found.fields.get("openedAt") != over:
                return False
            try:
                self._commit([self._put(name, fields, found)])
            except _Conflict:
                continue
            return True
        raise self._contended("open_access_window")

    def access_window(self, key: str) -> AccessWindow | None:
        found = self._get(self.name("access_windows", key))
        return None if found is None else self._window(found.fields)

    def count_access(self, key: str, *, opened_at: datetime, add: int, last_seen: datetime) -> bool:
        """`count += add`, `lastSeen` the later of both, if the window is the one opened at
        `opened_at`: a read and a write on condition of its update time."""
        opened, seen = utc(opened_at), utc(last_seen)

        def counted(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            if fields is None or fields.get("openedAt") != opened:
                return None
            fields["count"] = int(fields.get("count", 0)) + add
            old = fields.get("lastSeen")
            fields["lastSeen"] = seen if old is None else max(old, seen)
            return fields

        return self._change("count_access", self.name("access_windows", key), counted) is not None

    def access_windows_due(self, *, now: datetime, limit: int = 100) -> list[AccessWindow]:
        """Windows with `closesAt <= now`, by closing time, then key (one query ordered by
        `closesAt`; ties at the cut are read whole, as `outbox_pending` does)."""
        at = utc(now)
        if limit <= 0:
            return []
        docs = self._query("access_windows", at_most=("closesAt", at), limit=limit)
        if len(docs) == limit:
            last = docs[-1].fields["closesAt"]
            docs = [d for d in docs if d.fields["closesAt"] < last]
            docs += self._query("access_windows", equal={"closesAt": last})
        windows = [self._window(d.fields) for d in docs]
        windows.sort(key=lambda w: (w.closes_at, w.key))
        return windows[:limit]

    def drop_access_window(self, key: str, *, opened_at: datetime) -> bool:
        """Delete the window if it is the one opened at `opened_at`: a read and a delete on
        condition of its update time."""
        opened = utc(opened_at)
        name = self.name("access_windows", key)
        for _ in _rounds():
            found = self._get(name)
            if found is None or found.fields.get("openedAt") != opened:
                return False
            write = protos().Write(delete=name)
            write.current_document.update_time.CopyFrom(found.update_time)
            try:
                self._commit([write])
            except _Conflict:
                continue
            return True
        raise self._contended("drop_access_window")


def _written_by(doc: _Doc | None, nonce: str) -> bool:
    return doc is not None and doc.fields.get("commit") == nonce


def _is_conflict(exc: Any) -> bool:
    """Did another writer go first? ALREADY_EXISTS (a create's document is there) and
    ABORTED (contention) are HTTP 409; FAILED_PRECONDITION (an update time that moved on)
    is HTTP 400, told from INVALID_ARGUMENT by the status in Google's error body."""
    code = getattr(exc, "code", None)
    if code == 409:
        return True
    if code != 400:
        return False
    response = getattr(exc, "response", None)
    try:
        status = response.json()["error"]["status"]  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError, ValueError):
        return False
    return bool(status == "FAILED_PRECONDITION")


_PROJECT = re.compile(r"(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
"""A project id (6 to 30 of a-z 0-9 -), optionally domain-scoped (`example.com:proj`)."""
_DATABASE = re.compile(r"\(default\)|[a-z][a-z0-9-]{2,61}[a-z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
_FIRESTORE_URL = "firestore://PROJECT[/DATABASE][?prefix=NAME]"


def open_firestore(url: ParsedUrl) -> FirestoreLedger:
    """`firestore://PROJECT[/DATABASE][?prefix=NAME]`: the ledger in that database, in
    collections named `NAME_<kind>`. Nothing is contacted here; the endpoint and
    credentials come from `gcp_clients` (`REGWARDEN_GCP_ENDPOINT_FIRESTORE`, ADC)."""
    url.only_params("prefix")
    project, slash, database = url.location.partition("/")
    if not _PROJECT.fullmatch(project):
        raise url.refuse(
            f"{project!r} is not a Google Cloud project id (6 to 30 of a-z 0-9 -)",
            hint=_FIRESTORE_URL,
        )
    if slash and not _DATABASE.fullmatch(database):
        raise url.refuse(
            f"{database!r} is not a Firestore database id ((default), or 4 to 63 of a-z 0-9 -)",
            hint=_FIRESTORE_URL,
        )
    prefix = url.params.get("prefix", DEFAULT_PREFIX)
    if not _PREFIX.fullmatch(prefix):
        raise url.refuse(
            f"prefix {prefix!r} is not a collection-name prefix (1 to 100 of A-Z a-z 0-9 _ -)",
            hint=_FIRESTORE_URL,
        )
    return FirestoreLedger(project, database=database or DEFAULT_DATABASE, prefix=prefix)
