"""DynamoDB ledger: the `Ledger` protocol in one table (single-table design), for AWS.

Keys (`pk`, `sk`, both strings):

| item             | pk                             | sk                                 | TTL  |
| ---------------- | ------------------------------ | ---------------------------------- | ---- |
| delivery id      | `delivery#<id>`                | `delivery`                         | yes  |
| delivery outcome | `delivery#<id>`                | `outcome`                          | yes  |
| image times      | `repo#<registry>/<repository>` | `image#<digest>`                   | no   |
| tag history      | `repo#<registry>/<repository>` | `tag#<tag>#<digest>`               | no   |
| verdict          | `repo#<registry>/<repository>` | `verdict#<digest>`                 | no   |
| verdict log      | `repo#<registry>/<repository>` | `verdictlog#<digest>#<at>#<nonce>` | no   |
| quarantine       | `repo#<registry>/<repository>` | `quarantine#<digest>`              | no   |
| action (audit)   | `action#<key>`                 | `action`                           | no   |
| alert outbox     | `outbox#<alert key>:<channel>` | `outbox`                           | sent |
| failed record    | `failure#<function>#<event>`   | `failure`                          | yes  |
| pull tally       | `repo#<registry>/<repository>` | `pull#<digest>#<principal>`        | no   |
| pull tracking    | `repo#<registry>/<repository>` | `pulltracking`                     | no   |
| access window    | `access#windows`               | `window#<key>`                     | no   |

Unfinished work is found through one sparse global secondary index, `pending`
(`pending` = `outbox` or `intent`, range key `pending_at`, an ISO time): an outbox row
carries the two attributes until it is sent (`pending_at` = its next attempt), an action
while its status is `intent` (`pending_at` = its retry time, else when it began). Nothing
else has them, so the recovery sweep reads exactly the due work, never the whole table.

A delivery is handled only together with its outcome: `commit_outcome` writes the verdict,
a verdict-log entry, the delivery's outcome marker and the outbox rows in ONE
`TransactWriteItems`. An outbox row is put only if its key is absent or expired (alert
de-duplication for 30 days); when those conditions are the only reason a transaction is
cancelled, it is repeated without the rows already there, and the keys it did add are
returned. A transaction holds at most 100 items: outbox rows past that are written first,
in transactions of their own (a crash in between leaves them pending, and the sweep sends
them: alerts are at-least-once anyway).

The TTL attribute (`expiration`, epoch seconds, the one Powertools' idempotency records
use, so one table TTL setting serves both) is on delivery items and on sent outbox rows
only; quarantine records, verdicts and the audit never expire, and an alert never sent is
never dropped. DynamoDB deletes expired items lazily (within days), so every reader
compares the exact expiry itself. Conditional writes make `seen_delivery` and
`begin_action` atomic across concurrent Lambda invocations. Reads are strongly consistent
except the `pending` index (global indexes are eventually consistent: a row sent a moment
ago may be handed out once more, which at-least-once delivery allows). Times are stored as
UTC ISO 8601 strings with microseconds (they sort as text).

boto3 is imported on first use only: importing this module costs nothing.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from ..errors import RegistryError
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
from ._records import ActionRecord, FailureNote, QuarantineRecord, select_quarantines
from ._tag_rows import TagRowQueries
from ._urls import ParsedUrl

__all__ = [
    "PENDING_INDEX",
    "TTL_ATTRIBUTE",
    "DynamoLedger",
    "FailureNote",
    "dead_letter_key",
    "table_definition",
]

TTL_ATTRIBUTE = "expiration"
"""The table's TTL attribute (epoch seconds): delivery items and sent outbox rows."""
PENDING_INDEX = "pending"
"""The sparse global secondary index of unfinished work (unsent alerts, action intents)."""
MAX_TRANSACTION = 100
"""Items in one TransactWriteItems, DynamoDB's limit."""
_TRANSACT_ATTEMPTS = 8
"""Rounds of one commit: each drops outbox rows found already there, or waits out a
conflicting transaction on the same items."""


def table_definition(name: str) -> dict[str, Any]:
    """`create_table` arguments for the ledger table (the SAM template declares the same)."""
    return {
        "TableName": name,
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "pending", "AttributeType": "S"},
            {"AttributeName": "pending_at", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": PENDING_INDEX,
                "KeySchema": [
                    {"AttributeName": "pending", "KeyType": "HASH"},
                    {"AttributeName": "pending_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


def _ts(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def dead_letter_key(body: str, message_id: str) -> str:
    """The id a failed record's note is kept under, found again from the message alone: the
    event's `id` (EventBridge events, rechecks), an alert's `dedup_key` (notify), else the
    SQS message id (a body that does not parse)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return message_id
    if isinstance(doc, dict):
        for name in ("id", "dedup_key"):
            value = doc.get(name)
            if isinstance(value, str) and value:
                return value
    return message_id


class _AlreadyCommitted(Exception):
    """The delivery marker's condition failed: another attempt committed this delivery."""


_WINDOWS_PK = "access#windows"
"""The partition of every open access-alert window (`access_windows_due` is one query)."""


def _repo_pk(registry: str, repository: str) -> str:
    return f"repo#{registry}/{repository}"


def _unique(alerts: Sequence[OutboxItem]) -> list[OutboxItem]:
    """One row per key (a transaction may not write one item twice): the first wins."""
    seen: dict[str, OutboxItem] = {}
    for alert in alerts:
        seen.setdefault(alert.key, alert)
    return list(seen.values())


def _retry_due(state: dict[str, Any]) -> str | None:
    """An intent's next retry time (`state["retry"]["next"]`), if the sweep set one."""
    retry = state.get("retry")
    due = retry.get("next") if isinstance(retry, dict) else None
    if not isinstance(due, str):
        return None
    try:
        when = datetime.fromisoformat(due)
    except ValueError:
        return None
    return _ts(when) if when.tzinfo is not None else None


class DynamoLedger(TagRowQueries):
    """Ledger in one DynamoDB table. Thread-safe (boto3 clients are)."""

    def __init__(
        self,
        table: str,
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        """`client`: a DynamoDB client to use; else one is made on first use, for
        `endpoint_url` and `region` (None: boto3's own configuration)."""
        self.table = table
        self._client = client
        self._endpoint_url = endpoint_url
        self._region = region
        self._lock = threading.Lock()
        self._types: tuple[Any, Any] | None = None
        self._errors: tuple[type[Exception], ...] = ()

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from .. import botocore_config

                self._client = botocore_config.client(
                    "dynamodb",
                    region=self._region,
                    endpoint_url=self._endpoint_url,
                    mode="adaptive",
                    attempts=11,
                )
            return self._client

    def _codec(self) -> tuple[Any, Any]:
        if self._types is None:
            from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

            self._types = (TypeSerializer(), TypeDeserializer())
        return self._types

    def _item(self, values: dict[str, Any]) -> dict[str, Any]:
        ser = self._codec()[0]
        return {k: ser.serialize(v) for k, v in values.items() if v is not None}

    def _plain(self, item: dict[str, Any]) -> dict[str, Any]:
        de = self._codec()[1]
        return {k: de.deserialize(v) for k, v in item.items()}

    def _botocore_errors(self) -> tuple[type[Exception], ...]:
        if not self._errors:
            from botocore.exceptions import BotoCoreError, ClientError

            self._errors = (ClientError, BotoCoreError)
        return self._errors

    @staticmethod
    def _code(exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        return str((response.get("Error") or {}).get("Code", ""))

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One DynamoDB call; errors become RegistryError (the pipeline's infrastructure
        error: the event is retried)."""
        try:
            response: dict[str, Any] = getattr(self.client, operation)(
                TableName=self.table, **params
            )
        except self._botocore_errors() as exc:
            raise RegistryError(f"DynamoDB {self.table}: {operation} failed: {exc}") from exc
        return response

    def _conditional(self, operation: str, **params: Any) -> dict[str, Any] | None:
        """Like `_call`; None when the condition did not hold."""
        try:
            response: dict[str, Any] = getattr(self.client, operation)(
                TableName=self.table, **params
            )
        except self._botocore_errors() as exc:
            if self._code(exc) == "ConditionalCheckFailedException":
                return None
            raise RegistryError(f"DynamoDB {self.table}: {operation} failed: {exc}") from exc
        return response

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        found = self._call("get_item", Key=self._item({"pk": pk, "sk": sk}), ConsistentRead=True)
        item = found.get("Item")
        return self._plain(item) if item else None

    def _query(self, pk: str, prefix: str) -> list[dict[str, Any]]:
        """Every item of partition `pk` whose sort key starts with `prefix`, all pages."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": self._item({":pk": pk, ":prefix": prefix}),
            "ConsistentRead": True,
        }
        while True:
            page = self._call("query", **params)
            items.extend(self._plain(i) for i in page.get("Items") or [])
            last = page.get("LastEvaluatedKey")
            if not last:
                return items
            params["ExclusiveStartKey"] = last

    def _scan(
        self, prefix: str, where: str = "", values: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every item whose partition key starts with `prefix` (audit listings only), and
        that the filter `where` (with `values`) selects, if given."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {
            "FilterExpression": "begins_with(pk, :prefix)" + (f" AND {where}" if where else ""),
            "ExpressionAttributeValues": self._item({":prefix": prefix, **(values or {})}),
            "ConsistentRead": True,
        }
        while True:
            page = self._call("scan", **params)
            items.extend(self._plain(i) for i in page.get("Items") or [])
            last = page.get("LastEvaluatedKey")
            if not last:
                return items
            params["ExclusiveStartKey"] = last

    def _pending(self, kind: str, *, until: str | None, limit: int | None) -> list[dict[str, Any]]:
        """Items of the `pending` index with `pending = kind` (and `pending_at <= until`),
        earliest first, all pages up to `limit`."""
        condition = "pending = :kind"
        values: dict[str, Any] = {":kind": kind}
        if until is not None:
            condition += " AND pending_at <= :until"
            values[":until"] = until
        params: dict[str, Any] = {
            "IndexName": PENDING_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": self._item(values),
        }
        items: list[dict[str, Any]] = []
        while limit is None or len(items) < limit:
            if limit is not None:
                params["Limit"] = limit - len(items)
            page = self._call("query", **params)
            items.extend(self._plain(i) for i in page.get("Items") or [])
            last = page.get("LastEvaluatedKey")
            if not last:
                break
            params["ExclusiveStartKey"] = last
        return items

    def _transact(
        self, core: list[dict[str, Any]], rows: list[tuple[str, dict[str, Any]]]
    ) -> list[str]:
        """One TransactWriteItems of `core` and the outbox `rows` (key, Put). A row whose
        condition fails (its key is there and unexpired) is dropped and the rest written
        again; anything else that cancels the transaction is an error. Returns the keys of
        the rows written."""
        left = list(rows)
        for _ in range(_TRANSACT_ATTEMPTS):
            ops = core + [{"Put": {"TableName": self.table, **put}} for _, put in left]
            if not ops:
                return []
            try:
                # a fresh token per round: botocore's own retries of this call repeat the
                # token and so cannot apply it twice; the next round's items differ
                self.client.transact_write_items(
                    TransactItems=ops, ClientRequestToken=uuid.uuid4().hex
                )
            except self._botocore_errors() as exc:
                codes = self._cancellation_codes(exc)
                failed = {i for i, code in enumerate(codes) if code not in ("", "None")}
                if any(
                    codes[i] == "ConditionalCheckFailed" and "ConditionExpression" in core[i]["Put"]
                    for i in failed
                    if i < len(core) and "Put" in core[i]
                ):
                    raise _AlreadyCommitted from exc  # only the delivery marker has a condition
                if (
                    codes
                    and failed
                    and all(i >= len(core) and codes[i] == "ConditionalCheckFailed" for i in failed)
                ):
                    left = [row for i, row in enumerate(left) if i + len(core) not in failed]
                    continue
                if codes and {codes[i] for i in failed} <= {"TransactionConflict"}:
                    continue  # another writer held one of these items: try again
                raise RegistryError(
                    f"DynamoDB {self.table}: transact_write_items failed: {exc}"
                ) from exc
            return [key for key, _ in left]
        raise RegistryError(
            f"DynamoDB {self.table}: transact_write_items did not go through in "
            f"{_TRANSACT_ATTEMPTS} rounds (conflicting writers)"
        )

    @staticmethod
    def _cancellation_codes(exc: Exception) -> list[str]:
        """Per-item codes of a cancelled transaction ('None' for the items that were fine)."""
        response = getattr(exc, "response", None) or {}
        if str((response.get("Error") or {}).get("Code", "")) != "TransactionCanceledException":
            return []
        reasons = response.get("CancellationReasons") or []
        return [str(r.get("Code") or "None") for r in reasons]

    def close(self) -> None:
        with self._lock:
            close = getattr(self._client, "close", None)
            if callable(close):
                close()
            self._client = None

    # -- deliveries (idempotency) -------------------------------------------------------------

    def seen_delivery(self, delivery_id: str, *, now: datetime, ttl: timedelta) -> bool:
        """Record a delivery id; True if it was already recorded and not expired."""
        expires = now + ttl
        item = {
            "pk": f"delivery#{delivery_id}",
            "sk": "delivery",
            "received_at": _ts(now),
            "expires_at": _ts(expires),
            TTL_ATTRIBUTE: int(expires.timestamp()),
        }
        done = self._conditional(
            "put_item",
            Item=self._item(item),
            ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
            ExpressionAttributeValues=self._item({":now": _ts(now)}),
        )
        return done is None

    def forget_delivery(self, delivery_id: str) -> None:
        """Drop a delivery id so a retry of the same event is processed again."""
        self._call(
            "delete_item", Key=self._item({"pk": f"delivery#{delivery_id}", "sk": "delivery"})
        )

    def expire_deliveries(self, *, now: datetime) -> int:
        """Delete expired delivery items now (DynamoDB's TTL does this on its own, lazily;
        this is for parity with the SQLite ledger and for tests)."""
        expired = [i for i in self._scan("delivery#") if str(i.get("expires_at", "")) <= _ts(now)]
        for item in expired:
            self._call("delete_item", Key=self._item({"pk": item["pk"], "sk": item["sk"]}))
        return len(expired)

    # -- outcomes (a delivery is handled only together with what it leaves behind) -----------

    def delivery_outcome(self, delivery_id: str, *, now: datetime) -> DeliveryOutcome | None:
        """The committed outcome of a delivery, if it was handled and has not expired."""
        item = self._get(f"delivery#{delivery_id}", "outcome")
        if item is None or str(item["expires_at"]) <= _ts(now):
            return None
        return DeliveryOutcome(
            delivery_id,
            datetime.fromisoformat(item["handled_at"]),
            _dt(item.get("recheck_at")),
            item.get("recheck_image"),
        )

    def commit_outcome(
        self, outcome: Outcome, *, now: datetime, ttl: timedelta
    ) -> list[str] | None:
        """In one transaction: the verdict and its log entry, the delivery's outcome marker
        (kept for `ttl`, written only if no unexpired one is there) and the outbox rows (each
        only if its key is absent or expired). Returns the outbox keys it added, or None when
        the delivery was committed before (nothing is written)."""
        o = outcome
        core: list[dict[str, Any]] = []
        if o.verdict is not None:
            pk = _repo_pk(o.registry, o.repository)
            verdict: dict[str, str | None] = {"pk": pk, "sk": f"verdict#{o.digest}"}
            verdict |= {"outcome": o.verdict, "at": _ts(now)}
            if o.findings is not None:
                verdict["findings"] = findings_json(o.findings)
            entry = {
                "pk": pk,
                # the nonce keeps every entry: a verdict committed twice shows as two
                "sk": f"verdictlog#{o.digest}#{_ts(now)}#{uuid.uuid4().hex}",
                "delivery_id": o.delivery_id,
                "digest": o.digest,
                "outcome": o.verdict,
                "at": _ts(now),
            }
            core += [
                {"Put": {"TableName": self.table, "Item": self._item(i)}} for i in (verdict, entry)
            ]
        if o.delivery_id is not None:
            expires = now + ttl
            marker = {
                "pk": f"delivery#{o.delivery_id}",
                "sk": "outcome",
                "handled_at": _ts(now),
                "expires_at": _ts(expires),
                "recheck_at": _ts(o.recheck_at) if o.recheck_at else None,
                "recheck_image": o.recheck_image,
                TTL_ATTRIBUTE: int(expires.timestamp()),
            }
            core.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": self._item(marker),
                        "ConditionExpression": "attribute_not_exists(pk) OR expires_at <= :now",
                        "ExpressionAttributeValues": self._item({":now": _ts(now)}),
                    }
                }
            )
        rows = [(a.key, self._outbox_put(a, now=now)) for a in _unique(o.alerts)]
        room = MAX_TRANSACTION - len(core)
        added: list[str] = []
        for first in range(room, len(rows), MAX_TRANSACTION):  # past the limit: written first
            added += self._transact([], rows[first : first + MAX_TRANSACTION])
        try:
            return self._transact(core, rows[:room]) + added
        except _AlreadyCommitted:  # its rows were there already: the conditions kept them out
            return None

    def _outbox_put(self, item: OutboxItem, *, now: datetime) -> dict[str, Any]:
        expires = now + OUTBOX_TTL
        row = {
            "pk": f"outbox#{item.key}",
            "sk": "outbox",
            "key": item.key,
            "channel": item.channel,
            "alert": item.alert,
            "created_at": _ts(now),
            "expires_at": _ts(expires),
            "expires_epoch": int(expires.timestamp()),
            "attempts": 0,
            "next_attempt": _ts(now),
            "pending": "outbox",
            "pending_at": _ts(now),
        }
        return {
            "Item": self._item(row),
            "ConditionExpression": "attribute_not_exists(pk) OR expires_at <= :now",
            "ExpressionAttributeValues": self._item({":now": _ts(now)}),
        }

    def verdict_log(
        self, registry: str, repository: str, digest: str
    ) -> list[tuple[str | None, str, datetime]]:
        """(delivery id, outcome, at) of every verdict committed for a digest, oldest first
        (audits and the chaos tests: one handled delivery, one entry)."""
        rows = self._query(_repo_pk(registry, repository), f"verdictlog#{digest}#")
        out = [
            (i.get("delivery_id"), str(i["outcome"]), datetime.fromisoformat(i["at"])) for i in rows
        ]
        return sorted(out, key=lambda r: r[2])

    # -- alert outbox -------------------------------------------------------------------------

    def outbox_pending(self, *, now: datetime, limit: int = 100) -> list[OutboxItem]:
        """Unsent alerts whose next attempt is due, earliest due first."""
        return [
            OutboxItem(
                str(i["key"]),
                str(i["channel"]),
                str(i["alert"]),
                int(i.get("attempts", 0)),
                _dt(i.get("next_attempt")),
                i.get("error"),
            )
            for i in self._pending("outbox", until=_ts(now), limit=limit)
        ]

    def outbox_sent(self, key: str, *, now: datetime) -> None:
        """Delivered: off the index, and expiring with its de-duplication window."""
        self._conditional(
            "update_item",
            Key=self._item({"pk": f"outbox#{key}", "sk": "outbox"}),
            UpdateExpression=(
                "SET sent_at = :now, attempts = attempts + :one, #ttl = expires_epoch "
                "REMOVE pending, pending_at, #error"
            ),
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE, "#error": "error"},
            ExpressionAttributeValues=self._item({":now": _ts(now), ":one": 1}),
        )

    def outbox_retry(self, key: str, *, at: datetime, error: str) -> None:
        """A failed send: try again at `at` (a row already sent stays sent)."""
        self._conditional(
            "update_item",
            Key=self._item({"pk": f"outbox#{key}", "sk": "outbox"}),
            UpdateExpression=(
                "SET next_attempt = :at, pending_at = :at, attempts = attempts + :one, "
                "#error = :error"
            ),
            ConditionExpression="attribute_exists(pending)",
            ExpressionAttributeNames={"#error": "error"},
            ExpressionAttributeValues=self._item({":at": _ts(at), ":one": 1, ":error": error}),
        )

    def outbox_for(self, digest: str) -> list[OutboxRecord]:
        """Every outbox row whose alert names `digest`, sent or not, oldest first: a table
        scan (`quarantine show`, an operator's audit read). Rows DynamoDB's TTL has not yet
        removed are kept: the audit shows what was sent, however long ago."""
        items = self._scan("outbox#", "contains(alert, :digest)", {":digest": digest})
        records = [
            OutboxRecord(
                OutboxItem(
                    str(i["key"]),
                    str(i["channel"]),
                    str(i["alert"]),
                    int(i.get("attempts") or 0),
                    _dt(i.get("next_attempt")),
                    i.get("error"),
                ),
                datetime.fromisoformat(i["created_at"]),
                _dt(i.get("sent_at")),
            )
            for i in items
        ]
        return sorted(records, key=lambda r: (r.created_at, r.item.key))

    def outbox_unsent(self) -> int:
        """Alerts not yet delivered (due or backing off)."""
        return len(self._pending("outbox", until=None, limit=None))

    # -- failed records (the AWS dead letters' "why") ----------------------------------------

    def note_failure(
        self, function: str, key: str, error: str, *, now: datetime, ttl: timedelta
    ) -> None:
        """Count one failed attempt of a record (`key`: `dead_letter_key`), keeping its first
        and its latest error, for `ttl` (as long as the queue and its DLQ keep the message)."""
        expires = now + ttl
        self._call(
            "update_item",
            Key=self._item({"pk": f"failure#{function}#{key}", "sk": "failure"}),
            UpdateExpression=(
                "SET first_error = if_not_exists(first_error, :error), "
                "first_at = if_not_exists(first_at, :now), last_error = :error, "
                "last_at = :now, failures = if_not_exists(failures, :zero) + :one, "
                "#ttl = :ttl"
            ),
            ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
            ExpressionAttributeValues=self._item(
                {
                    ":error": error,
                    ":now": _ts(now),
                    ":zero": 0,
                    ":one": 1,
                    ":ttl": int(expires.timestamp()),
                }
            ),
        )

    def failure(self, function: str, key: str) -> FailureNote | None:
        item = self._get(f"failure#{function}#{key}", "failure")
        if item is None:
            return None
        return FailureNote(
            str(item["first_error"]),
            datetime.fromisoformat(item["first_at"]),
            str(item["last_error"]),
            datetime.fromisoformat(item["last_at"]),
            int(item["failures"]),
        )

    # -- images and tags ----------------------------------------------------------------------

    def record_push(
        self, registry: str, repository: str, digest: str, tags: tuple[str, ...], *, now: datetime
    ) -> datetime:
        """Returns the digest's first-seen time: the update answers it (`ALL_NEW`), so the
        pipeline reads nothing after its write."""
        pk = _repo_pk(registry, repository)
        updated = self._call(
            "update_item",
            Key=self._item({"pk": pk, "sk": f"image#{digest}"}),
            UpdateExpression="SET first_seen = if_not_exists(first_seen, :now)",
            ExpressionAttributeValues=self._item({":now": _ts(now)}),
            ReturnValues="ALL_NEW",
        )
        first_seen = datetime.fromisoformat(self._plain(updated["Attributes"])["first_seen"])
        for tag in tags:  # first sighting of tag → digest wins, as in SQLite's INSERT OR IGNORE
            self._conditional(
                "put_item",
                Item=self._item(
                    {
                        "pk": pk,
                        "sk": f"tag#{tag}#{digest}",
                        "tag": tag,
                        "digest": digest,
                        "seen_at": _ts(now),
                    }
                ),
                ConditionExpression="attribute_not_exists(pk)",
            )
        return first_seen

    def record_pull(self, registry: str, repository: str, digest: str, *, now: datetime) -> None:
        """Pull times only move forward (late, out-of-order events are ignored)."""
        self._conditional(
            "update_item",
            Key=self._item({"pk": _repo_pk(registry, repository), "sk": f"image#{digest}"}),
            UpdateExpression="SET first_seen = if_not_exists(first_seen, :now), last_pulled = :now",
            ConditionExpression="attribute_not_exists(last_pulled) OR last_pulled < :now",
            ExpressionAttributeValues=self._item({":now": _ts(now)}),
        )

    def image_times(
        self, registry: str, repository: str
    ) -> dict[str, tuple[datetime, datetime | None]]:
        """digest → (first seen, last pulled) for one repository."""
        out: dict[str, tuple[datetime, datetime | None]] = {}
        for item in self._query(_repo_pk(registry, repository), "image#"):
            digest = str(item["sk"]).removeprefix("image#")
            out[digest] = (datetime.fromisoformat(item["first_seen"]), _dt(item.get("last_pulled")))
        return out

    def _tag_rows(
        self, registry: str, repository: str, tag: str | None
    ) -> list[tuple[str, str, str]]:
        """(tag, digest, seen_at) of the tag history, oldest first."""
        prefix = f"tag#{tag}#" if tag is not None else "tag#"
        rows = [
            (str(i["tag"]), str(i["digest"]), str(i["seen_at"]))
            for i in self._query(_repo_pk(registry, repository), prefix)
        ]
        return sorted(rows, key=lambda r: (r[2], r[1]))

    def tag_history(self, registry: str, repository: str) -> list[tuple[str, str, datetime]]:
        """(tag, digest, first seen) for every tag → digest seen in a repository, oldest first
        (one paginated query of the repository's partition)."""
        rows = self._tag_rows(registry, repository, None)
        rows.sort(key=lambda r: (r[2], r[0], r[1]))
        return [(t, d, datetime.fromisoformat(seen)) for t, d, seen in rows]

    # -- verdicts -----------------------------------------------------------------------------

    def record_verdict(
        self, registry: str, repository: str, digest: str, outcome: str, *, now: datetime
    ) -> None:
        self._call(
            "put_item",
            Item=self._item(
                {
                    "pk": _repo_pk(registry, repository),
                    "sk": f"verdict#{digest}",
                    "outcome": outcome,
                    "at": _ts(now),
                }
            ),
        )

    def last_verdict(self, registry: str, repository: str, digest: str) -> str | None:
        item = self._get(_repo_pk(registry, repository), f"verdict#{digest}")
        return None if item is None else str(item["outcome"])

    def repository_verdicts(self, registry: str, repository: str) -> dict[str, VerdictRecord]:
        """digest → last verdict (outcome, when, findings) of one repository: one paginated
        query of the repository's partition."""
        return {
            str(i["sk"]).removeprefix("verdict#"): VerdictRecord(
                str(i["outcome"]), datetime.fromisoformat(i["at"]), findings_from(i.get("findings"))
            )
            for i in self._query(_repo_pk(registry, repository), "verdict#")
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
        was already recorded (a retry resumes it rather than starting over).

        One conditional put: written, the record is what was put; refused, DynamoDB hands
        back the item that was there (`ReturnValuesOnConditionCheckFailure`), read again
        only from a store that does not."""
        values = {
            "pk": f"action#{key}",
            "sk": "action",
            "key": key,
            "at": _ts(now),
            "registry": registry,
            "repository": repository,
            "digest": digest,
            "kind": kind,
            "status": "intent",
            "reason": reason,
            "state": json.dumps(state),
            "pending": "intent",
            "pending_at": _retry_due(state) or _ts(now),
        }
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._item(values),
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._botocore_errors() as exc:
            if self._code(exc) != "ConditionalCheckFailedException":
                raise RegistryError(f"DynamoDB {self.table}: put_item failed: {exc}") from exc
            there = (getattr(exc, "response", None) or {}).get("Item")
            found = self._action(self._plain(there)) if there else self.action(key)
            assert found is not None  # the condition failed: the item exists
            return found
        return self._action(values)

    def finish_action(self, key: str, *, status: str, state: dict[str, Any] | None = None) -> None:
        """Set the status (and state). An intent stays on the `pending` index, due at its
        retry time (else when it began); any other status takes it off."""
        sets = ["#status = :status"]
        names = {"#status": "status"}
        values: dict[str, Any] = {":status": status}
        if state is not None:
            sets.append("#state = :state")
            names["#state"] = "state"
            values[":state"] = json.dumps(state)
        remove = ""
        if status == "intent":
            sets.append("pending = :intent")
            values[":intent"] = "intent"
            due = _retry_due(state) if state is not None else None
            if due is not None:
                sets.append("pending_at = :due")
                values[":due"] = due
            else:
                sets.append("pending_at = if_not_exists(pending_at, #at)")
                names["#at"] = "at"
        else:
            remove = " REMOVE pending, pending_at"
        self._conditional(  # an unknown key changes nothing, as in SQLite's UPDATE
            "update_item",
            Key=self._item({"pk": f"action#{key}", "sk": "action"}),
            UpdateExpression="SET " + ", ".join(sets) + remove,
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=self._item(values),
        )

    def action(self, key: str) -> ActionRecord | None:
        item = self._get(f"action#{key}", "action")
        return None if item is None else self._action(item)

    def actions(self, *, status: str | None = None) -> list[ActionRecord]:
        """Every action (or those with `status`), in the order they began. Unfinished ones
        (`intent`) come from the `pending` index (the recovery sweep's read, every few
        minutes); any other listing is a table scan, for audits."""
        if status == "intent":
            items = self._pending("intent", until=None, limit=None)
        else:
            items = self._scan("action#")
        records = [self._action(i) for i in items]
        if status is not None:
            records = [r for r in records if r.status == status]
        return sorted(records, key=lambda r: (r.at, r.key))

    @staticmethod
    def _action(item: dict[str, Any]) -> ActionRecord:
        return ActionRecord(
            str(item["key"]),
            datetime.fromisoformat(item["at"]),
            str(item["registry"]),
            str(item["repository"]),
            str(item["digest"]),
            str(item["kind"]),
            str(item["status"]),
            str(item["reason"]),
            json.loads(item["state"]),
        )

    # -- quarantine (never expires) -----------------------------------------------------------

    def record_quarantine(self, rec: QuarantineRecord) -> None:
        self._call(
            "put_item",
            Item=self._item(
                {
                    "pk": _repo_pk(rec.registry, rec.repository),
                    "sk": f"quarantine#{rec.digest}",
                    "registry": rec.registry,
                    "repository": rec.repository,
                    "digest": rec.digest,
                    "strategy": rec.strategy,
                    "location": rec.location,
                    "tags": json.dumps(list(rec.tags)),
                    "reason": rec.reason,
                    "quarantined_at": _ts(rec.quarantined_at),
                    "released_at": _ts(rec.released_at) if rec.released_at else None,
                }
            ),
        )

    def quarantined(self, registry: str, repository: str, digest: str) -> QuarantineRecord | None:
        item = self._get(_repo_pk(registry, repository), f"quarantine#{digest}")
        return None if item is None else self._quarantine(item)

    def quarantines(self, *, released: bool | None = None) -> list[QuarantineRecord]:
        """A table scan (records sit in their repository's partition): an operator's audit
        read, never on the push path."""
        items = self._scan("repo#", "begins_with(sk, :quarantine)", {":quarantine": "quarantine#"})
        return select_quarantines([self._quarantine(i) for i in items], released)

    @staticmethod
    def _quarantine(item: dict[str, Any]) -> QuarantineRecord:
        return QuarantineRecord(
            str(item["registry"]),
            str(item["repository"]),
            str(item["digest"]),
            str(item["strategy"]),
            str(item["location"]),
            tuple(json.loads(item["tags"])),
            str(item["reason"]),
            datetime.fromisoformat(item["quarantined_at"]),
            _dt(item.get("released_at")),
        )

    def mark_released(self, registry: str, repository: str, digest: str, *, now: datetime) -> None:
        self._conditional(
            "update_item",
            Key=self._item({"pk": _repo_pk(registry, repository), "sk": f"quarantine#{digest}"}),
            UpdateExpression="SET released_at = :now",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues=self._item({":now": _ts(now)}),
        )

    # -- access monitoring (pull tallies, tracking, alert windows) ---------------------------

    def record_pulls(self, tallies: Sequence[PullTally]) -> None:
        """One UpdateItem per image and one per (image, principal), side by side on a few
        threads (BatchWriteItem cannot add to a number). A tally row's count is an `ADD`
        and its time is set only if later (`last_pulled < :at`); when a later pull is there
        already, a second update adds the count alone. No read: concurrent writers add up."""
        rows = [check_tally(t) for t in tallies]
        latest: dict[tuple[str, str, str], str] = {}
        pulls: dict[tuple[str, str, str, str], tuple[str, int]] = {}
        for t in rows:
            at = _ts(t.last_pulled)
            image = (t.registry, t.repository, t.digest)
            latest[image] = max(latest.get(image, at), at)
            key = (*image, t.principal)
            last, count = pulls.get(key, (at, 0))
            pulls[key] = (max(last, at), count + t.count)
        writes: list[Callable[[], None]] = [
            partial(self._pulled, *image, at=at) for image, at in sorted(latest.items())
        ]
        writes += [partial(self._tally, *k, at=at, count=n) for k, (at, n) in sorted(pulls.items())]
        if len(writes) <= 2:
            for write in writes:
                write()
            return
        from concurrent.futures import ThreadPoolExecutor  # only for batches that need it

        with ThreadPoolExecutor(max_workers=min(8, len(writes))) as pool:
            for done in [pool.submit(w) for w in writes]:
                done.result()  # the first error, after every write was tried

    def _pulled(self, registry: str, repository: str, digest: str, *, at: str) -> None:
        """The image's last pull, as `record_pull` sets it (later only)."""
        self._conditional(
            "update_item",
            Key=self._item({"pk": _repo_pk(registry, repository), "sk": f"image#{digest}"}),
            UpdateExpression="SET first_seen = if_not_exists(first_seen, :at), last_pulled = :at",
            ConditionExpression="attribute_not_exists(last_pulled) OR last_pulled < :at",
            ExpressionAttributeValues=self._item({":at": at}),
        )

    def _tally(
        self, registry: str, repository: str, digest: str, principal: str, *, at: str, count: int
    ) -> None:
        key = self._item({"pk": _repo_pk(registry, repository), "sk": f"pull#{digest}#{principal}"})
        later = self._conditional(
            "update_item",
            Key=key,
            UpdateExpression="SET digest = :digest, principal = :principal, last_pulled = :at "
            "ADD #count :n",
            ConditionExpression="attribute_not_exists(last_pulled) OR last_pulled < :at",
            ExpressionAttributeNames={"#count": "count"},
            ExpressionAttributeValues=self._item(
                {":digest": digest, ":principal": principal, ":at": at, ":n": count}
            ),
        )
        if later is None:  # a later pull is recorded: add the count alone
            self._call(
                "update_item",
                Key=key,
                UpdateExpression="ADD #count :n",
                ExpressionAttributeNames={"#count": "count"},
                ExpressionAttributeValues=self._item({":n": count}),
            )

    def pull_tallies(self, registry: str, repository: str) -> list[PullTally]:
        """One query of the repository's partition (`pull#` rows)."""
        items = self._query(_repo_pk(registry, repository), "pull#")
        tallies = [
            PullTally(
                registry,
                repository,
                str(i["digest"]),
                str(i["principal"]),
                datetime.fromisoformat(i["last_pulled"]),
                int(i["count"]),
            )
            for i in items
        ]
        return sorted(tallies, key=lambda t: (t.digest, t.principal))

    def start_pull_tracking(self, registry: str, repository: str, *, now: datetime) -> datetime:
        """One conditional update (set when absent or later); refused, DynamoDB hands back
        the start that is there."""
        key = self._item({"pk": _repo_pk(registry, repository), "sk": "pulltracking"})
        try:
            self.client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET since = :now",
                ConditionExpression="attribute_not_exists(since) OR since > :now",
                ExpressionAttributeValues=self._item({":now": _ts(now)}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._botocore_errors() as exc:
            if self._code(exc) != "ConditionalCheckFailedException":
                raise RegistryError(f"DynamoDB {self.table}: update_item failed: {exc}") from exc
            there = (getattr(exc, "response", None) or {}).get("Item")
            if there:
                return datetime.fromisoformat(self._plain(there)["since"])
            found = self.pull_tracking_since(registry, repository)
            assert found is not None  # the condition failed: a start is there
            return found
        return now.astimezone(UTC)

    def pull_tracking_since(self, registry: str, repository: str) -> datetime | None:
        item = self._get(_repo_pk(registry, repository), "pulltracking")
        return None if item is None else datetime.fromisoformat(item["since"])

    def open_access_window(
        self, window: AccessWindow, *, replacing: datetime | None = None
    ) -> bool:
        """One conditional put into the windows' partition."""
        w = window
        item = {
            "pk": _WINDOWS_PK,
            "sk": f"window#{check_window_key(w.key)}",
            "key": w.key,
            "registry": w.registry,
            "repository": w.repository,
            "digest": w.digest,
            "opened_at": _ts(w.opened_at),
            "closes_at": _ts(w.closes_at),
            "count": w.count,
            "last_seen": _ts(w.last_seen) if w.last_seen else None,
            "alert": w.alert,
        }
        if replacing is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "opened_at = :replacing",
                "ExpressionAttributeValues": self._item({":replacing": _ts(replacing)}),
            }
        return self._conditional("put_item", Item=self._item(item), **condition) is not None

    def access_window(self, key: str) -> AccessWindow | None:
        item = self._get(_WINDOWS_PK, f"window#{key}")
        return None if item is None else self._window(item)

    def count_access(self, key: str, *, opened_at: datetime, add: int, last_seen: datetime) -> bool:
        """`ADD` the count and set `last_seen` if later, on condition of `opened_at`; when a
        later access is recorded already, a second update adds the count alone."""
        names = {"#count": "count"}
        common = {
            "Key": self._item({"pk": _WINDOWS_PK, "sk": f"window#{key}"}),
            "ExpressionAttributeNames": names,
        }
        values = {":opened": _ts(opened_at), ":n": add}
        done = self._conditional(
            "update_item",
            UpdateExpression="SET last_seen = :seen ADD #count :n",
            ConditionExpression="opened_at = :opened AND "
            "(attribute_not_exists(last_seen) OR last_seen < :seen)",
            ExpressionAttributeValues=self._item({**values, ":seen": _ts(last_seen)}),
            **common,
        )
        if done is not None:
            return True
        done = self._conditional(
            "update_item",
            UpdateExpression="ADD #count :n",
            ConditionExpression="opened_at = :opened",
            ExpressionAttributeValues=self._item(values),
            **common,
        )
        return done is not None

    def access_windows_due(self, *, now: datetime, limit: int = 100) -> list[AccessWindow]:
        """One query of the windows' partition, filtered on `closes_at` (few windows are
        open at once: each is one alert's de-duplication window)."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "FilterExpression": "closes_at <= :now",
            "ExpressionAttributeValues": self._item(
                {":pk": _WINDOWS_PK, ":prefix": "window#", ":now": _ts(now)}
            ),
            "ConsistentRead": True,
        }
        while True:
            page = self._call("query", **params)
            items.extend(self._plain(i) for i in page.get("Items") or [])
            last = page.get("LastEvaluatedKey")
            if not last:
                break
            params["ExclusiveStartKey"] = last
        windows = sorted((self._window(i) for i in items), key=lambda w: (w.closes_at, w.key))
        return windows[:limit]

    def drop_access_window(self, key: str, *, opened_at: datetime) -> bool:
        done = self._conditional(
            "delete_item",
            Key=self._item({"pk": _WINDOWS_PK, "sk": f"window#{key}"}),
            ConditionExpression="opened_at = :opened",
            ExpressionAttributeValues=self._item({":opened": _ts(opened_at)}),
        )
        return done is not None

    @staticmethod
    def _window(item: dict[str, Any]) -> AccessWindow:
        return AccessWindow(
            str(item["key"]),
            str(item["registry"]),
            str(item["repository"]),
            str(item["digest"]),
            datetime.fromisoformat(item["opened_at"]),
            datetime.fromisoformat(item["closes_at"]),
            int(item["count"]),
            _dt(item.get("last_seen")),
            str(item["alert"]),
        )


_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")  # DynamoDB's rule for table names
_DYNAMODB_URL = "dynamodb://TABLE?region=REGION&endpoint=URL (both parameters optional)"


def open_dynamodb(url: ParsedUrl) -> DynamoLedger:
    """`dynamodb://TABLE?region=R&endpoint=URL`: the ledger in that table. Nothing is
    contacted here (boto3 loads on first use); credentials come from boto3's usual chain."""
    url.only_params("region", "endpoint")
    if not _TABLE_NAME.fullmatch(url.location):
        raise url.refuse(
            f"{url.location!r} is not a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ - .)",
            hint=_DYNAMODB_URL,
        )
    endpoint = url.params.get("endpoint") or None
    if endpoint is not None and not re.match(r"https?://[^/?#]+", endpoint):
        raise url.refuse(f"endpoint {endpoint!r} is not an http(s) URL", hint=_DYNAMODB_URL)
    return DynamoLedger(
        url.location, endpoint_url=endpoint, region=url.params.get("region") or None
    )
