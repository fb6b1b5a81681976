"""DynamoDB ledger: the `Ledger` protocol in one table (single-table design), for AWS.

Keys (`pk`, `sk`, both strings):

| item            | pk                            | sk                   | TTL |
| --------------- | ----------------------------- | -------------------- | --- |
| delivery id     | `delivery#<id>`               | `delivery`           | yes |
| image times     | `repo#<registry>/<repository>`| `image#<digest>`     | no  |
| tag history     | `repo#<registry>/<repository>`| `tag#<tag>#<digest>` | no  |
| verdict         | `repo#<registry>/<repository>`| `verdict#<digest>`   | no  |
| quarantine      | `repo#<registry>/<repository>`| `quarantine#<digest>`| no  |
| action (audit)  | `action#<key>`                | `action`             | no  |

Only delivery items carry the TTL attribute (`expiration`, epoch seconds, the same attribute
Powertools' idempotency records use, so one table TTL setting serves both); quarantine
records and the audit never expire. DynamoDB deletes expired items lazily (within days), so
`seen_delivery` compares the exact expiry itself. Conditional writes make `seen_delivery`
and `begin_action` atomic across concurrent Lambda invocations. Reads are strongly
consistent. Times are stored as UTC ISO 8601 strings with microseconds (they sort as text).

boto3 is imported on first use only: importing this module costs nothing.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import RegistryError
from ._sqlite import ActionRecord, QuarantineRecord

__all__ = ["TTL_ATTRIBUTE", "DynamoLedger", "table_definition"]

TTL_ATTRIBUTE = "expiration"
"""The table's TTL attribute (epoch seconds); set on delivery items only."""


def table_definition(name: str) -> dict[str, Any]:
    """`create_table` arguments for the ledger table (the SAM template declares the same)."""
    return {
        "TableName": name,
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


def _ts(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _repo_pk(registry: str, repository: str) -> str:
    return f"repo#{registry}/{repository}"


class DynamoLedger:
    """Ledger in one DynamoDB table. Thread-safe (boto3 clients are)."""

    def __init__(self, table: str, *, client: Any = None, endpoint_url: str | None = None) -> None:
        self.table = table
        self._client = client
        self._endpoint_url = endpoint_url
        self._lock = threading.Lock()
        self._types: tuple[Any, Any] | None = None
        self._errors: tuple[type[Exception], ...] = ()

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                from .. import USER_AGENT

                self._client = boto3.session.Session().client(
                    "dynamodb",
                    endpoint_url=self._endpoint_url,
                    config=Config(
                        retries={"mode": "adaptive", "max_attempts": 10},
                        user_agent_extra=USER_AGENT,
                    ),
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

    def _scan(self, prefix: str) -> list[dict[str, Any]]:
        """Every item whose partition key starts with `prefix` (audit listings only)."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {
            "FilterExpression": "begins_with(pk, :prefix)",
            "ExpressionAttributeValues": self._item({":prefix": prefix}),
            "ConsistentRead": True,
        }
        while True:
            page = self._call("scan", **params)
            items.extend(self._plain(i) for i in page.get("Items") or [])
            last = page.get("LastEvaluatedKey")
            if not last:
                return items
            params["ExclusiveStartKey"] = last

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

    # -- images and tags ----------------------------------------------------------------------

    def record_push(
        self, registry: str, repository: str, digest: str, tags: tuple[str, ...], *, now: datetime
    ) -> None:
        pk = _repo_pk(registry, repository)
        self._call(
            "update_item",
            Key=self._item({"pk": pk, "sk": f"image#{digest}"}),
            UpdateExpression="SET first_seen = if_not_exists(first_seen, :now)",
            ExpressionAttributeValues=self._item({":now": _ts(now)}),
        )
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

    def previous_digest(
        self, registry: str, repository: str, tag: str, *, before: str
    ) -> str | None:
        """The digest `tag` pointed at before it moved to `before`, if regwarden saw it."""
        others = [r for r in self._tag_rows(registry, repository, tag) if r[1] != before]
        return others[-1][1] if others else None

    def tags_for(self, registry: str, repository: str, digest: str) -> list[str]:
        """Tags whose most recent push (as regwarden saw it) was this digest."""
        rows = self._tag_rows(registry, repository, None)
        latest: dict[str, str] = {}
        for tag, _, seen in rows:
            latest[tag] = max(latest.get(tag, ""), seen)
        return sorted({t for t, d, seen in rows if d == digest and seen == latest[t]})

    def tag_digests(self, registry: str, repository: str, tag: str) -> list[str]:
        """Every digest `tag` has pointed at, oldest first."""
        return [d for _, d, _ in self._tag_rows(registry, repository, tag)]

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
        was already recorded (a retry resumes it rather than starting over)."""
        self._conditional(
            "put_item",
            Item=self._item(
                {
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
                }
            ),
            ConditionExpression="attribute_not_exists(pk)",
        )
        found = self.action(key)
        assert found is not None
        return found

    def finish_action(self, key: str, *, status: str, state: dict[str, Any] | None = None) -> None:
        update = "SET #status = :status"
        values: dict[str, Any] = {":status": status}
        if state is not None:
            update += ", #state = :state"
            values[":state"] = json.dumps(state)
        self._conditional(  # an unknown key changes nothing, as in SQLite's UPDATE
            "update_item",
            Key=self._item({"pk": f"action#{key}", "sk": "action"}),
            UpdateExpression=update,
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={
                "#status": "status",
                **({"#state": "state"} if state is not None else {}),
            },
            ExpressionAttributeValues=self._item(values),
        )

    def action(self, key: str) -> ActionRecord | None:
        item = self._get(f"action#{key}", "action")
        return None if item is None else self._action(item)

    def actions(self, *, status: str | None = None) -> list[ActionRecord]:
        """Every action (or those with `status`), in the order they began (a table scan:
        for audits, not for the hot path)."""
        records = [self._action(i) for i in self._scan("action#")]
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
        if item is None:
            return None
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
