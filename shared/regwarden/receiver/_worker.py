"""Bounded worker pool over the durable work queue (`store.EventQueue`: an SQLite ledger's
own, or the one `--queue` names).

Events are persisted before the webhook is acknowledged; workers lease them under the
pool's owner id, process them and mark them done. While an event is in flight a heartbeat
thread keeps its lease fresh, so only a dead or hung process's lease goes stale: after
`lease_timeout` any pool takes the event over. A restarted pool with the same owner id
frees what it held at once (`start`). Nothing acknowledged is lost; the pipeline commits
each outcome once, so an event run again does nothing twice.

Idle workers wait `poll` seconds between looks at the queue, or less: `notify()` (this
process enqueued) wakes one. A queue shared by several processes (PostgreSQL) also tells of
rows the others enqueue: when it has `wait_for_work` (`WakesOnWork`), one listener thread
per pool waits on it and wakes the idle workers, who then look only every `listen_poll`
seconds otherwise — for what no one announces: a retry or recheck coming due, a dead
replica's lease going stale. If the listener fails (the database went away) the workers
poll every `poll` seconds again until it listens once more.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from ..redact import redact_text
from ..store import EventQueue, QueuedEvent

log = logging.getLogger("regwarden.receiver")

Job = Callable[[QueuedEvent], None]
Clock = Callable[[], datetime]


@runtime_checkable
class WakesOnWork(Protocol):
    """A queue that can tell when work was enqueued, by anyone (`store._postgres`)."""

    def wait_for_work(self, timeout: float) -> bool:
        """Block until work was enqueued (True) or `timeout` seconds passed (False)."""
        ...


def utcnow() -> datetime:
    return datetime.now(UTC)


def process_owner() -> str:
    """An owner id no other pool shares: `host:pid:random`. A pool started with it is not
    recognised after a restart, so its leases are reclaimed only once they go stale."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class WorkerPool:
    def __init__(
        self,
        ledger: EventQueue,
        process: Job,
        *,
        workers: int = 4,
        owner: str | None = None,
        lease_timeout: timedelta = timedelta(seconds=30),
        max_attempts: int = 5,
        backoff: timedelta = timedelta(seconds=1),
        clock: Clock = utcnow,
        poll: float = 0.5,
        listen_poll: float = 5.0,
    ) -> None:
        """`owner` names this process in the queue's leases (`serve`: `--instance`, by
        default host:port, stable across restarts); None = `process_owner()`. `poll`:
        seconds an idle worker waits before looking again; `listen_poll`: the same while
        the queue's `wait_for_work` is listening for us (see the module docstring)."""
        if workers < 1:
            raise ValueError(f"a worker pool needs at least 1 worker, got {workers}")
        if lease_timeout <= timedelta(0):
            raise ValueError(f"lease_timeout must be positive, got {lease_timeout}")
        self.owner = owner or process_owner()
        self._ledger = ledger
        self._process = process
        self._workers = workers
        self._lease_timeout = lease_timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._clock = clock
        self._poll = poll
        self._listen_poll = max(poll, listen_poll)
        self._waiter = ledger if isinstance(ledger, WakesOnWork) else None
        self._listening = False  # the listener's last wait succeeded (guarded by _wake)
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._inflight: set[int] = set()  # guarded by _wake

    def start(self) -> None:
        """Free this owner's leases left by a previous run, then start the workers and the
        heartbeat."""
        self._stop.clear()
        freed = self._ledger.release_owner(self.owner)
        if freed:
            log.warning(
                "%d event(s) this instance (%s) held before a restart are queued again",
                freed,
                self.owner,
            )
        beat = threading.Thread(target=self._beat, name="regwarden-heartbeat", daemon=True)
        beat.start()
        self._threads.append(beat)
        if self._waiter is not None:
            ear = threading.Thread(
                target=self._listen, args=(self._waiter,), name="regwarden-listen", daemon=True
            )
            ear.start()
            self._threads.append(ear)
        for i in range(self._workers):
            t = threading.Thread(target=self._run, name=f"regwarden-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def notify(self) -> None:
        """An event was enqueued: wake one worker now rather than at the next poll."""
        with self._wake:
            self._wake.notify()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def alive(self) -> tuple[int, int]:
        """(worker threads running, workers this pool runs when started): fewer running
        than wanted means the pool was stopped, never started, or a worker died."""
        running = sum(
            1 for t in self._threads if t.name.startswith("regwarden-worker-") and t.is_alive()
        )
        return (0 if self._stop.is_set() else running), self._workers

    def idle(self) -> bool:
        """No event pending and no worker busy (for tests and graceful shutdown)."""
        with self._wake:
            busy = self._busy
        return busy == 0 and self._ledger.pending_count() == 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._ledger.lease(
                    now=self._clock(), owner=self.owner, timeout=self._lease_timeout, limit=1
                )
            except Exception:  # the ledger file busy or unreadable: keep the worker alive
                log.exception("cannot lease events from the ledger")
                batch = []
            if not batch:
                with self._wake:
                    self._wake.wait(self._listen_poll if self._listening else self._poll)
                continue
            event = batch[0]
            if event.reclaimed_from is not None:
                log.warning(
                    "event %s taken over from %s, whose lease went stale (attempt %d)",
                    event.id,
                    event.reclaimed_from,
                    event.attempts,
                )
            with self._wake:
                self._busy += 1
                self._inflight.add(event.id)
            try:
                self._handle(event)
            except Exception:  # the queue could not record its end: the database away
                # The lease is no longer beaten, so it goes stale and the event runs again;
                # an outcome that was committed is found committed and not done twice.
                log.exception(
                    "cannot record the end of event %s; it runs again once its lease is stale",
                    event.id,
                )
            finally:
                with self._wake:
                    self._busy -= 1
                    self._inflight.discard(event.id)

    def listening(self) -> bool:
        """Whether idle workers are woken by the queue's own notices right now."""
        with self._wake:
            return self._listening

    def _listen(self, waiter: WakesOnWork) -> None:
        # Short waits, so stop() is not held up by a listener waiting for a notice.
        wait = min(self._listen_poll, 1.0)
        failing = False
        while not self._stop.is_set():
            try:
                woke = waiter.wait_for_work(wait)
            except Exception:  # the database away: poll meanwhile, listen again later
                with self._wake:
                    self._listening = False
                    self._wake.notify_all()  # out of their long waits
                if not failing:  # once per outage, not once a poll
                    log.exception("cannot wait for the queue's notices; polling meanwhile")
                failing = True
                self._stop.wait(self._poll)
                continue
            failing = False
            with self._wake:
                if not self._listening:
                    self._listening = True
                    woke = True  # look once: something may have come while deaf
                if woke:
                    self._wake.notify_all()

    def _finished(self, event: QueuedEvent) -> None:
        # out of the heartbeat's set before the row is closed: a beat racing the close
        # then finds it gone and does not mistake it for a lost lease
        with self._wake:
            self._inflight.discard(event.id)

    def _handle(self, event: QueuedEvent) -> None:
        try:
            self._process(event)
        except Exception as exc:
            # kept in the ledger and shown by `deadletters list`: never a URL's secret part
            error = redact_text(f"{type(exc).__name__}: {exc}")
            self._finished(event)
            if event.attempts >= self._max_attempts:
                log.error(
                    "event %s dead-lettered after %d attempts: %s", event.id, event.attempts, error
                )
                kept = self._ledger.complete(
                    event.id, now=self._clock(), error=error, owner=self.owner
                )
            else:
                delay = self._backoff * (2 ** (event.attempts - 1))
                log.warning(
                    "event %s attempt %d failed, retrying in %s: %s",
                    event.id,
                    event.attempts,
                    delay,
                    error,
                )
                kept = self._ledger.retry_at(
                    event.id, at=self._clock() + delay, error=error, owner=self.owner
                )
        else:
            self._finished(event)
            kept = self._ledger.complete(event.id, now=self._clock(), owner=self.owner)
        if not kept:
            log.warning(
                "event %s was taken over by another worker while this one ran; its end is "
                "left to that worker",
                event.id,
            )

    def _beat(self) -> None:
        every = self._lease_timeout.total_seconds() / 3
        while not self._stop.wait(every):
            with self._wake:
                ids = set(self._inflight)
            if not ids:
                continue
            try:
                held = set(self._ledger.heartbeat(self.owner, ids, now=self._clock()))
            except Exception:  # a missed beat is retried; the lease outlives two more
                log.exception("cannot refresh the leases of events in flight")
                continue
            with self._wake:
                lost = (ids - held) & self._inflight
                self._inflight -= lost  # no use beating for it again
            for event_id in sorted(lost):
                log.error(
                    "lost the lease of event %s (stale heartbeat): another worker may run it",
                    event_id,
                )
