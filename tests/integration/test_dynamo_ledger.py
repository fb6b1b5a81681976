"""The DynamoDB ledger against moto in server mode on loopback (boto3 over the wire): the
same behaviour as the SQLite ledger (tests/unit/test_ledger.py), plus what is DynamoDB's
own: conditional writes, TTL only on delivery items (and sent alerts), paging of large
partitions, outcomes in one transaction, the sparse index of unfinished work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import moto_server as support
from support.dynamo_ledger import write_tag_history
from support.moto_server import MotoServer

from regwarden.errors import RegistryError
from regwarden.store import (
    DeliveryOutcome,
    DynamoLedger,
    Ledger,
    OutboxItem,
    Outcome,
    QuarantineRecord,
    SqliteLedger,
)
from regwarden.store._dynamo import PENDING_INDEX, TTL_ATTRIBUTE, table_definition

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


# -- outcomes and the alert outbox (#11: a delivery is handled only with its outcome) --------


def outbox_item(key: str, channel: str = "hook") -> OutboxItem:
    return OutboxItem(f"{key}:{channel}", channel, json.dumps({"dedup_key": key}))


def outcome(delivery: str | None, *alerts: OutboxItem, verdict: str | None = "FAILED") -> Outcome:
    return Outcome(delivery, "r", "app", A, verdict, alerts=alerts)


def test_commit_writes_verdict_log_marker_and_outbox_in_one_transaction(
    ledger: DynamoLedger, dynamodb: Any
) -> None:
    calls: list[str] = []
    recheck = T0 + timedelta(minutes=30)
    first = Outcome(
        "aws.ecr:e1",
        "r",
        "app",
        A,
        "PENDING",
        recheck_at=recheck,
        recheck_image=f"r/app@{A}",
        alerts=(outbox_item("k1"), outbox_item("k1", "topic")),
    )
    assert ledger.delivery_outcome("aws.ecr:e1", now=T0) is None
    dynamodb.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    assert ledger.commit_outcome(first, now=T0, ttl=timedelta(days=7)) == ["k1:hook", "k1:topic"]
    assert calls == ["TransactWriteItems"]  # one round trip, all or nothing
    dynamodb.meta.events.unregister("before-call.dynamodb.*")
    done = ledger.delivery_outcome("aws.ecr:e1", now=T0 + timedelta(days=6))
    assert done == DeliveryOutcome("aws.ecr:e1", T0, recheck, f"r/app@{A}")
    assert ledger.delivery_outcome("aws.ecr:e1", now=T0 + timedelta(days=7)) is None  # expired
    assert ledger.last_verdict("r", "app", A) == "PENDING"
    assert ledger.verdict_log("r", "app", A) == [("aws.ecr:e1", "PENDING", T0)]
    (marker,) = [i for i in items(dynamodb) if i["sk"]["S"] == "outcome"]
    assert int(marker[TTL_ATTRIBUTE]["N"]) == int((T0 + timedelta(days=7)).timestamp())
    # the seen-delivery record (notify's de-duplication) is another item: not an outcome
    assert ledger.seen_delivery("aws.ecr:e2", now=T0, ttl=timedelta(days=7)) is False
    assert ledger.delivery_outcome("aws.ecr:e2", now=T0) is None


def test_a_delivery_commits_once_and_verdicts_without_one_all_show(ledger: DynamoLedger) -> None:
    ttl = timedelta(days=7)
    assert ledger.commit_outcome(outcome("d1"), now=T0, ttl=ttl) == []
    # a duplicate handled side by side commits nothing: not its verdict, not its log entry
    assert ledger.commit_outcome(outcome("d1", verdict="ERROR"), now=T0, ttl=ttl) is None
    assert ledger.verdict_log("r", "app", A) == [("d1", "FAILED", T0)]
    assert ledger.last_verdict("r", "app", A) == "FAILED"
    # once its marker expired, the same delivery id is a new delivery
    assert ledger.commit_outcome(outcome("d1", verdict="ERROR"), now=T0 + ttl, ttl=ttl) == []
    assert ledger.last_verdict("r", "app", A) == "ERROR"
    # no verdict (nothing judged): the delivery is handled, no verdict is written
    ledger.commit_outcome(Outcome("d2", "r", "app", B, None), now=T0, ttl=ttl)
    assert ledger.delivery_outcome("d2", now=T0) is not None
    assert ledger.last_verdict("r", "app", B) is None and ledger.verdict_log("r", "app", B) == []
    # the sweep's outcome has no delivery of its own: verdict and log only
    ledger.commit_outcome(outcome(None), now=T0 + timedelta(seconds=1), ttl=ttl)
    assert (None, "FAILED", T0 + timedelta(seconds=1)) in ledger.verdict_log("r", "app", A)


def test_an_alert_already_in_the_outbox_is_not_added_again_until_it_expires(
    ledger: DynamoLedger,
) -> None:
    ttl = timedelta(days=7)
    assert ledger.commit_outcome(outcome("d1", outbox_item("k1")), now=T0, ttl=ttl) == ["k1:hook"]
    # the same alert from another delivery (a repeat push): the rest of the outcome commits
    again = outcome("d2", outbox_item("k1"), outbox_item("k2"), outbox_item("k1"))
    assert ledger.commit_outcome(again, now=T0 + timedelta(days=1), ttl=ttl) == ["k2:hook"]
    assert ledger.delivery_outcome("d2", now=T0 + timedelta(days=1)) is not None
    assert len(ledger.verdict_log("r", "app", A)) == 2
    # only the outbox rows were already there: nothing of it is lost
    only = outcome("d3", outbox_item("k1"), outbox_item("k2"))
    assert ledger.commit_outcome(only, now=T0 + timedelta(days=2), ttl=ttl) == []
    assert ledger.delivery_outcome("d3", now=T0 + timedelta(days=2)) is not None
    ledger.outbox_sent("k1:hook", now=T0 + timedelta(days=2))
    later = T0 + timedelta(days=31)  # past the 30-day window: the same alert is new again
    assert ledger.commit_outcome(outcome("d4", outbox_item("k1")), now=later, ttl=ttl) == [
        "k1:hook"
    ]
    (row,) = [i for i in ledger.outbox_pending(now=later) if i.key == "k1:hook"]
    assert row.attempts == 0 and row.next_attempt == later


def test_outbox_pending_sent_and_retry(ledger: DynamoLedger, dynamodb: Any) -> None:
    ttl = timedelta(days=7)
    ledger.commit_outcome(outcome("d1", outbox_item("k1"), outbox_item("k2")), now=T0, ttl=ttl)
    ledger.commit_outcome(outcome("d2", outbox_item("k3")), now=T0 + timedelta(seconds=5), ttl=ttl)
    assert [i.key for i in ledger.outbox_pending(now=T0)] == ["k1:hook", "k2:hook"]
    due = ledger.outbox_pending(now=T0 + timedelta(minutes=1))
    assert [i.key for i in due] == ["k1:hook", "k2:hook", "k3:hook"]
    assert json.loads(due[0].alert) == {"dedup_key": "k1"} and due[0].channel == "hook"
    assert [i.key for i in ledger.outbox_pending(now=T0 + timedelta(minutes=1), limit=2)] == [
        "k1:hook",
        "k2:hook",
    ]
    ledger.outbox_sent("k1:hook", now=T0 + timedelta(minutes=1))
    ledger.outbox_retry("k2:hook", at=T0 + timedelta(minutes=10), error="503 from the hook")
    assert [i.key for i in ledger.outbox_pending(now=T0 + timedelta(minutes=5))] == ["k3:hook"]
    assert ledger.outbox_unsent() == 2
    (k2,) = [i for i in ledger.outbox_pending(now=T0 + timedelta(minutes=10)) if i.key == "k2:hook"]
    assert k2.attempts == 1 and k2.error == "503 from the hook"
    assert k2.next_attempt == T0 + timedelta(minutes=10)
    # a sent row expires with its window; an unsent one is never dropped by TTL
    rows = {i["pk"]["S"]: i for i in items(dynamodb) if i["sk"]["S"] == "outbox"}
    expected = int((T0 + timedelta(days=30)).timestamp())
    assert int(rows["outbox#k1:hook"][TTL_ATTRIBUTE]["N"]) == expected
    assert TTL_ATTRIBUTE not in rows["outbox#k2:hook"]
    ledger.outbox_retry("k1:hook", at=T0 + timedelta(hours=1), error="late")  # sent stays sent
    assert "k1:hook" not in [i.key for i in ledger.outbox_pending(now=T0 + timedelta(days=1))]
    ledger.outbox_retry("nope", at=T0, error="x")  # unknown keys: nothing appears
    ledger.outbox_sent("nope", now=T0)
    assert ledger.outbox_unsent() == 2


def test_outbox_rows_past_the_transaction_limit_are_written_first(
    ledger: DynamoLedger, dynamodb: Any
) -> None:
    sizes: list[int] = []
    dynamodb.meta.events.register(
        "before-parameter-build.dynamodb.TransactWriteItems",
        lambda params, **_: sizes.append(len(params["TransactItems"])),
    )
    alerts = [outbox_item(f"k{n:03d}") for n in range(150)]
    added = ledger.commit_outcome(outcome("d1", *alerts), now=T0, ttl=timedelta(days=7))
    assert sorted(added) == sorted(a.key for a in alerts)
    assert sizes == [53, 100]  # the overflow first, then verdict, log, marker and 97 rows
    assert ledger.outbox_unsent() == 150
    assert ledger.delivery_outcome("d1", now=T0) is not None


def test_a_transaction_conflict_is_retried_and_other_cancellations_are_errors(
    ledger: DynamoLedger, dynamodb: Any
) -> None:
    from botocore.exceptions import ClientError

    def cancel(codes: list[str]) -> Any:
        def raise_it(**_: Any) -> None:
            if answers:
                raise ClientError(
                    {
                        "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                        "CancellationReasons": [{"Code": c} for c in answers.pop(0)],
                    },
                    "TransactWriteItems",
                )

        answers = [codes]
        return raise_it

    handler = cancel(["None", "TransactionConflict", "None", "None"])
    dynamodb.meta.events.register("before-call.dynamodb.TransactWriteItems", handler)
    assert ledger.commit_outcome(outcome("d1", outbox_item("k1")), now=T0, ttl=timedelta(1)) == [
        "k1:hook"
    ]
    dynamodb.meta.events.unregister("before-call.dynamodb.TransactWriteItems", handler)
    # the marker's item failing is not an outbox duplicate: nothing is committed half
    handler = cancel(["None", "None", "ValidationError", "ConditionalCheckFailed"])
    dynamodb.meta.events.register("before-call.dynamodb.TransactWriteItems", handler)
    with pytest.raises(RegistryError, match="transact_write_items failed"):
        ledger.commit_outcome(outcome("d2", outbox_item("k2")), now=T0, ttl=timedelta(1))
    assert ledger.delivery_outcome("d2", now=T0) is None


def test_unfinished_intents_are_listed_from_the_pending_index(
    ledger: DynamoLedger, dynamodb: Any
) -> None:
    kwargs: dict[str, Any] = dict(
        registry="r", repository="app", kind="quarantine", reason="critical CVE", now=T0
    )
    ledger.begin_action("q:a", digest=A, state={"step": "start"}, **kwargs)
    ledger.begin_action("q:b", digest=B, state={"step": "start"}, **kwargs)
    ledger.begin_action("q:c", digest=C, state={"step": "start"}, **kwargs)
    ledger.finish_action("q:b", status="done", state={"step": "deleted"})
    retry = {"step": "copied", "retry": {"attempts": 1, "next": "2026-11-27T12:05:00+00:00"}}
    ledger.finish_action("q:c", status="intent", state=retry)
    ledger.finish_action("q:a", status="intent")  # no state: stays listed, due as before
    scans: list[str] = []
    dynamodb.meta.events.register("before-call.dynamodb.Scan", lambda **_: scans.append("s"))
    intents = ledger.actions(status="intent")
    assert [a.key for a in intents] == ["q:a", "q:c"] and scans == []
    assert intents[1].state == retry
    index = dynamodb.query(
        TableName=TABLE,
        IndexName=PENDING_INDEX,
        KeyConditionExpression="pending = :p",
        ExpressionAttributeValues={":p": {"S": "intent"}},
    )["Items"]
    due = {i["pk"]["S"]: i["pending_at"]["S"] for i in index}
    assert due == {
        "action#q:a": "2026-11-27T12:00:00.000000+00:00",
        "action#q:c": "2026-11-27T12:05:00.000000+00:00",
    }
    ledger.finish_action("q:c", status="rolled-back")
    assert [a.key for a in ledger.actions(status="intent")] == ["q:a"]
    assert [a.key for a in ledger.actions(status="done")] == ["q:b"]
