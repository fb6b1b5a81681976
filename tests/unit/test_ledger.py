"""The SQLite ledger: deduplication, tag history, resumable intents, durable queue."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from regwarden.store import QuarantineRecord, SqliteLedger

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


@pytest.fixture
def ledger(tmp_path: Path) -> SqliteLedger:
    led = SqliteLedger(tmp_path / "state" / "ledger.db")
    yield led
    led.close()


def test_delivery_dedup_respects_ttl(ledger: SqliteLedger) -> None:
    ttl = timedelta(hours=1)
    assert ledger.seen_delivery("d1", now=T0, ttl=ttl) is False
    assert ledger.seen_delivery("d1", now=T0 + timedelta(minutes=59), ttl=ttl) is True
    assert ledger.seen_delivery("d2", now=T0, ttl=ttl) is False
    # after expiry the id counts as new again
    assert ledger.seen_delivery("d1", now=T0 + timedelta(hours=2), ttl=ttl) is False
    assert ledger.expire_deliveries(now=T0 + timedelta(hours=10)) == 2


def test_tag_history_gives_previous_digest(ledger: SqliteLedger) -> None:
    ledger.record_push("r", "app", A, ("v1", "latest"), now=T0)
    ledger.record_push("r", "app", B, ("latest",), now=T0 + timedelta(minutes=1))
    ledger.record_push("r", "app", C, ("latest",), now=T0 + timedelta(minutes=2))
    assert ledger.previous_digest("r", "app", "latest", before=C) == B
    assert ledger.previous_digest("r", "app", "latest", before=B) == C  # newest other digest
    assert ledger.previous_digest("r", "app", "v1", before=A) is None  # never guessed
    assert ledger.tag_digests("r", "app", "latest") == [A, B, C]
    assert ledger.previous_digest("r", "other", "latest", before=C) is None


def test_first_seen_is_kept_and_pulls_only_move_forward(ledger: SqliteLedger) -> None:
    ledger.record_push("r", "app", A, ("v1",), now=T0)
    ledger.record_push("r", "app", A, ("v1",), now=T0 + timedelta(days=3))
    ledger.record_pull("r", "app", A, now=T0 + timedelta(days=5))
    ledger.record_pull("r", "app", A, now=T0 + timedelta(days=4))  # late, out-of-order event
    first, pulled = ledger.image_times("r", "app")[A]
    assert first == T0
    assert pulled == T0 + timedelta(days=5)


def test_action_intent_is_resumed_not_restarted(ledger: SqliteLedger) -> None:
    kwargs = dict(
        registry="r", repository="app", digest=A, kind="quarantine", reason="critical CVE", now=T0
    )
    first = ledger.begin_action("q:r/app@A", state={"step": "copied"}, **kwargs)  # type: ignore[arg-type]
    again = ledger.begin_action("q:r/app@A", state={"step": "start"}, **kwargs)  # type: ignore[arg-type]
    assert first == again and again.state == {"step": "copied"} and again.status == "intent"
    ledger.finish_action("q:r/app@A", status="done", state={"step": "deleted"})
    done = ledger.action("q:r/app@A")
    assert done is not None and done.status == "done" and done.state == {"step": "deleted"}
    assert [a.key for a in ledger.actions(status="intent")] == []


def test_quarantine_record_roundtrip(ledger: SqliteLedger) -> None:
    rec = QuarantineRecord(
        "r", "app", A, "move", "quarantine/app", ("v1", "latest"), "unsigned", T0, None
    )
    ledger.record_quarantine(rec)
    assert ledger.quarantined("r", "app", A) == rec
    ledger.mark_released("r", "app", A, now=T0 + timedelta(hours=1))
    released = ledger.quarantined("r", "app", A)
    assert released is not None and released.released_at == T0 + timedelta(hours=1)


def test_queue_redelivers_after_lease_expires(ledger: SqliteLedger) -> None:
    lease = timedelta(seconds=30)
    first = ledger.enqueue("distribution", b'{"events": []}', "application/json", now=T0)
    ledger.enqueue("harbor", b"{}", None, now=T0)
    got = ledger.lease(now=T0, owner="w", timeout=lease, limit=1)
    assert [e.id for e in got] == [first] and got[0].attempts == 1
    # the first is leased: the second comes next
    assert [e.source for e in ledger.lease(now=T0, owner="w", timeout=lease, limit=5)] == ["harbor"]
    assert ledger.lease(now=T0 + timedelta(seconds=5), owner="w", timeout=lease) == []
    # the worker holding `first` crashed: after the lease it is handed out again
    again = ledger.lease(now=T0 + timedelta(seconds=31), owner="w2", timeout=lease, limit=5)
    assert again[0].id == first and again[0].attempts == 2
    for e in again:
        ledger.complete(e.id, now=T0 + timedelta(seconds=32))
    assert ledger.pending_count() == 0


def test_concurrent_threads_share_one_file(ledger: SqliteLedger) -> None:
    def work(i: int) -> bool:
        return ledger.seen_delivery(f"d{i % 50}", now=T0, ttl=timedelta(hours=1))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(400)))
    assert results.count(False) == 50  # each id recorded exactly once


def test_naive_times_are_rejected(ledger: SqliteLedger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.enqueue("x", b"", None, now=datetime(2026, 1, 1))
