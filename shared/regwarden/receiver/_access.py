"""The receiver's fast path for access events (issue #16): pulls (and, for `pushers`,
pushes) go to the access monitor without a row in the durable work queue.

A registry reports every manifest pull, orders of magnitude more than pushes, and a pull
needs no registry I/O: the monitor answers from the ledger. So a body is parsed once, its
access events are put on a bounded in-memory queue and acknowledged; one thread (the
only caller of the monitor, which is not thread-safe) drains the queue in batches,
flushes the monitor's coalesced pull tallies and sweeps its due alert windows on a timer,
and delivers the alerts the monitor committed to the outbox. A full queue refuses the
whole body (the receiver answers 503, so the sender retries it later), never part of it.

What is acknowledged but not yet handled is lost if the process dies: at most the queue's
contents, bounded by `capacity`. The alerts themselves are crash-safe (the monitor commits
them with their window before they are sent) and so are the counts it already wrote.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..intake import host_allowed, host_not_allowed
from ._worker import Clock, utcnow

if TYPE_CHECKING:
    from ._metrics import ServeMetrics

log = logging.getLogger("regwarden.receiver")

#: Access events held at once (pulls acknowledged but not yet handled).
CAPACITY = 10_000
#: Events handed to the monitor in one call.
BATCH = 500
#: Seconds the thread waits, once it has events, for more to join the batch (alert latency).
LINGER = 0.02
#: Seconds between the monitor's flushes of coalesced pull tallies (it writes only what is due).
FLUSH_EVERY = 1.0
#: Seconds between sweeps of the alert windows that have closed (each sweep is one ledger query).
SWEEP_EVERY = 5.0
#: A batch the monitor failed on is tried this many times in all before it is dropped.
ATTEMPTS = 5


class AccessEventLike(Protocol):
    """What the receiver reads of an access event (`regwarden.access.AccessEvent`)."""

    @property
    def action(self) -> str: ...

    @property
    def registry(self) -> str: ...


class HandleResult(Protocol):
    """What the receiver reads of `AccessMonitor.handle`'s answer."""

    @property
    def handled(self) -> int: ...

    @property
    def alerts(self) -> list[str]: ...


class Monitor(Protocol):
    """`regwarden.access.AccessMonitor` as the receiver drives it (one thread)."""

    def handle(self, events: Sequence[Any], *, now: datetime) -> HandleResult: ...

    def sweep(self, *, now: datetime) -> list[str]: ...

    def flush(self, *, now: datetime, force: bool = False) -> int: ...


AccessParser = Callable[[bytes, str | None], Sequence[AccessEventLike]]
"""A source's access parser, `(body, content type) → events` (raises IntakeError)."""

Deliver = Callable[[Sequence[str], datetime], int]
"""Sends the outbox rows with these keys now; returns how many went (`Pipeline.deliver`)."""


class AccessIntake:
    """The access events of webhook bodies: parsed in the request, handled on one thread."""

    def __init__(
        self,
        monitor: Monitor,
        parsers: Mapping[str, AccessParser],
        *,
        deliver: Deliver | None = None,
        allowed_hosts: frozenset[str] | None = None,
        capacity: int = CAPACITY,
        batch: int = BATCH,
        flush_every: float = FLUSH_EVERY,
        sweep_every: float = SWEEP_EVERY,
        retry_pause: float = 0.2,
        linger: float = LINGER,
        clock: Clock = utcnow,
        metrics: ServeMetrics | None = None,
    ) -> None:
        if capacity < 1 or batch < 1:
            raise ValueError(f"capacity and batch must be positive, got {capacity}, {batch}")
        self._monitor = monitor
        self._parsers = dict(parsers)
        self._deliver = deliver
        self._allowed = allowed_hosts
        self._capacity = capacity
        self._batch = batch
        self._flush_every = flush_every
        self._sweep_every = sweep_every
        self._retry_pause = retry_pause
        self._linger = linger
        self._clock = clock
        self._metrics = metrics
        self._queue: deque[AccessEventLike] = deque()
        self._cond = threading.Condition()
        self._busy = False  # a batch is out of the queue and in the monitor (guarded)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.handled = 0  # events the monitor took (for tests and the bench)
        self.writes = 0  # coalesced ledger writes its flushes made
        self.dropped = 0  # events dropped after the monitor failed on them ATTEMPTS times

    # -- the request side (event loop) ------------------------------------------------------

    def handles(self, source: str) -> bool:
        return source in self._parsers

    def parse(self, source: str, body: bytes, content_type: str | None) -> list[AccessEventLike]:
        """The access events in a body from `source` (IntakeError: malformed; HostNotAllowed:
        a registry host serve is not configured with, as the gate's own check refuses)."""
        events = list(self._parsers[source](body, content_type))
        if self._allowed is not None:
            refused = [e.registry for e in events if not host_allowed(e.registry, self._allowed)]
            if refused:
                raise host_not_allowed(refused)
        return events

    def offer(self, events: Sequence[AccessEventLike]) -> bool:
        """Queue every one of `events`, or none (False) when they do not fit."""
        with self._cond:
            if self._stopping or len(self._queue) + len(events) > self._capacity:
                return False
            was_empty = not self._queue
            self._queue.extend(events)
            # wake the thread for the first event (it then lingers for more) or a full batch
            if was_empty or len(self._queue) >= self._batch:
                self._cond.notify()
        return True

    def depth(self) -> int:
        """Events acknowledged and not yet handled (queued or in the monitor's hands)."""
        with self._cond:
            return len(self._queue)

    # -- the monitor thread -----------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="regwarden-access", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new events, handle what is queued, flush every tally and sweep once more."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error(
                    "access monitor did not stop within %g s; %d event(s) left",
                    timeout,
                    self.depth(),
                )
            self._thread = None
        log.info(
            "access monitor stopped: %d event(s) handled, %d coalesced ledger write(s), %d dropped",
            self.handled,
            self.writes,
            self.dropped,
        )

    def idle(self) -> bool:
        """Nothing queued and no batch in the monitor (tests, the bench)."""
        with self._cond:
            return not self._queue and not self._busy

    def _run(self) -> None:
        next_flush = time.monotonic() + self._flush_every
        next_sweep = time.monotonic()  # at once: windows a previous run left may be due
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    wait = min(next_flush, next_sweep) - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._queue and len(self._queue) < self._batch and not self._stopping:
                    # a moment for more to come: one monitor call for a burst, not one each
                    self._cond.wait(self._linger)
                take = min(len(self._queue), self._batch)
                batch = [self._queue.popleft() for _ in range(take)]
                self._busy = bool(batch)
                stopping = self._stopping and not self._queue
            try:
                if batch:
                    self._handle(batch)
                tick = time.monotonic()
                if tick >= next_flush or stopping:
                    self._flush(force=stopping)
                    next_flush = tick + self._flush_every
                if tick >= next_sweep or stopping:
                    self._sweep()
                    next_sweep = tick + self._sweep_every
            finally:
                with self._cond:
                    self._busy = False
            if stopping:
                return

    def _handle(self, batch: list[AccessEventLike]) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                result = self._monitor.handle(batch, now=self._clock())
            except Exception:
                if attempt == ATTEMPTS:
                    self.dropped += len(batch)
                    if self._metrics is not None:
                        self._metrics.access_dropped(len(batch))
                    log.exception(
                        "access monitor failed %d times on %d event(s); dropped",
                        attempt,
                        len(batch),
                    )
                    return
                log.warning(
                    "access monitor failed on %d event(s) (attempt %d of %d); trying again",
                    len(batch),
                    attempt,
                    ATTEMPTS,
                    exc_info=True,
                )
                # a pause for the ledger, doubling (0.2 s … 1.6 s by default), not a wait
                time.sleep(self._retry_pause * 2 ** (attempt - 1))
                continue
            self.handled += len(batch)
            if self._metrics is not None:
                self._metrics.access_handled(len(batch), alerts=len(result.alerts))
            self._send(result.alerts)
            return

    def _flush(self, *, force: bool) -> None:
        try:
            writes = self._monitor.flush(now=self._clock(), force=force)
        except Exception:
            log.exception("cannot write the coalesced pull tallies; kept for the next flush")
            return
        self.writes += writes
        if self._metrics is not None and writes:
            self._metrics.access_writes(writes)

    def _sweep(self) -> None:
        try:
            keys = self._monitor.sweep(now=self._clock())
        except Exception:
            log.exception("cannot close the due access alert windows; trying again later")
            return
        if self._metrics is not None and keys:
            self._metrics.access_summaries(len(keys))
        self._send(keys)

    def _send(self, keys: Sequence[str]) -> None:
        if not keys or self._deliver is None:
            return
        try:
            self._deliver(keys, self._clock())
        except Exception:  # still in the outbox: the recovery sweep sends it
            log.exception("cannot deliver %d access alert(s) now; the outbox keeps them", len(keys))
