"""The receiver queue's leases: owner + heartbeat, stale-lease take-over, restart reclaim,
not-before times, dead letters, the migration of older ledger files, and worker pools
sharing one ledger file. Time is an injected clock; waits are on conditions."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from regwarden.receiver import WorkerPool
from regwarden.store import QueuedEvent, SqliteLedger

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=30)
TICK = timedelta(microseconds=1)


def wait_for(cond: Callable[[], object], *, timeout: float, what: str) -> None:
    """Poll `cond` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.01)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, now: datetime) -> None:
        with self._lock:
            self._now = now

    def advance(self, by: timedelta) -> datetime:
        with self._lock:
            self._now += by
            return self._now


class CountingLedger(SqliteLedger):
    """Counts `lease` calls, so a test can wait until a pool has polled (and found nothing)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.polls = 0
        self._polled = threading.Condition()

    def lease(
        self, *, now: datetime, owner: str, timeout: timedelta, limit: int = 1
    ) -> list[QueuedEvent]:
        got = super().lease(now=now, owner=owner, timeout=timeout, limit=limit)
        with self._polled:
            self.polls += 1
            self._polled.notify_all()
        return got

    def wait_polls(self, more: int) -> None:
        """Block until `more` further lease calls have returned."""
        with self._polled:
            target = self.polls + more
            assert self._polled.wait_for(lambda: self.polls >= target, timeout=10)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(path)
    yield store
    store.close()


def _row(path: Path, event_id: int) -> dict[str, object]:
    db = sqlite3.connect(path)
    try:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM queue WHERE id = ?", (event_id,)).fetchone())
    finally:
        db.close()


# -- the ledger ---------------------------------------------------------------------------------


def test_a_held_lease_is_taken_over_only_once_its_heartbeat_is_timeout_old(
    ledger: SqliteLedger,
) -> None:
    first = ledger.enqueue("distribution", b"1", None, now=T0)
    second = ledger.enqueue("harbor", b"2", None, now=T0)
    got = ledger.lease(now=T0, owner="a", timeout=TIMEOUT)
    assert [(e.id, e.attempts, e.reclaimed_from) for e in got] == [(first, 1, None)]
    # held by a: b gets the next one, then nothing while a's heartbeat is fresh
    assert [e.id for e in ledger.lease(now=T0, owner="b", timeout=TIMEOUT, limit=5)] == [second]
    almost = T0 + TIMEOUT - TICK
    assert ledger.lease(now=almost, owner="b", timeout=TIMEOUT, limit=5) == []
    assert ledger.heartbeat("b", [second], now=almost) == [second]  # b is alive
    # a said nothing for the whole timeout: it died or hung, b takes the event over
    taken = ledger.lease(now=T0 + TIMEOUT, owner="b", timeout=TIMEOUT, limit=5)
    assert [(e.id, e.attempts, e.reclaimed_from) for e in taken] == [(first, 2, "a")]
    assert _row(ledger.path, first)["owner"] == "b"


def test_heartbeats_keep_a_lease_past_the_timeout(ledger: SqliteLedger) -> None:
    event = ledger.enqueue("distribution", b"1", None, now=T0)
    ledger.lease(now=T0, owner="a", timeout=TIMEOUT)
    now = T0
    for _ in range(6):  # three timeouts in all, a beat every half timeout
        now += TIMEOUT / 2
        assert ledger.heartbeat("a", [event], now=now) == [event]
        assert ledger.lease(now=now + TIMEOUT / 2 - TICK, owner="b", timeout=TIMEOUT) == []
    # another owner's beat does not refresh it
    assert ledger.heartbeat("b", [event], now=now + TIMEOUT) == []
    taken = ledger.lease(now=now + TIMEOUT, owner="b", timeout=TIMEOUT)
    assert [e.id for e in taken] == [event]
    # a's next beat finds the lease gone
    assert ledger.heartbeat("a", [event], now=now + TIMEOUT) == []
    assert ledger.heartbeat("a", [], now=now) == []


def test_release_owner_frees_that_owners_leases_at_once(ledger: SqliteLedger) -> None:
    ids = [ledger.enqueue("distribution", str(i).encode(), None, now=T0) for i in range(4)]
    mine = ledger.lease(now=T0, owner="host:8080", timeout=TIMEOUT, limit=2)
    theirs = ledger.lease(now=T0, owner="other:8080", timeout=TIMEOUT, limit=1)
    ledger.complete(mine[1].id, now=T0)
    # restarted: it works on nothing, so what it held is due now, no timeout to wait out
    assert ledger.release_owner("host:8080") == 1
    assert ledger.release_owner("host:8080") == 0
    again = ledger.lease(now=T0, owner="host:8080", timeout=TIMEOUT, limit=5)
    assert [(e.id, e.attempts) for e in again] == [(ids[0], 2), (ids[3], 1)]
    assert _row(ledger.path, theirs[0].id)["owner"] == "other:8080"  # not its to free
    assert _row(ledger.path, mine[1].id)["done_at"] is not None


def test_not_before_and_retry_at_set_when_an_event_is_due(ledger: SqliteLedger) -> None:
    later = ledger.enqueue("recheck", b"{}", None, now=T0, not_before=T0 + timedelta(minutes=5))
    due_now = ledger.enqueue("distribution", b"1", None, now=T0)
    assert [e.id for e in ledger.lease(now=T0, owner="a", timeout=TIMEOUT, limit=5)] == [due_now]
    # a failed attempt ends the lease: due again at the backoff, for any owner, no timeout
    assert ledger.retry_at(due_now, at=T0 + timedelta(seconds=2), error="E: x", owner="a")
    assert _row(ledger.path, due_now)["owner"] is None
    assert ledger.lease(now=T0 + timedelta(seconds=1), owner="b", timeout=TIMEOUT) == []
    got = ledger.lease(now=T0 + timedelta(seconds=2), owner="b", timeout=TIMEOUT, limit=5)
    assert [(e.id, e.attempts) for e in got] == [(due_now, 2)]
    assert ledger.complete(due_now, now=T0 + timedelta(seconds=3), owner="b")
    assert ledger.lease(now=T0 + timedelta(minutes=5) - TICK, owner="b", timeout=TIMEOUT) == []
    assert [
        e.id for e in ledger.lease(now=T0 + timedelta(minutes=5), owner="b", timeout=TIMEOUT)
    ] == [later]
    assert ledger.pending_count() == 1


def test_only_the_holder_ends_a_lease_it_was_given(ledger: SqliteLedger) -> None:
    event = ledger.enqueue("distribution", b"1", None, now=T0)
    ledger.lease(now=T0, owner="a", timeout=TIMEOUT)
    ledger.lease(now=T0 + TIMEOUT, owner="b", timeout=TIMEOUT)  # a hung; b took it over
    # a wakes up: its end of the event is not recorded over b's lease
    assert not ledger.complete(event, now=T0 + TIMEOUT, owner="a")
    assert not ledger.retry_at(event, at=T0, error="E: late", owner="a")
    assert _row(ledger.path, event)["owner"] == "b" and ledger.pending_count() == 1
    assert ledger.complete(event, now=T0 + TIMEOUT, owner="b")
    assert not ledger.complete(event, now=T0 + TIMEOUT)  # done once
    assert ledger.pending_count() == 0
    with pytest.raises(ValueError, match="must be positive"):
        ledger.lease(now=T0, owner="a", timeout=timedelta(0))


def test_dead_letters_are_listed_and_queued_again_as_new(ledger: SqliteLedger) -> None:
    ok, dead, pending = (
        ledger.enqueue("distribution", b, None, now=T0) for b in (b"1", b"2", b"3")
    )
    for i in range(3):  # each lease goes stale: three attempts
        ledger.lease(now=T0 + TIMEOUT * i, owner="a", timeout=TIMEOUT, limit=2)
    ledger.complete(ok, now=T0)
    ledger.complete(dead, now=T0 + timedelta(minutes=2), error="RuntimeError: boom")
    letters = ledger.dead_letter_events()
    assert [(d.id, d.attempts, d.error, d.body) for d in letters] == [
        (dead, 3, "RuntimeError: boom", b"2")
    ]
    assert letters[0].received_at == T0 and letters[0].failed_at == T0 + timedelta(minutes=2)
    assert ledger.dead_letters() == [(dead, "distribution", "RuntimeError: boom")]
    assert ledger.dead_letter_events([ok, pending]) == []
    # only dead letters are queued again
    assert ledger.requeue_dead([ok, dead, pending, 999]) == [dead]
    assert ledger.dead_letter_events() == [] and ledger.requeue_dead([dead]) == []
    got = ledger.lease(now=T0 + timedelta(hours=1), owner="b", timeout=TIMEOUT, limit=5)
    assert [(e.id, e.attempts) for e in got if e.id == dead] == [(dead, 1)]


OLD_QUEUE = """
CREATE TABLE queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL, body BLOB NOT NULL, content_type TEXT,
    received_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    lease_until TEXT, done_at TEXT, error TEXT
);
CREATE INDEX queue_pending ON queue (done_at, lease_until);
"""


def test_a_ledger_file_from_before_leases_had_owners_keeps_working(path: Path) -> None:
    def ts(when: datetime) -> str:
        return when.isoformat(timespec="microseconds")

    db = sqlite3.connect(path)
    db.executescript(OLD_QUEUE)
    rows = [  # (body, attempts, lease_until, done_at, error)
        (b"fresh", 0, None, None, None),
        (b"recheck", 0, ts(T0 + timedelta(minutes=10)), None, None),
        (b"held", 1, ts(T0 + timedelta(seconds=120)), None, None),  # an old worker's lease
        (b"dead", 5, ts(T0), ts(T0), "RuntimeError: gave up"),
    ]
    db.executemany(
        "INSERT INTO queue (source, body, received_at, attempts, lease_until, done_at, error) "
        "VALUES ('distribution', ?, ?, ?, ?, ?, ?)",
        [(b, ts(T0), a, lu, d, e) for b, a, lu, d, e in rows],
    )
    db.commit()
    db.close()

    ledger = SqliteLedger(path)
    SqliteLedger(path).close()  # opening again leaves it as it is
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(queue)")}
    assert {"not_before", "owner", "heartbeat"} <= columns and "lease_until" not in columns

    def bodies(now: datetime) -> list[bytes]:
        got = ledger.lease(now=now, owner="new", timeout=TIMEOUT, limit=9)
        for e in got:
            ledger.complete(e.id, now=now, owner="new")
        return [e.body for e in got]

    assert bodies(T0) == [b"fresh"]
    assert bodies(T0 + timedelta(seconds=120)) == [b"held"]  # when its old lease ran out
    assert bodies(T0 + timedelta(minutes=10)) == [b"recheck"]
    assert [d.body for d in ledger.dead_letter_events()] == [b"dead"]
    assert ledger.enqueue("harbor", b"new", None, now=T0) == 5
    ledger.close()


# -- worker pools -------------------------------------------------------------------------------


def _recorder() -> tuple[list[QueuedEvent], Callable[[QueuedEvent], None]]:
    seen: list[QueuedEvent] = []
    lock = threading.Lock()

    def process(event: QueuedEvent) -> None:
        with lock:
            seen.append(event)

    return seen, process


def test_a_pool_needs_a_worker_and_a_positive_lease_timeout(ledger: SqliteLedger) -> None:
    with pytest.raises(ValueError, match="at least 1 worker, got 0"):
        WorkerPool(ledger, lambda e: None, workers=0)
    with pytest.raises(ValueError, match="lease_timeout must be positive"):
        WorkerPool(ledger, lambda e: None, lease_timeout=timedelta(0))
    a, b = WorkerPool(ledger, lambda e: None), WorkerPool(ledger, lambda e: None)
    assert a.owner != b.owner  # without an owner id, pools never free each other's leases


def _crashed_holding(path: Path, owner: str) -> int:
    """A process that leased an event under `owner` and was killed before finishing it."""
    crashed = SqliteLedger(path)
    event = crashed.enqueue("distribution", b"held", None, now=T0)
    assert [e.id for e in crashed.lease(now=T0, owner=owner, timeout=TIMEOUT)] == [event]
    crashed.close()
    return event


def test_a_restarted_pool_gets_its_own_event_back_at_once(path: Path) -> None:
    event = _crashed_holding(path, "host:8080")
    seen, process = _recorder()
    restarted = SqliteLedger(path)
    pool = WorkerPool(restarted, process, owner="host:8080", clock=FakeClock(T0), poll=0.02)
    pool.start()  # the clock never moves: only the release at start-up can hand it out
    try:
        wait_for(lambda: seen, timeout=10, what="the held event")
        wait_for(pool.idle, timeout=10, what="the pool to finish")
    finally:
        pool.stop()
        restarted.close()
    assert [(e.id, e.attempts, e.reclaimed_from) for e in seen] == [(event, 2, None)]


def test_another_owner_takes_the_event_over_only_after_the_timeout(path: Path) -> None:
    event = _crashed_holding(path, "host:8080")
    seen, process = _recorder()
    clock = FakeClock(T0 + TIMEOUT - timedelta(seconds=1))
    other = CountingLedger(path)
    pool = WorkerPool(other, process, owner="host:8081", clock=clock, poll=0.02)
    pool.start()
    try:
        other.wait_polls(3)  # it looked, and looked again: the lease is not stale yet
        assert seen == []
        clock.set(T0 + TIMEOUT)
        pool.notify()
        wait_for(lambda: seen, timeout=10, what="the take-over")
        wait_for(pool.idle, timeout=10, what="the pool to finish")
    finally:
        pool.stop()
        other.close()
    assert [(e.id, e.attempts, e.reclaimed_from) for e in seen] == [(event, 2, "host:8080")]


def test_a_live_pools_heartbeat_keeps_a_long_event_from_another_pool(path: Path) -> None:
    timeout = timedelta(milliseconds=300)  # beats every 0.1 s of real time
    clock = FakeClock(T0)
    release = threading.Event()
    runs: list[tuple[str, int]] = []
    lock = threading.Lock()

    def processor(name: str) -> Callable[[QueuedEvent], None]:
        def process(event: QueuedEvent) -> None:
            with lock:
                runs.append((name, event.id))
            if event.body == b"long":
                assert release.wait(30)

        return process

    ledger_a, ledger_b = SqliteLedger(path), CountingLedger(path)
    long = ledger_a.enqueue("distribution", b"long", None, now=T0)
    a = WorkerPool(
        ledger_a, processor("a"), owner="a", lease_timeout=timeout, clock=clock, poll=0.02
    )
    b = WorkerPool(
        ledger_b, processor("b"), owner="b", lease_timeout=timeout, clock=clock, poll=0.02
    )
    a.start()
    try:
        wait_for(lambda: runs, timeout=10, what="a to start the long event")
        b.start()
        for _ in range(5):  # 1 s of clock in all, more than three timeouts
            beat = clock.advance(timeout * 2 / 3).isoformat(timespec="microseconds")
            wait_for(
                lambda beat=beat: _row(path, long)["heartbeat"] == beat,
                timeout=10,
                what="a's heartbeat",
            )
            ledger_b.wait_polls(2)
            assert runs == [("a", long)]  # b looked and left it alone
        release.set()
        wait_for(lambda: a.idle() and b.idle(), timeout=10, what="both pools to finish")
    finally:
        release.set()
        a.stop()
        b.stop()
        ledger_a.close()
        ledger_b.close()
    assert runs == [("a", long)]


def test_two_pools_on_one_ledger_file_never_run_one_event_twice(path: Path) -> None:
    seen_a, process_a = _recorder()
    seen_b, process_b = _recorder()
    ledger_a, ledger_b = SqliteLedger(path), SqliteLedger(path)
    now = datetime.now(UTC)
    ids = [ledger_a.enqueue("distribution", str(i).encode(), None, now=now) for i in range(60)]
    a = WorkerPool(ledger_a, process_a, owner="host:8080", workers=3, poll=0.01)
    b = WorkerPool(ledger_b, process_b, owner="host:8081", workers=3, poll=0.01)
    a.start()
    b.start()
    try:
        wait_for(lambda: a.idle() and b.idle(), timeout=30, what="the burst to drain")
    finally:
        a.stop()
        b.stop()
        ledger_a.close()
        ledger_b.close()
    runs = Counter(e.id for e in seen_a + seen_b)
    assert sorted(runs) == ids and set(runs.values()) == {1}
