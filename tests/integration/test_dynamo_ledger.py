"""The DynamoDB ledger against moto in server mode on loopback (boto3 over the wire): the
same behaviour as the SQLite ledger (tests/unit/test_ledger.py), plus what is DynamoDB's
own: conditional writes, TTL only on delivery items, paging of large partitions."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import moto_server as support
from support.dynamo_ledger import write_tag_history
from support.moto_server import MotoServer

from regwarden.errors import RegistryError
from regwarden.store import DynamoLedger, Ledger, QuarantineRecord, SqliteLedger
from regwarden.store._dynamo import TTL_ATTRIBUTE, table_definition

moto_server = support.moto_server
moto = support.moto

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
TABLE = "regwarden-ledger"


@pytest.fixture
def dynamodb(moto: MotoServer) -> Any:
    client = moto.client("dynamodb")
    client.create_table(**table_definition(TABLE))
    return client


@pytest.fixture
def ledger(dynamodb: Any) -> Iterator[DynamoLedger]:
    led = DynamoLedger(TABLE, client=dynamodb)
    yield led
    led.close()


def items(dynamodb: Any) -> list[dict[str, Any]]:
    return list(dynamodb.scan(TableName=TABLE, ConsistentRead=True)["Items"])


def test_both_ledgers_satisfy_the_protocol(ledger: DynamoLedger, tmp_path: Any) -> None:
    def use(led: Ledger) -> str | None:
        return led.last_verdict("r", "app", A)

    sqlite = SqliteLedger(tmp_path / "l.db")
    assert use(ledger) is None and use(sqlite) is None
    sqlite.close()


def test_delivery_dedup_respects_ttl(ledger: DynamoLedger, dynamodb: Any) -> None:
    ttl = timedelta(hours=1)
    assert ledger.seen_delivery("d1", now=T0, ttl=ttl) is False
    assert ledger.seen_delivery("d1", now=T0 + timedelta(minutes=59), ttl=ttl) is True
    assert ledger.seen_delivery("d2", now=T0, ttl=ttl) is False
    # after expiry the id counts as new again, even before DynamoDB's TTL removed the item
    assert ledger.seen_delivery("d1", now=T0 + timedelta(hours=2), ttl=ttl) is False
    (d1,) = [i for i in items(dynamodb) if i["pk"]["S"] == "delivery#d1"]
    assert int(d1[TTL_ATTRIBUTE]["N"]) == int((T0 + timedelta(hours=3)).timestamp())
    assert ledger.expire_deliveries(now=T0 + timedelta(hours=10)) == 2
    assert items(dynamodb) == []


def test_forget_delivery_lets_a_retry_through(ledger: DynamoLedger) -> None:
    ttl = timedelta(days=7)
    assert ledger.seen_delivery("aws.ecr:e1", now=T0, ttl=ttl) is False
    ledger.forget_delivery("aws.ecr:e1")
    assert ledger.seen_delivery("aws.ecr:e1", now=T0, ttl=ttl) is False
    ledger.forget_delivery("never-seen")  # no error


def test_tag_history_gives_previous_digest(ledger: DynamoLedger) -> None:
    ledger.record_push("r", "app", A, ("v1", "latest"), now=T0)
    ledger.record_push("r", "app", B, ("latest",), now=T0 + timedelta(minutes=1))
    ledger.record_push("r", "app", C, ("latest",), now=T0 + timedelta(minutes=2))
    assert ledger.previous_digest("r", "app", "latest", before=C) == B
    assert ledger.previous_digest("r", "app", "latest", before=B) == C  # newest other digest
    assert ledger.previous_digest("r", "app", "v1", before=A) is None  # never guessed
    assert ledger.tag_digests("r", "app", "latest") == [A, B, C]
    assert ledger.previous_digest("r", "other", "latest", before=C) is None
    assert ledger.tags_for("r", "app", A) == ["v1"]
    assert ledger.tags_for("r", "app", C) == ["latest"]
    # a repeated push keeps the first sighting of tag → digest
    ledger.record_push("r", "app", A, ("latest",), now=T0 + timedelta(minutes=3))
    assert ledger.tag_digests("r", "app", "latest") == [A, B, C]
    assert ledger.tags_for("r", "app", C) == ["latest"]


def test_first_seen_is_kept_and_pulls_only_move_forward(ledger: DynamoLedger) -> None:
    ledger.record_push("r", "app", A, ("v1",), now=T0)
    ledger.record_push("r", "app", A, ("v1",), now=T0 + timedelta(days=3))
    ledger.record_pull("r", "app", A, now=T0 + timedelta(days=5))
    ledger.record_pull("r", "app", A, now=T0 + timedelta(days=4))  # late, out-of-order event
    first, pulled = ledger.image_times("r", "app")[A]
    assert first == T0
    assert pulled == T0 + timedelta(days=5)
    ledger.record_pull("r", "app", B, now=T0 + timedelta(days=6))  # pulled, never seen pushed
    assert ledger.image_times("r", "app")[B] == (T0 + timedelta(days=6), T0 + timedelta(days=6))


def test_verdicts_are_replaced(ledger: DynamoLedger) -> None:
    assert ledger.last_verdict("r", "app", A) is None
    ledger.record_verdict("r", "app", A, "PENDING", now=T0)
    ledger.record_verdict("r", "app", A, "PASSED", now=T0 + timedelta(minutes=1))
    assert ledger.last_verdict("r", "app", A) == "PASSED"
    assert ledger.last_verdict("r", "other", A) is None


def test_action_intent_is_resumed_not_restarted(ledger: DynamoLedger) -> None:
    kwargs: dict[str, Any] = dict(
        registry="r", repository="app", digest=A, kind="quarantine", reason="critical CVE", now=T0
    )
    first = ledger.begin_action("q:r/app@A", state={"step": "copied"}, **kwargs)
    again = ledger.begin_action("q:r/app@A", state={"step": "start"}, **kwargs)
    assert first == again and again.state == {"step": "copied"} and again.status == "intent"
    ledger.finish_action("q:r/app@A", status="done", state={"step": "deleted"})
    done = ledger.action("q:r/app@A")
    assert done is not None and done.status == "done" and done.state == {"step": "deleted"}
    assert [a.key for a in ledger.actions(status="intent")] == []
    ledger.finish_action("unknown", status="done")  # no record appears
    assert ledger.action("unknown") is None
    later = dict(kwargs, now=T0 + timedelta(minutes=5))
    ledger.begin_action("r:r/app@A", state={}, **later)
    assert [a.key for a in ledger.actions()] == ["q:r/app@A", "r:r/app@A"]


def test_quarantine_record_roundtrip_and_never_expires(ledger: DynamoLedger, dynamodb: Any) -> None:
    rec = QuarantineRecord(
        "r", "app", A, "move", "quarantine/app", ("v1", "latest"), "unsigned", T0, None
    )
    ledger.record_quarantine(rec)
    assert ledger.quarantined("r", "app", A) == rec
    ledger.mark_released("r", "app", A, now=T0 + timedelta(hours=1))
    released = ledger.quarantined("r", "app", A)
    assert released is not None and released.released_at == T0 + timedelta(hours=1)
    ledger.mark_released("r", "app", B, now=T0)  # unknown digest: nothing is created
    assert ledger.quarantined("r", "app", B) is None
    assert all(TTL_ATTRIBUTE not in i for i in items(dynamodb))  # TTL only on deliveries


def test_large_partition_is_read_across_pages(ledger: DynamoLedger, dynamodb: Any) -> None:
    """DynamoDB answers a query 1 MB at a time (moto too): tag history beyond that is read
    across pages. Items are written directly, padded to 2 KB each (~1.2 MB in all)."""
    digests = [f"sha256:{n:064x}" for n in range(600)]
    pairs = [(f"t{n}", digest) for n, digest in enumerate(digests)]
    write_tag_history(dynamodb, TABLE, "r", "big", pairs, start=T0)
    calls: list[str] = []
    dynamodb.meta.events.register("before-call.dynamodb.Query", lambda **_: calls.append("q"))
    assert ledger.tags_for("r", "big", digests[599]) == ["t599"]
    assert len(calls) >= 2  # more than one page
    ledger.record_push("r", "big", digests[0], ("t599",), now=T0 + timedelta(hours=1))
    assert ledger.previous_digest("r", "big", "t599", before=digests[0]) == digests[599]


def test_concurrent_threads_record_each_delivery_once(ledger: DynamoLedger) -> None:
    def work(i: int) -> bool:
        return ledger.seen_delivery(f"d{i % 50}", now=T0, ttl=timedelta(hours=1))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(400)))
    assert results.count(False) == 50  # each id recorded exactly once


def test_naive_times_are_rejected(ledger: DynamoLedger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.seen_delivery("x", now=datetime(2026, 1, 1), ttl=timedelta(hours=1))


def test_a_missing_table_is_an_infrastructure_error(moto: MotoServer) -> None:
    led = DynamoLedger("no-such-table", client=moto.client("dynamodb"))
    with pytest.raises(RegistryError, match="DynamoDB no-such-table: put_item failed"):
        led.seen_delivery("x", now=T0, ttl=timedelta(hours=1))
