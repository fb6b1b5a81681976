"""What lets replicas of `serve` share one database, on the pieces that do not need one:
the worker pool woken by the queue's `wait_for_work` (LISTEN on PostgreSQL) instead of
polling, its fall-back to polling while the queue cannot listen, and the recovery sweep run
only while the ledger's `exclusive("sweep")` is held. The queue is a real SQLite ledger;
the notices and the lock are driven by the test (their PostgreSQL side is tested on a real
server in tests/integration/test_replicas.py). Waits are on conditions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from regwarden.receiver import WorkerPool
from regwarden.receiver._worker import WakesOnWork
from regwarden.recovery import SWEEP_LOCK, Exclusive, Sweeper
from regwarden.store import SqliteLedger

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SLOW = 60.0
"""An idle worker's poll long enough that only a wake-up gets an event handled in time."""


def wait_for(cond: Callable[[], object], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.01)


class NoticedLedger(SqliteLedger):
    """A SQLite queue with a `wait_for_work` the test drives: `announce()` is another
    process's NOTIFY; `deaf` makes the wait raise, as a lost database connection does."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._notice = threading.Condition()
        self._pending = 0
        self.deaf = False
        self.waits = 0

    def wait_for_work(self, timeout: float) -> bool:
        with self._notice:
            self.waits += 1
            self._notice.notify_all()
            if self.deaf:
                raise ConnectionError("server closed the connection unexpectedly")
            self._notice.wait_for(lambda: self._pending > 0, timeout)
            woke = self._pending > 0
            self._pending = 0
            return woke

    def announce(self) -> None:
        with self._notice:
            self._pending += 1
            self._notice.notify_all()

    def wait_waits(self, more: int) -> None:
        with self._notice:
            target = self.waits + more
            assert self._notice.wait_for(lambda: self.waits >= target, timeout=10)


@pytest.fixture
def noticed(tmp_path: Path) -> Iterator[NoticedLedger]:
    store = NoticedLedger(tmp_path / "ledger.db")
    yield store
    store.close()


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "plain.db")
    yield store
    store.close()


def started(queue: Any, done: list[bytes], **kwargs: Any) -> WorkerPool:
    pool = WorkerPool(queue, lambda e: done.append(e.body), workers=2, **kwargs)
    pool.start()
    return pool


def test_a_notice_of_work_wakes_idle_workers_polling_slowly(noticed: NoticedLedger) -> None:
    assert isinstance(noticed, WakesOnWork)
    done: list[bytes] = []
    pool = started(noticed, done, poll=SLOW, listen_poll=SLOW)
    try:
        wait_for(pool.listening, timeout=10, what="the pool to listen")
        noticed.wait_waits(2)  # past the first look after listening began: workers idle
        # enqueued by "another replica": nobody calls pool.notify()
        noticed.enqueue("distribution", b"theirs", None, now=T0)
        noticed.announce()
        wait_for(lambda: done == [b"theirs"], timeout=10, what="the announced event")
    finally:
        pool.stop()


def test_without_a_notice_idle_workers_wait_out_their_poll(noticed: NoticedLedger) -> None:
    """The control for the test above: the same pool, no announcement, the event waits."""
    done: list[bytes] = []
    pool = started(noticed, done, poll=SLOW, listen_poll=SLOW)
    try:
        wait_for(pool.listening, timeout=10, what="the pool to listen")
        noticed.wait_waits(2)
        noticed.enqueue("distribution", b"unannounced", None, now=T0)
        noticed.wait_waits(3)  # three more listening waits (1 s each) and still nothing
        assert done == []
    finally:
        pool.stop()


def test_a_queue_that_cannot_listen_is_polled_until_it_can_again(
    noticed: NoticedLedger,
) -> None:
    done: list[bytes] = []
    pool = started(noticed, done, poll=0.05, listen_poll=SLOW)
    try:
        wait_for(pool.listening, timeout=10, what="the pool to listen")
        noticed.deaf = True
        wait_for(lambda: not pool.listening(), timeout=10, what="the listener to fail")
        noticed.enqueue("distribution", b"while deaf", None, now=T0)  # no notice: polled
        wait_for(lambda: done == [b"while deaf"], timeout=10, what="the polled event")
        noticed.deaf = False
        wait_for(pool.listening, timeout=10, what="the pool to listen again")
    finally:
        pool.stop()
    assert pool.alive() == (0, 2)


def test_a_queue_without_wait_for_work_is_polled(plain: SqliteLedger) -> None:
    assert not isinstance(plain, WakesOnWork)
    done: list[bytes] = []
    pool = started(plain, done, poll=0.05)
    try:
        plain.enqueue("distribution", b"polled", None, now=T0)
        wait_for(lambda: done == [b"polled"], timeout=10, what="the polled event")
        assert not pool.listening()
        assert not any(t.name == "regwarden-listen" for t in threading.enumerate())
    finally:
        pool.stop()


# -- the sweep under the ledger's lock ----------------------------------------------------------


class LockingLedger(SqliteLedger):
    """`exclusive` as PostgreSQL's try-advisory-lock behaves: one holder across "processes"
    (here a set shared by two ledger objects), a second asker gets False at once."""

    def __init__(self, path: Path, held: set[str], asked: list[str]) -> None:
        super().__init__(path)
        self._held = held
        self.asked = asked

    @contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        self.asked.append(name)
        if name in self._held:
            yield False
            return
        self._held.add(name)
        try:
            yield True
        finally:
            self._held.discard(name)


class CountingPipeline:
    """The two calls `recovery.sweep` makes of a pipeline, counted."""

    def __init__(self, ledger: object) -> None:
        self.ledger = ledger
        self.sweeps = 0

    def resume_unfinished(self, *, now: datetime, settle: object) -> list[object]:
        self.sweeps += 1
        return []

    def deliver_outbox(self, *, now: datetime) -> int:
        return 0


def test_the_sweep_runs_only_while_it_holds_the_ledgers_lock(tmp_path: Path) -> None:
    held: set[str] = set()
    asked: list[str] = []
    ledger = LockingLedger(tmp_path / "l.db", held, asked)
    assert isinstance(ledger, Exclusive)
    pipeline = CountingPipeline(ledger)
    sweeper = Sweeper(pipeline, clock=lambda: T0)  # type: ignore[arg-type]
    try:
        assert not sweeper.run_once().skipped and pipeline.sweeps == 1
        held.add(SWEEP_LOCK)  # another replica is sweeping
        report = sweeper.run_once()
        assert report.skipped and report.as_dict()["skipped"] == 1 and pipeline.sweeps == 1
        held.discard(SWEEP_LOCK)  # it finished (or died with its connection)
        assert not sweeper.run_once().skipped and pipeline.sweeps == 2
        assert asked == [SWEEP_LOCK] * 3 and held == set()  # released after each pass
    finally:
        ledger.close()


def test_a_ledger_without_a_lock_sweeps_every_time(plain: SqliteLedger) -> None:
    assert not isinstance(plain, Exclusive)
    pipeline = CountingPipeline(plain)
    sweeper = Sweeper(pipeline, clock=lambda: T0)  # type: ignore[arg-type]
    reports = [sweeper.run_once() for _ in range(2)]
    assert pipeline.sweeps == 2 and not any(r.skipped for r in reports)
    assert "skipped" not in reports[0].as_dict()  # the functions' figures are unchanged


class EndlessLedger(SqliteLedger):
    """Its first `complete` fails as a query on a connection the database closed does."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failed = False

    def complete(
        self, event_id: int, *, now: datetime, error: str | None = None, owner: str | None = None
    ) -> bool:
        if not self.failed:
            self.failed = True
            raise ConnectionError("server closed the connection unexpectedly")
        return super().complete(event_id, now=now, error=error, owner=owner)


def test_a_worker_outlives_a_database_that_fails_to_record_an_events_end(
    tmp_path: Path,
) -> None:
    """The database went away between the outcome's commit and the queue row's end: the
    worker lives on (its lease goes stale and the event is run again, finding its outcome
    committed), and handles the next event."""
    ledger = EndlessLedger(tmp_path / "l.db")
    done: list[bytes] = []
    pool = WorkerPool(
        ledger, lambda e: done.append(e.body), workers=1, poll=0.05, lease_timeout=timedelta(days=1)
    )
    pool.start()
    try:
        ledger.enqueue("distribution", b"first", None, now=T0)
        wait_for(lambda: ledger.failed, timeout=10, what="the failed end")
        ledger.enqueue("distribution", b"second", None, now=T0)
        wait_for(lambda: b"second" in done, timeout=10, what="the next event")
        assert pool.alive() == (1, 1)
    finally:
        pool.stop()
        ledger.close()
