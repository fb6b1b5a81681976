"""The recovery sweep: what a crash or a bad minute left unfinished, driven to an end.

Run at start-up and periodically by `regwarden serve`, on a schedule on AWS. It finds every
unfinished action intent whose retry is due and resumes it from the ledger (the intent
carries its verdict and alert), and delivers every alert in the outbox whose attempt is
due. Both are idempotent: running it twice, or beside a worker, does nothing twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .model import Outcome
from .pipeline import Pipeline

log = logging.getLogger("regwarden.recovery")

SWEEP_INTERVAL = 30.0
"""Seconds between sweeps under `regwarden serve`."""


@dataclass(frozen=True, slots=True)
class SweepReport:
    resumed: int = 0
    """Unfinished actions driven to their end by this sweep."""
    still_failing: int = 0
    """Unfinished actions that failed again (retried later, backing off)."""
    alerts_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "resumed": self.resumed,
            "still_failing": self.still_failing,
            "alerts_sent": self.alerts_sent,
        }


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
        return sweep(self._pipeline, now=self._clock())

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
