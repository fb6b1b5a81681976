"""The recovery sweep: what a crash or a bad minute left unfinished, driven to an end.

Run at start-up and periodically by `regwarden serve`, on a schedule on AWS. It finds every
unfinished action intent whose retry is due and resumes it from the ledger (the intent
carries its verdict and alert), and delivers every alert in the outbox whose attempt is
due. Both are idempotent: running it twice, or beside a worker, does nothing twice.

Replicas of `serve` on one database (PostgreSQL) would all sweep the same intents at once:
harmless, but each would redo the others' reads and race their writes. A ledger that can
hand out a lock across processes (`Exclusive`: `exclusive(name)`, PostgreSQL's advisory
lock) lets one replica sweep per pass; the others skip it (`SweepReport.skipped`), and
whichever holds the lock next time sweeps then — a replica that dies loses its lock with
its connection.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from .model import Outcome
from .pipeline import Pipeline

log = logging.getLogger("regwarden.recovery")

SWEEP_INTERVAL = 30.0
"""Seconds between sweeps under `regwarden serve`."""
SWEEP_LOCK = "sweep"
"""The name of the sweep's lock in `Exclusive.exclusive`."""


@runtime_checkable
class Exclusive(Protocol):
    """A ledger shared by processes that can lock a name across all of them."""

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        """Try to hold the lock `name` for the `with` block, without waiting: the block
        gets True when held (released at its end, or when this process dies), False when
        another process holds it."""
        ...


@dataclass(frozen=True, slots=True)
class SweepReport:
    resumed: int = 0
    """Unfinished actions driven to their end by this sweep."""
    still_failing: int = 0
    """Unfinished actions that failed again (retried later, backing off)."""
    alerts_sent: int = 0
    skipped: bool = False
    """Another process held the sweep's lock and swept instead (nothing done here)."""

    def as_dict(self) -> dict[str, int]:
        figures = {
            "resumed": self.resumed,
            "still_failing": self.still_failing,
            "alerts_sent": self.alerts_sent,
        }
        if self.skipped:  # only where a lock exists: the functions' figures stay as they were
            figures["skipped"] = 1
        return figures


def sweep(pipeline: Pipeline, *, now: datetime, settle: timedelta = timedelta(0)) -> SweepReport:
    """One pass: resume due intents (those older than `settle`: see
    `Pipeline.resume_unfinished`), then deliver due alerts (including theirs)."""
    handled = pipeline.resume_unfinished(now=now, settle=settle)
    failing = sum(1 for h in handled if h.verdict and h.verdict.outcome is Outcome.ERROR)
    report = SweepReport(
        resumed=len(handled) - failing,
        still_failing=failing,
        alerts_sent=sum(h.alerts for h in handled) + pipeline.deliver_outbox(now=now),
    )
    if handled or report.alerts_sent:
        log.info("recovery sweep: %s", report.as_dict())
    return report


class Sweeper:
    """Runs `sweep` on a thread: once at start, then every `interval` seconds."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        clock: Callable[[], datetime],
        interval: float = SWEEP_INTERVAL,
    ) -> None:
        self._pipeline = pipeline
        self._clock = clock
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> SweepReport:
        """One sweep; under the ledger's `exclusive(SWEEP_LOCK)` when it has one, skipped
        while another process holds it."""
        ledger = self._pipeline.ledger
        if not isinstance(ledger, Exclusive):
            return sweep(self._pipeline, now=self._clock())
        with ledger.exclusive(SWEEP_LOCK) as held:
            if not held:
                log.debug("recovery sweep skipped: another process holds its lock")
                return SweepReport(skipped=True)
            return sweep(self._pipeline, now=self._clock())  # the time once the lock is held

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="regwarden-sweep", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        # The first pass runs at once: after a restart, finish what the crash left.
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the next pass tries again; never kill the thread
                log.exception("recovery sweep failed")
            self._stop.wait(self._interval)
