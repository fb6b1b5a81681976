"""Bounded worker pool over the ledger's durable queue.

Events are persisted before the webhook is acknowledged; workers lease them, process
them and mark them done. A crashed worker's lease runs out and the event is handed out
again, so nothing acknowledged is lost; processing is idempotent, so nothing is done twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ..store import QueuedEvent, SqliteLedger

log = logging.getLogger("regwarden.receiver")

Processor = Callable[[QueuedEvent], None]
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class WorkerPool:
    def __init__(
        self,
        ledger: SqliteLedger,
        process: Processor,
        *,
        workers: int = 4,
        lease: timedelta = timedelta(seconds=120),
        max_attempts: int = 5,
        backoff: timedelta = timedelta(seconds=1),
        clock: Clock = utcnow,
        poll: float = 0.5,
    ) -> None:
        self._ledger = ledger
        self._process = process
        self._workers = workers
        self._lease = lease
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._clock = clock
        self._poll = poll
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0

    def start(self) -> None:
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

    def idle(self) -> bool:
        """No event pending and no worker busy (for tests and graceful shutdown)."""
        with self._wake:
            busy = self._busy
        return busy == 0 and self._ledger.pending_count() == 0

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._ledger.lease(now=self._clock(), lease=self._lease, limit=1)
            if not batch:
                with self._wake:
                    self._wake.wait(self._poll)
                continue
            with self._wake:
                self._busy += 1
            try:
                self._handle(batch[0])
            finally:
                with self._wake:
                    self._busy -= 1

    def _handle(self, event: QueuedEvent) -> None:
        try:
            self._process(event)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if event.attempts >= self._max_attempts:
                log.error(
                    "event %s dead-lettered after %d attempts: %s", event.id, event.attempts, error
                )
                self._ledger.complete(event.id, now=self._clock(), error=error)
            else:
                delay = self._backoff * (2 ** (event.attempts - 1))
                log.warning(
                    "event %s attempt %d failed, retrying in %s: %s",
                    event.id,
                    event.attempts,
                    delay,
                    error,
                )
                self._ledger.retry_at(event.id, at=self._clock() + delay, error=error)
            return
        self._ledger.complete(event.id, now=self._clock())
