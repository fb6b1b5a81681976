"""Table Storage ledger: the `Ledger` protocol in Azure Table Storage, for Azure.

`azuretable://ACCOUNT[?prefix=NAME]` opens it: the tables `NAME<kind>` (`regwarden<kind>`
by default) of storage account ACCOUNT, each created on first use (a write that finds its
table missing creates it and is sent again; a read of a missing table finds nothing). The
endpoint is `https://ACCOUNT.table.core.windows.net` or `REGWARDEN_AZURE_ENDPOINT_TABLE`
(Azurite: `http://127.0.0.1:PORT/ACCOUNT`), the credential `azure_clients.storage_credential`
(the account key in `REGWARDEN_AZURE_STORAGE_KEY`, else the managed identity).

| table        | PartitionKey            | RowKey                               | expires     |
| ------------ | ----------------------- | ------------------------------------ | ----------- |
| `deliveries` | delivery id             | ``                                   | `expireAt`  |
| `outcomes`   | `d|<delivery id>`       | `marker`; `log|<time>|<nonce>`;      | marker only |
|              | (`n|<nonce>`: none)     | `obx|<alert key>`                    |             |
| `outboxkeys` | alert key               | ``                                   | window      |
| `images`     | `<registry>/<repo>`     | `i|<digest>`; `t|<tag>|<digest>`     | no          |
| `verdicts`   | `<registry>/<repo>`     | digest                               | no          |
| `actions`    | action key              | ``                                   | no          |
| `quarantine` | `<registry>/<repo>`     | digest                               | no          |
| `failures`   | function                | message key                          | `expireAt`  |
| `images`     | `<registry>/<repo>`     | `p|<digest>|<principal>` (pull       | no          |
|              |                         | tallies); `tracking` (pulls since)   |             |
| `accesswindows` | `w`                  | window key                           | no          |

(key parts encoded by `_azure_table_rows.part`.)

The atomic unit: Table Storage's transactions (entity-group batches) hold up to 100
operations on ONE partition of one table. So everything `commit_outcome` must write together
lives under the delivery's partition of `outcomes`: its marker (created, or replaced on
condition of the expired one's ETag), its verdict-log entry and its outbox rows, in one
batch that a rival commit of the same delivery makes fail (409 on the marker). What spans
deliveries is checked around that batch:

- before it: each alert key's entry in `outboxkeys` (an alert still in its 30-day window
  from another delivery is not added again);
- after it: the `outboxkeys` entries of the rows added, and the image's latest verdict in
  `verdicts`. A crash between the batch and these writes leaves a delivery handled whose
  follow-ups are missing; whoever next finds its marker (`delivery_outcome`, or a duplicate
  `commit_outcome`) writes them (the verdict only if the one there is older). Alerts are
  at-least-once: two deliveries raising one new alert at the same instant may both add it
  (receivers de-duplicate by its stable id, docs/alerts.md).

Conditional writes: `seen_delivery`, `begin_action` and `record_push` create entities
(409 when there: someone went first); read-modify-writes replace on condition of the ETag
they read (412 when it moved on: read and decide again, at most `ROUNDS` times).

Pull tallies and access windows: Table Storage has no increment. `record_pulls` reads the
rows it adds to — each image's `i|` row and its (digest, principal) tally rows, all in the
repository's partition of `images` — and writes them in one entity-group batch per
repository (up to 50 tallies and their images), each row created or replaced on condition of
the ETag it was read with: a batch another writer went first on fails whole (409 / 412) and
is read and decided again, so no count is lost, and no count is made twice — every tally row
of a batch carries its nonce, by which a batch the SDK re-sent after it went through is
known as its own. An image row whose `lastPulled` is already as late is left out (not
written, so not contended). The tally count is an Edm.Int64. The access windows live in ONE
partition (`w`) of `accesswindows`: the due ones are a query of that partition (few windows
are open at once), and each is opened, counted into and dropped on condition of its ETag
(this process's last known one first, as for actions).

Expiry: Table Storage has no TTL. Expiring entities carry `expireAt`, every reader compares
it with the caller's `now` (an expired entity counts as absent) and `expire_deliveries`
deletes the expired markers and delivery ids.

Listings that are not one partition (`outbox_pending`, `actions`, `verdict_log`) are
filtered queries over one table, which Table Storage serves by scanning it: the outbox's
table holds outcomes, whose expired markers `expire_deliveries` removes.

No work queue: on Azure, events arrive through Event Grid and rechecks through a Storage
queue; `regwarden serve` on this ledger takes `--queue sqlite:///PATH`.

The tables and the operations every method is built from are in `_azure_table_client.py`,
how keys, times and long texts are spelt in `_azure_table_rows.py`. azure-data-tables is
imported on first use: importing these modules costs nothing.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from ._access import AccessWindow, PullTally, check_tally, check_window_key
from ._azure_table_client import (
    DEFAULT_PREFIX,
    KINDS,
    MAX_BATCH,
    PULL_ROUNDS,
    ROUNDS,
    Conflict,
    Missing,
    TableLedgerBase,
    etag_of,
    int64,
    live,
    rounds,
    table_names,
)
from ._azure_table_rows import (
    get_text,
    part,
    plain_int,
    plain_time,
    put_text,
    short_part,
    utc,
)
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
    "DEFAULT_PREFIX",
    "KINDS",
    "MAX_BATCH",
    "ROUNDS",
    "TALLIES_PER_BATCH",
    "WINDOWS_PARTITION",
    "AzureTableLedger",
    "open_azuretable",
    "table_names",
]

_MARKER = "marker"
_TRACKING = "tracking"
TALLIES_PER_BATCH = MAX_BATCH // 2
"""Pull tallies in one batch: each writes its tally row and, at most, its image's row."""
WINDOWS_PARTITION = "w"
"""The one partition of `accesswindows`."""


def _repo(registry: str, repository: str) -> str:
    return part(f"{registry}/{repository}")


def _unique(alerts: Sequence[OutboxItem]) -> list[OutboxItem]:
    seen: dict[str, OutboxItem] = {}
    for alert in alerts:
        seen.setdefault(alert.key, alert)
    return list(seen.values())


class AzureTableLedger(TableLedgerBase, TagRowQueries):
    """Ledger in one storage account's tables. Thread-safe (one service client, shared)."""

    queue_note: ClassVar[str] = (
        "on Azure, events arrive through Event Grid and rechecks through a Storage queue"
    )
    """Why `open_queue` finds no queue in this ledger (said with its usage error)."""

    # -- deliveries (idempotency) -------------------------------------------------------------

    def seen_delivery(self, delivery_id: str, *, now: datetime, ttl: timedelta) -> bool:
        """Record a delivery id; True if it was already recorded and not expired. One create
        when it is new; a read and a conditional replace when an expired one is there."""
        at, expires = utc(now), utc(now + ttl)
        pk = part(delivery_id)
        entity = {"PartitionKey": pk, "RowKey": "", "receivedAt": at, "expireAt": expires}
        etag: str | None = None
        for _ in rounds():
            try:
                self._put("deliveries", "seen_delivery", entity, etag)
            except Conflict:
                found = self._get("deliveries", pk)
                if live(found, at):
                    return True
                etag = None if found is None else etag_of(found)
                continue
            return False
        raise self._contended("seen_delivery")

    def forget_delivery(self, delivery_id: str) -> None:
        """Drop a delivery id so a retry of the same event is processed again."""
        pk = part(delivery_id)
        with contextlib.suppress(Missing, Conflict):  # nothing to forget
            self._call("deliveries", "forget_delivery", lambda t: t.delete_entity(pk, ""))

    def expire_deliveries(self, *, now: datetime) -> int:
        """Delete expired delivery ids and outcome markers now (each only as read: one
        renewed meanwhile stays). Returns how many went."""
        at = utc(now)
        deleted = 0
        for kind, query in (
            ("deliveries", "expireAt le @at"),
            ("outcomes", "RowKey eq 'marker' and expireAt le @at"),
        ):
            for entity in self._query(kind, query, {"at": at}):
                try:
                    self._delete_as_read(kind, entity)
                except Conflict:
                    continue
                deleted += 1
        return deleted

    # -- outcomes: the atomic unit ------------------------------------------------------------

    def delivery_outcome(self, delivery_id: str, *, now: datetime) -> DeliveryOutcome | None:
        """The committed outcome of a delivery, if it was handled and has not expired (and
        its follow-ups finished, should a crash have cut them short)."""
        at = utc(now)
        rows = self._partition(f"d|{part(delivery_id)}")
        marker = rows.get(_MARKER)
        if marker is None or not live(marker, at):
            return None
        self._follow_up(marker, rows, at)
        recheck = marker.get("recheckAt")
        return DeliveryOutcome(
            delivery_id,
            plain_time(marker["handledAt"]),
            plain_time(recheck) if recheck is not None else None,
            marker.get("recheckImage"),
        )

    def _partition(self, pk: str) -> dict[str, Any]:
        """RowKey → entity of one `outcomes` partition (one query)."""
        found = self._query("outcomes", "PartitionKey eq @pk", {"pk": pk})
        return {str(e["RowKey"]): e for e in found}

    def commit_outcome(
        self, outcome: Outcome, *, now: datetime, ttl: timedelta
    ) -> list[str] | None:
        """In one batch under the delivery's partition: its marker (kept for `ttl`, written
        only if no unexpired one is there), verdict-log entry and outbox rows (each only if
        its key is not in its window); then the rows' `outboxkeys` entries and the verdict.
        Returns the outbox keys it added, or None when the delivery was committed before
        (nothing is written)."""
        o = outcome
        at, expires = utc(now), utc(now + ttl)
        recheck_at = utc(o.recheck_at) if o.recheck_at is not None else None
        nonce = uuid.uuid4().hex
        pk = f"d|{part(o.delivery_id)}" if o.delivery_id is not None else f"n|{nonce}"
        image = f"{o.registry}/{o.repository}@{o.digest}"
        marker: dict[str, Any] | None = None
        if o.delivery_id is not None:
            marker = {"PartitionKey": pk, "RowKey": _MARKER, "deliveryId": o.delivery_id}
            marker |= {"handledAt": at, "expireAt": expires, "commit": nonce}
            marker |= {"registry": o.registry, "repository": o.repository, "digest": o.digest}
            if recheck_at is not None:
                marker["recheckAt"] = recheck_at
            if o.recheck_image is not None:
                marker["recheckImage"] = o.recheck_image
            if o.verdict is not None:
                marker["verdict"] = o.verdict
                if o.findings is not None:  # for a roll-forward of the verdict below
                    marker["findings"] = findings_json(o.findings)
        log: dict[str, Any] | None = None
        if o.verdict is not None:
            log = {"PartitionKey": pk, "RowKey": f"log|{at.isoformat()}|{nonce}"}
            log |= {"image": image, "outcome": o.verdict, "at": at, "commit": nonce}
            if o.delivery_id is not None:
                log["deliveryId"] = o.delivery_id
        rows = [(a.key, self._outbox_row(pk, a, at, nonce)) for a in _unique(o.alerts)]
        room = MAX_BATCH - (marker is not None) - (log is not None)
        added: list[str] = []
        for first in range(room, len(rows), MAX_BATCH):  # past the limit: committed first
            done = self._commit_batch(pk, None, None, rows[first : first + MAX_BATCH], at, nonce)
            added += done or []
        done = self._commit_batch(pk, marker, log, rows[:room], at, nonce)
        if done is None:
            return None
        if o.verdict is not None:
            self._set_verdict(
                o.registry, o.repository, o.digest, o.verdict, at, o.findings, only_newer=False
            )
        return done + added

    def _commit_batch(
        self,
        pk: str,
        marker: dict[str, Any] | None,
        log: dict[str, Any] | None,
        rows: list[tuple[str, dict[str, Any]]],
        at: datetime,
        nonce: str,
    ) -> list[str] | None:
        """Rounds of one batch: `marker` (if none lives), `log`, and the `rows` whose key is
        free. The first round assumes a new delivery (creates only, no read); a conflict
        reads the partition and decides again. Returns the keys written, or None when a
        live marker of another commit was found."""
        claims = {key: self._get("outboxkeys", part(key)) for key, _ in rows}
        existing: dict[str, Any] = {}
        for round_ in rounds():
            if round_:
                existing = self._partition(pk)
            there = existing.get(_MARKER)
            if marker is not None and there is not None and live(there, at):
                if there.get("commit") != nonce:
                    self._follow_up(there, existing, at)
                    return None  # another attempt committed this delivery
                # this batch went through before the client sent it again: finish it
                mine = [k for k, r in rows if existing.get(r["RowKey"], {}).get("commit") == nonce]
                for key, row in rows:
                    if key in mine:
                        self._claim(key, pk, row, claims[key])
                return mine
            ops: list[tuple[str, Any, Any]] = []
            if marker is not None:
                ops.append(self._replace(marker, None if there is None else etag_of(there)))
            if log is not None:
                ops.append(self._replace(log, None))
            keys: list[str] = []
            for key, row in rows:
                claim = claims[key]
                if claim is not None and plain_time(claim["dedupUntil"]) > at:
                    continue  # the same alert is in its window: not added again
                old = existing.get(row["RowKey"])
                ops.append(self._replace(row, None if old is None else etag_of(old)))
                keys.append(key)
            try:
                etags = self._batch("outcomes", "commit_outcome", ops)
            except Conflict:
                continue
            written = dict(zip(keys, etags[len(ops) - len(keys) :], strict=True))
            for key, row in rows:
                if key in keys:
                    self._remember("outcomes", row, written[key])  # marked sent next: no read
                    self._claim(key, pk, row, claims[key])
            return keys
        raise self._contended("commit_outcome")

    @staticmethod
    def _outbox_row(pk: str, item: OutboxItem, at: datetime, nonce: str) -> dict[str, Any]:
        row: dict[str, Any] = {"PartitionKey": pk, "RowKey": f"obx|{part(item.key)}"}
        row |= {"key": item.key, "channel": item.channel, "createdAt": at}
        row |= {"dedupUntil": at + OUTBOX_TTL, "attempts": 0, "nextAttempt": at}
        row |= {"pending": True, "pendingAt": at, "commit": nonce}
        put_text(row, "alert", item.alert)
        return row

    def _claim(self, key: str, pk: str, row: Mapping[str, Any], old: Any) -> None:
        """The alert key's `outboxkeys` entry: where its newest row is, and until when it
        is the same alert. A row it replaces that was never sent is dropped (one alert)."""
        entity = {"PartitionKey": part(key), "RowKey": "", "partition": pk}
        entity["dedupUntil"] = row["dedupUntil"]
        self._upsert("outboxkeys", "commit_outcome (outbox key)", entity)
        with self._lock:
            self._outbox_where[key] = pk
        if old is not None and old.get("partition") not in (None, pk):
            stale = self._get("outcomes", str(old["partition"]), str(row["RowKey"]))
            if stale is not None and stale.get("pending"):
                with contextlib.suppress(Conflict, Missing):  # sent meanwhile: it stands
                    self._delete_as_read("outcomes", stale)

    def _follow_up(self, marker: Mapping[str, Any], rows: Mapping[str, Any], at: datetime) -> None:
        """Finish what a committed outcome writes after its batch, should a crash have cut
        it short: `outboxkeys` entries of its rows, and its verdict unless a newer is there."""
        for rk, row in rows.items():
            if not rk.startswith("obx|") or row.get("commit") != marker.get("commit"):
                continue
            claim = self._get("outboxkeys", part(str(row["key"])))
            if claim is None:
                self._claim(str(row["key"]), str(marker["PartitionKey"]), row, None)
        verdict = marker.get("verdict")
        if verdict is not None:
            handled = plain_time(marker["handledAt"])
            self._set_verdict(
                str(marker["registry"]),
                str(marker["repository"]),
                str(marker["digest"]),
                str(verdict),
                handled,
                findings_from(marker.get("findings")),
                only_newer=True,
            )

    def verdict_log(
        self, registry: str, repository: str, digest: str
    ) -> list[tuple[str | None, str, datetime]]:
        """(delivery id, outcome, at) of every verdict committed for a digest, oldest first
        (audits and the chaos tests: one handled delivery, one entry)."""
        image = f"{registry}/{repository}@{digest}"
        found = self._query("outcomes", "image eq @image", {"image": image})
        out = [(e.get("deliveryId"), str(e["outcome"]), plain_time(e["at"])) for e in found]
        return sorted(out, key=lambda r: r[2])

    # -- alert outbox -------------------------------------------------------------------------

    def outbox_pending(self, *, now: datetime, limit: int = 100) -> list[OutboxItem]:
        """Unsent alerts whose next attempt is due, soonest due first, then by key."""
        at = utc(now)
        if limit <= 0:
            return []
        found = self._query("outcomes", "pending eq true and pendingAt le @at", {"at": at})
        found.sort(key=lambda e: (plain_time(e["pendingAt"]), str(e["key"])))
        with self._lock:
            for e in found:
                self._outbox_where[str(e["key"])] = str(e["PartitionKey"])
        return [
            OutboxItem(
                str(e["key"]),
                str(e["channel"]),
                get_text(e, "alert"),
                int(e.get("attempts", 0)),
                plain_time(e["nextAttempt"]) if e.get("nextAttempt") is not None else None,
                e.get("error"),
            )
            for e in found[:limit]
        ]

    def _outbox_partition(self, key: str) -> str | None:
        """Where the newest row of an alert key is: known to this process, else its
        `outboxkeys` entry, else (a crash lost the entry) a search of the outbox rows."""
        with self._lock:
            known = self._outbox_where.get(key)
        if known is not None:
            return known
        claim = self._get("outboxkeys", part(key))
        if claim is not None:
            return str(claim["partition"])
        rows = self._query("outcomes", "RowKey eq @rk", {"rk": f"obx|{part(key)}"})
        rows.sort(key=lambda e: plain_time(e["createdAt"]))
        return str(rows[-1]["PartitionKey"]) if rows else None

    def _outbox_change(
        self, what: str, key: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> None:
        pk = self._outbox_partition(key)
        if pk is None:
            return  # an unknown key: nothing appears

        def changed(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if fields is None else change(fields)

        self._change("outcomes", what, pk, f"obx|{part(key)}", changed)

    def outbox_sent(self, key: str, *, now: datetime) -> None:
        """Delivered: no longer pending."""
        at = utc(now)

        def sent(fields: dict[str, Any]) -> dict[str, Any]:
            for gone in ("pendingAt", "error"):
                fields.pop(gone, None)
            fields |= {"pending": False, "sentAt": at}
            fields["attempts"] = int(fields.get("attempts", 0)) + 1
            return fields

        self._outbox_change("outbox_sent", key, sent)

    def outbox_retry(self, key: str, *, at: datetime, error: str) -> None:
        """A failed send: try again at `at` (a row already sent stays sent)."""
        due = utc(at)

        def retry(fields: dict[str, Any]) -> dict[str, Any] | None:
            if not fields.get("pending"):
                return None
            fields |= {"nextAttempt": due, "pendingAt": due, "error": error}
            fields["attempts"] = int(fields.get("attempts", 0)) + 1
            return fields

        self._outbox_change("outbox_retry", key, retry)

    def outbox_unsent(self) -> int:
        """Alerts not yet delivered (due or backing off)."""
        return len(self._query("outcomes", "pending eq true"))

    # -- failed records (the dead letters' "why") ---------------------------------------------

    def note_failure(
        self, function: str, key: str, error: str, *, now: datetime, ttl: timedelta
    ) -> None:
        """Count one failed attempt of a message (`key`), keeping its first and its latest
        error, for `ttl`."""
        at, expires = utc(now), utc(now + ttl)

        def noted(fields: dict[str, Any] | None) -> dict[str, Any]:
            fields = fields or {"firstError": error, "firstAt": at, "failures": 0}
            fields |= {"lastError": error, "lastAt": at, "expireAt": expires}
            fields["failures"] = int(fields["failures"]) + 1
            return fields

        self._change("failures", "note_failure", part(function), part(key), noted, now=at)

    def failure(self, function: str, key: str) -> FailureNote | None:
        """The note of a failed message (kept until it expires; `now` is not asked here, as
        the other ledgers' notes stay until deleted)."""
        f = self._get("failures", part(function), part(key))
        if f is None:
            return None
        return FailureNote(
            str(f["firstError"]),
            plain_time(f["firstAt"]),
            str(f["lastError"]),
            plain_time(f["lastAt"]),
            int(f["failures"]),
        )

    # -- images and tags ----------------------------------------------------------------------

    def record_push(
        self, registry: str, repository: str, digest: str, tags: tuple[str, ...], *, now: datetime
    ) -> datetime:
        """Returns the digest's first-seen time. One batch creating the image and its tag
        rows (a new image: one request); when some are there, a read of the repository's
        rows for this digest and a batch of those missing (the first sighting wins)."""
        at = utc(now)
        pk = _repo(registry, repository)
        image: dict[str, Any] = {"PartitionKey": pk, "RowKey": f"i|{part(digest)}"}
        image |= {"digest": digest, "firstSeen": at}
        wanted = [image]
        for tag in dict.fromkeys(tags):
            row: dict[str, Any] = {"PartitionKey": pk, "RowKey": f"t|{part(tag)}|{part(digest)}"}
            row |= {"tag": tag, "digest": digest, "seenAt": at}
            wanted.append(row)
        first_seen = at
        for round_ in rounds():
            todo = wanted
            if round_:
                found = {rk: self._get("images", pk, rk) for rk in (r["RowKey"] for r in wanted)}
                there = found[image["RowKey"]]
                first_seen = plain_time(there["firstSeen"]) if there is not None else at
                todo = [r for r in wanted if found[r["RowKey"]] is None]
            ops = [self._replace(r, None) for r in todo]
            try:
                self._batch("images", "record_push", ops)
            except Conflict:
                continue
            return first_seen
        raise self._contended("record_push")

    def record_pull(self, registry: str, repository: str, digest: str, *, now: datetime) -> None:
        """Pull times only move forward (late, out-of-order events are ignored)."""
        at = utc(now)

        def pulled(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            if fields is None:
                fields = {"digest": digest, "firstSeen": at}
            elif fields.get("lastPulled") is not None and plain_time(fields["lastPulled"]) >= at:
                return None
            fields["lastPulled"] = at
            return fields

        pk = _repo(registry, repository)
        self._change("images", "record_pull", pk, f"i|{part(digest)}", pulled)

    def image_times(
        self, registry: str, repository: str
    ) -> dict[str, tuple[datetime, datetime | None]]:
        """digest → (first seen, last pulled) for one repository (one partition query)."""
        found = self._query(
            "images",
            "PartitionKey eq @pk and RowKey ge 'i|' and RowKey lt 'i}'",
            {"pk": _repo(registry, repository)},
        )
        return {
            str(e["digest"]): (
                plain_time(e["firstSeen"]),
                plain_time(e["lastPulled"]) if e.get("lastPulled") is not None else None,
            )
            for e in found
        }

    def _tag_rows(
        self, registry: str, repository: str, tag: str | None
    ) -> list[tuple[str, str, datetime]]:
        """(tag, digest, seen at) of the tag history, oldest first."""
        start = f"t|{part(tag)}|" if tag is not None else "t|"
        end = start[:-1] + "}"
        found = self._query(
            "images",
            "PartitionKey eq @pk and RowKey ge @start and RowKey lt @end",
            {"pk": _repo(registry, repository), "start": start, "end": end},
        )
        rows = [(str(e["tag"]), str(e["digest"]), plain_time(e["seenAt"])) for e in found]
        return sorted(rows, key=lambda r: (r[2], r[1]))

    def tag_history(self, registry: str, repository: str) -> list[tuple[str, str, datetime]]:
        """(tag, digest, first seen) for every tag → digest seen in a repository, oldest first
        (one partition query)."""
        rows = self._tag_rows(registry, repository, None)
        return sorted(rows, key=lambda r: (r[2], r[0], r[1]))

    # -- verdicts -----------------------------------------------------------------------------

    def record_verdict(
        self, registry: str, repository: str, digest: str, outcome: str, *, now: datetime
    ) -> None:
        self._set_verdict(registry, repository, digest, outcome, utc(now), None, only_newer=False)

    def _set_verdict(
        self,
        registry: str,
        repository: str,
        digest: str,
        outcome: str,
        at: datetime,
        findings: Findings | None,
        *,
        only_newer: bool,
    ) -> None:
        """The image's latest verdict: replaced (one upsert), or with `only_newer` only where
        the one there is older than `at` (a roll-forward must not undo a later verdict)."""
        pk, rk = _repo(registry, repository), part(digest)
        entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk, "digest": digest}
        entity |= {"outcome": outcome, "at": at}
        if findings is not None:
            entity["findings"] = findings_json(findings)
        if not only_newer:
            self._upsert("verdicts", "record_verdict", entity)
            return

        def newer(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            if fields is not None and plain_time(fields["at"]) >= at:
                return None
            return entity

        self._change("verdicts", "record_verdict", pk, rk, newer)

    def last_verdict(self, registry: str, repository: str, digest: str) -> str | None:
        found = self._get("verdicts", _repo(registry, repository), part(digest))
        return None if found is None else str(found["outcome"])

    def repository_verdicts(self, registry: str, repository: str) -> dict[str, VerdictRecord]:
        """digest → last verdict (outcome, when, findings) of one repository: one query of
        the repository's partition."""
        found = self._query("verdicts", "PartitionKey eq @pk", {"pk": _repo(registry, repository)})
        return {
            str(e["digest"]): VerdictRecord(
                str(e["outcome"]), plain_time(e["at"]), findings_from(e.get("findings"))
            )
            for e in found
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
        was already recorded (a retry resumes it): one create, and a read only when the
        key was there."""
        entity: dict[str, Any] = {"PartitionKey": part(key), "RowKey": "", "key": key}
        entity |= {"at": utc(now), "registry": registry, "repository": repository}
        entity |= {"digest": digest, "kind": kind, "status": "intent", "reason": reason}
        put_text(entity, "state", json.dumps(state))
        for _ in rounds():
            try:
                self._put("actions", "begin_action", entity, None)
            except Conflict:
                found = self._get("actions", part(key))
                if found is None:
                    continue  # deleted meanwhile: try again
                self._remember_read("actions", found)
                return self._action(found)
            return self._action(entity)  # as written: no read back
        raise self._contended("begin_action")

    def finish_action(self, key: str, *, status: str, state: dict[str, Any] | None = None) -> None:
        """Set the status (and state); an unknown key changes nothing. One conditional
        replace when this process wrote or read the record last (its ETag is the check),
        else a read and a conditional replace."""
        encoded = json.dumps(state) if state is not None else None

        def finished(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            if fields is None:
                return None
            fields["status"] = status
            if encoded is not None:
                for name in [n for n in fields if n == "state" or n.startswith("state_")]:
                    del fields[name]
                put_text(fields, "state", encoded)
            return fields

        self._change("actions", "finish_action", part(key), "", finished)

    def action(self, key: str) -> ActionRecord | None:
        found = self._get("actions", part(key))
        if found is None:
            self._forget("actions", part(key), "")
            return None
        self._remember_read("actions", found)
        return self._action(found)

    def actions(self, *, status: str | None = None) -> list[ActionRecord]:
        """Every action (or those with `status`), in the order they began."""
        if status is None:
            found = self._query("actions", "RowKey eq ''")
        else:
            found = self._query("actions", "status eq @status", {"status": status})
        records = [self._action(e) for e in found]
        return sorted(records, key=lambda r: (r.at, r.key))

    @staticmethod
    def _action(f: Mapping[str, Any]) -> ActionRecord:
        return ActionRecord(
            str(f["key"]),
            plain_time(f["at"]),
            str(f["registry"]),
            str(f["repository"]),
            str(f["digest"]),
            str(f["kind"]),
            str(f["status"]),
            str(f["reason"]),
            json.loads(get_text(f, "state")),
        )

    # -- quarantine (never expires) -----------------------------------------------------------

    def record_quarantine(self, rec: QuarantineRecord) -> None:
        entity: dict[str, Any] = {
            "PartitionKey": _repo(rec.registry, rec.repository),
            "RowKey": part(rec.digest),
            "registry": rec.registry,
            "repository": rec.repository,
            "digest": rec.digest,
            "strategy": rec.strategy,
            "location": rec.location,
            "tags": json.dumps(list(rec.tags)),
            "reason": rec.reason,
            "quarantinedAt": utc(rec.quarantined_at),
        }
        if rec.released_at is not None:
            entity["releasedAt"] = utc(rec.released_at)
        self._upsert("quarantine", "record_quarantine", entity)

    def quarantined(self, registry: str, repository: str, digest: str) -> QuarantineRecord | None:
        f = self._get("quarantine", _repo(registry, repository), part(digest))
        return None if f is None else self._quarantine(f)

    def quarantines(self, *, released: bool | None = None) -> list[QuarantineRecord]:
        """Every entity of the quarantine table (an audit read), filtered and ordered here:
        a record not released has no `releasedAt` property to filter on."""
        records = [self._quarantine(e) for e in self._query("quarantine", "RowKey ne ''")]
        return select_quarantines(records, released)

    @staticmethod
    def _quarantine(f: Mapping[str, Any]) -> QuarantineRecord:
        return QuarantineRecord(
            str(f["registry"]),
            str(f["repository"]),
            str(f["digest"]),
            str(f["strategy"]),
            str(f["location"]),
            tuple(str(t) for t in json.loads(f["tags"])),
            str(f["reason"]),
            plain_time(f["quarantinedAt"]),
            plain_time(f["releasedAt"]) if f.get("releasedAt") is not None else None,
        )

    def mark_released(self, registry: str, repository: str, digest: str, *, now: datetime) -> None:
        at = utc(now)

        def released(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if fields is None else fields | {"releasedAt": at}

        self._change(
            "quarantine", "mark_released", _repo(registry, repository), part(digest), released
        )

    # -- access monitoring: pull tallies, tracking, alert windows -----------------------------

    def record_pulls(self, tallies: Sequence[PullTally]) -> None:
        """Add coalesced pulls: per repository, a read of the image and tally rows the
        tallies add to and one batch writing them on condition (see the module docstring);
        an image row it creates gets `firstSeen` = the first tally's time, as
        `record_pull` does."""
        checked = [check_tally(t) for t in tallies]  # all refused before anything is written
        first: dict[tuple[str, str, str], datetime] = {}
        merged: dict[tuple[str, str], dict[tuple[str, str], tuple[datetime, int]]] = {}
        for t in checked:
            at = utc(t.last_pulled)
            first.setdefault((t.registry, t.repository, t.digest), at)
            repo = merged.setdefault((t.registry, t.repository), {})
            last, count = repo.get((t.digest, t.principal), (at, 0))
            repo[(t.digest, t.principal)] = (max(last, at), count + t.count)
        for (registry, repository), rows in merged.items():
            items = list(rows.items())
            for start in range(0, len(items), TALLIES_PER_BATCH):
                chunk = items[start : start + TALLIES_PER_BATCH]
                self._record_tallies(registry, repository, chunk, first)

    def _record_tallies(
        self,
        registry: str,
        repository: str,
        chunk: list[tuple[tuple[str, str], tuple[datetime, int]]],
        first: Mapping[tuple[str, str, str], datetime],
    ) -> None:
        """One batch in the repository's partition: its images' last pulls and its
        tallies' counts, read and written on condition of what was read."""
        pk = _repo(registry, repository)
        latest: dict[str, datetime] = {}
        for (digest, _), (last, _) in chunk:
            latest[digest] = max(latest.get(digest, last), last)
        images = {digest: f"i|{part(digest)}" for digest in latest}
        tallies = {key: f"p|{part(key[0])}|{short_part(key[1])}" for key, _ in chunk}
        nonce = uuid.uuid4().hex
        for _ in rounds(PULL_ROUNDS):
            found = self._rows("images", pk, [*images.values(), *tallies.values()])
            if any(found.get(rk, {}).get("commit") == nonce for rk in tallies.values()):
                return  # this batch went through before the SDK sent it again
            ops = []
            for digest, rk in images.items():
                there = found.get(rk)
                at = latest[digest]
                if there is None:
                    row: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk, "digest": digest}
                    row |= {"firstSeen": first[(registry, repository, digest)], "lastPulled": at}
                else:
                    old = there.get("lastPulled")
                    if old is not None and plain_time(old) >= at:
                        continue  # a later pull is there: the row is not written (nor contended)
                    row = dict(there) | {"lastPulled": at}
                ops.append(self._replace(row, None if there is None else etag_of(there)))
            for ((digest, principal), (last, count)), rk in zip(
                chunk, tallies.values(), strict=True
            ):
                there = found.get(rk)
                tally: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk, "digest": digest}
                tally |= {"principal": principal, "commit": nonce}
                if there is None:
                    tally |= {"lastPulled": last, "count": int64(count)}
                else:
                    old_last = plain_time(there["lastPulled"])
                    tally["lastPulled"] = max(old_last, last)
                    tally["count"] = int64(plain_int(there["count"]) + count)
                ops.append(self._replace(tally, None if there is None else etag_of(there)))
            try:
                self._batch("images", "record_pulls", ops)
            except Conflict:
                continue
            return
        raise self._contended("record_pulls", PULL_ROUNDS)

    def pull_tallies(self, registry: str, repository: str) -> list[PullTally]:
        """One tally per (digest, principal) of a repository, by digest, then principal (one
        partition query of its `p|` rows)."""
        found = self._query(
            "images",
            "PartitionKey eq @pk and RowKey ge 'p|' and RowKey lt 'p}'",
            {"pk": _repo(registry, repository)},
        )
        out = [
            PullTally(
                registry,
                repository,
                str(e["digest"]),
                str(e["principal"]),
                plain_time(e["lastPulled"]),
                plain_int(e["count"]),
            )
            for e in found
        ]
        return sorted(out, key=lambda t: (t.digest, t.principal))

    def start_pull_tracking(self, registry: str, repository: str, *, now: datetime) -> datetime:
        """When pull tracking of the repository began: `now` unless an earlier start is
        recorded. One create (the usual case); when a row is there, a read and, only if it
        is later than `now`, a replace on condition of its ETag."""
        at = utc(now)
        pk = _repo(registry, repository)
        entity = {"PartitionKey": pk, "RowKey": _TRACKING, "since": at}
        etag: str | None = None
        for n in rounds():
            if n:
                found = self._get("images", pk, _TRACKING)
                if found is not None and plain_time(found["since"]) <= at:
                    return plain_time(found["since"])
                etag = None if found is None else etag_of(found)
            try:
                self._put("images", "start_pull_tracking", entity, etag)
            except Conflict:
                continue
            return at
        raise self._contended("start_pull_tracking")

    def pull_tracking_since(self, registry: str, repository: str) -> datetime | None:
        found = self._get("images", _repo(registry, repository), _TRACKING)
        return None if found is None else plain_time(found["since"])

    @staticmethod
    def _window_entity(w: AccessWindow) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": WINDOWS_PARTITION, "RowKey": part(w.key)}
        entity |= {"key": w.key, "registry": w.registry, "repository": w.repository}
        entity |= {"digest": w.digest, "openedAt": utc(w.opened_at)}
        entity |= {"closesAt": utc(w.closes_at), "count": int64(w.count)}
        if w.last_seen is not None:
            entity["lastSeen"] = utc(w.last_seen)
        put_text(entity, "alert", w.alert)
        return entity

    @staticmethod
    def _window(e: Mapping[str, Any]) -> AccessWindow:
        seen = e.get("lastSeen")
        return AccessWindow(
            str(e["key"]),
            str(e["registry"]),
            str(e["repository"]),
            str(e["digest"]),
            plain_time(e["openedAt"]),
            plain_time(e["closesAt"]),
            plain_int(e.get("count", 0)),
            plain_time(seen) if seen is not None else None,
            get_text(e, "alert"),
        )

    def open_access_window(
        self, window: AccessWindow, *, replacing: datetime | None = None
    ) -> bool:
        """Create the window (one create: 409 when its key holds one), or replace the one
        opened at `replacing` on condition of its ETag. False, and nothing written, when the
        key holds another window."""
        rk = part(check_window_key(window.key))
        entity = self._window_entity(window)
        if replacing is None:
            for _ in rounds():
                try:
                    self._put("accesswindows", "open_access_window", entity, None)
                except Conflict:
                    if self._get("accesswindows", WINDOWS_PARTITION, rk) is not None:
                        return False
                    continue  # dropped meanwhile: try again
                return True
            raise self._contended("open_access_window")
        over = utc(replacing)

        def replaced(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            if fields is None or plain_time(fields["openedAt"]) != over:
                return None
            return entity

        return self._change("accesswindows", "open_access_window", WINDOWS_PARTITION, rk, replaced)

    def access_window(self, key: str) -> AccessWindow | None:
        found = self._get("accesswindows", WINDOWS_PARTITION, part(key))
        if found is None:
            return None
        self._remember_read("accesswindows", found)
        return self._window(found)

    def count_access(self, key: str, *, opened_at: datetime, add: int, last_seen: datetime) -> bool:
        """`count += add`, `lastSeen` the later of both, if the window is the one opened at
        `opened_at`: a replace on condition of its ETag (read first unless this process
        wrote or read it last)."""
        opened, seen = utc(opened_at), utc(last_seen)

        def counted(fields: dict[str, Any] | None) -> dict[str, Any] | None:
            if fields is None or plain_time(fields["openedAt"]) != opened:
                return None
            fields["count"] = int64(plain_int(fields.get("count", 0)) + add)
            old = fields.get("lastSeen")
            fields["lastSeen"] = seen if old is None else max(plain_time(old), seen)
            return fields

        return self._change("accesswindows", "count_access", WINDOWS_PARTITION, part(key), counted)

    def access_windows_due(self, *, now: datetime, limit: int = 100) -> list[AccessWindow]:
        """Windows with `closesAt <= now`, by closing time, then key (one query of the
        windows' partition)."""
        at = utc(now)
        if limit <= 0:
            return []
        found = self._query(
            "accesswindows",
            "PartitionKey eq @pk and closesAt le @at",
            {"pk": WINDOWS_PARTITION, "at": at},
        )
        windows = sorted((self._window(e) for e in found), key=lambda w: (w.closes_at, w.key))
        return windows[:limit]

    def drop_access_window(self, key: str, *, opened_at: datetime) -> bool:
        """Delete the window if it is the one opened at `opened_at`: a read and a delete on
        condition of its ETag."""
        opened, rk = utc(opened_at), part(key)
        for _ in rounds():
            found = self._get("accesswindows", WINDOWS_PARTITION, rk)
            if found is None or plain_time(found["openedAt"]) != opened:
                return False
            try:
                self._delete_at("accesswindows", WINDOWS_PARTITION, rk, etag_of(found))
            except Conflict:
                continue
            return True
        raise self._contended("drop_access_window")


_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9]{0,40}")
_AZURETABLE_URL = "azuretable://ACCOUNT[?prefix=NAME]"


def open_azuretable(url: ParsedUrl) -> AzureTableLedger:
    """`azuretable://ACCOUNT[?prefix=NAME]`: the ledger in that storage account's tables
    `NAME<kind>`. Nothing is contacted here; the endpoint and credential come from
    `azure_clients` (`REGWARDEN_AZURE_ENDPOINT_TABLE`, `REGWARDEN_AZURE_STORAGE_KEY`, the
    managed identity)."""
    url.only_params("prefix")
    if not _ACCOUNT.fullmatch(url.location):
        raise url.refuse(
            f"{url.location!r} is not a storage account name (3 to 24 of a-z 0-9)",
            hint=_AZURETABLE_URL,
        )
    prefix = url.params.get("prefix", DEFAULT_PREFIX)
    if not _PREFIX.fullmatch(prefix):
        raise url.refuse(
            f"prefix {prefix!r} is not a table-name prefix (a letter, then up to 40 of "
            "A-Z a-z 0-9)",
            hint=_AZURETABLE_URL,
        )
    return AzureTableLedger(url.location, prefix=prefix)
