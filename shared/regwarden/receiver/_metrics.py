"""`regwarden serve`'s /metrics: Prometheus counters of what the receiver and the workers
did, gauges of the work queue read at each scrape, and the registry requests the OCI client
reports (`regwarden.observe`).

Each `ServeMetrics` has its own `CollectorRegistry`, so several apps in one process (the
tests) never share counters; the registry-request metrics are the exception, as requests
are observed process-wide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import observe
from ..store import EventQueue

if TYPE_CHECKING:
    from ..pipeline import Handled

log = logging.getLogger("regwarden.receiver")

# registry answers come in milliseconds on a LAN and in seconds across regions or on retry
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def action_kind(action: str) -> str:
    """The label of one of `Handled.actions`: its first word (`quarantine (move → …)` →
    quarantine, `rollback v1 → …` → rollback), as the alerts name the action."""
    return action.split(" ", 1)[0].strip() or "unknown"


class ServeMetrics:
    """The metrics of one receiver app. `exposition()` is the /metrics body."""

    def __init__(self, queue: EventQueue, *, clock: Callable[[], datetime]) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError:
            from ..errors import UsageError

            raise UsageError(
                "regwarden serve's /metrics needs prometheus-client",
                hint="pip install 'regwarden[serve]'",
            ) from None
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "regwarden_events_received",
            "Events accepted by the webhook receiver and queued, by source.",
            ["source"],
            registry=self.registry,
        )
        self.verdicts = Counter(
            "regwarden_verdicts",
            "Verdicts reached by the workers, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.actions = Counter(
            "regwarden_actions",
            "Actions taken on images (quarantine, rollback, release, promote), by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "regwarden_registry_request_seconds",
            "Registry HTTP requests, to the answer's headers, by registry host and method.",
            ["host", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_errors = Counter(
            "regwarden_registry_errors",
            "Registry requests that failed: http_<status> (5xx, 4xx but 401/404) or the "
            "transport failure's name.",
            ["host", "kind"],
            registry=self.registry,
        )
        self.access_events = Counter(
            "regwarden_access_events_received",
            "Access events (manifest pulls and pushes) taken to the access monitor, by "
            "source and action.",
            ["source", "action"],
            registry=self.registry,
        )
        self.access_handled_events = Counter(
            "regwarden_access_events_handled",
            "Access events the access monitor has handled.",
            registry=self.registry,
        )
        self.access_alerts = Counter(
            "regwarden_access_alerts",
            "Access alerts committed to the outbox (one per channel): first (a window "
            "opened) or summary (a window closed).",
            ["kind"],
            registry=self.registry,
        )
        self.access_ledger_writes = Counter(
            "regwarden_access_ledger_writes",
            "Ledger writes of coalesced pull tallies (at most one per image per minute).",
            registry=self.registry,
        )
        self.access_refused = Counter(
            "regwarden_access_bodies_refused",
            "Webhook bodies answered 503 because the access queue was full (the sender "
            "retries them).",
            registry=self.registry,
        )
        self.access_dropped_events = Counter(
            "regwarden_access_events_dropped",
            "Access events dropped after the monitor failed on them repeatedly.",
            registry=self.registry,
        )
        self._access_children: dict[tuple[str, str], Any] = {}
        self.registry.register(_QueueCollector(queue, clock))
        self._subscribed = False

    # -- what the app and the workers report -----------------------------------------------

    def received(self, source: str, count: int) -> None:
        self.events.labels(source=source).inc(count)

    def handled(self, handled: Handled) -> None:
        if handled.verdict is not None:
            self.verdicts.labels(outcome=handled.verdict.outcome.value).inc()
        for action in handled.actions:
            self.actions.labels(kind=action_kind(action)).inc()

    def access_received(self, source: str, actions: Sequence[str]) -> None:
        """Access events of one body, by action (the request path: children cached)."""
        for action in actions:
            child = self._access_children.get((source, action))
            if child is None:
                child = self.access_events.labels(source=source, action=action)
                self._access_children[(source, action)] = child
            child.inc()

    def access_handled(self, count: int, *, alerts: int) -> None:
        self.access_handled_events.inc(count)
        if alerts:
            self.access_alerts.labels(kind="first").inc(alerts)

    def access_summaries(self, count: int) -> None:
        self.access_alerts.labels(kind="summary").inc(count)

    def access_writes(self, count: int) -> None:
        self.access_ledger_writes.inc(count)

    def access_full(self) -> None:
        self.access_refused.inc()

    def access_dropped(self, count: int) -> None:
        self.access_dropped_events.inc(count)

    def watch_access(self, depth: Callable[[], int]) -> None:
        """Report the access queue's depth (`AccessIntake.depth`) at each scrape."""
        self.registry.register(_AccessQueueCollector(depth))

    # observe.RequestObserver
    def request(self, host: str, method: str, seconds: float, status: int | None) -> None:
        self.request_seconds.labels(host=host, method=method).observe(seconds)

    def error(self, host: str, kind: str) -> None:
        self.request_errors.labels(host=host, kind=kind).inc()

    def watch_requests(self) -> None:
        """Start counting the registry requests of this process (until `close`)."""
        if not self._subscribed:
            observe.subscribe(self)
            self._subscribed = True

    def close(self) -> None:
        if self._subscribed:
            observe.unsubscribe(self)
            self._subscribed = False

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of a scrape, in the Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _QueueCollector:
    """The queue's depth and the wait of its oldest due event, read when scraped. A queue
    that cannot be read leaves both out of the scrape (and logs why) rather than failing
    it: /readyz is where that shows."""

    def __init__(self, queue: EventQueue, clock: Callable[[], datetime]) -> None:
        self._queue = queue
        self._clock = clock

    def describe(self) -> list[Any]:
        return []  # unchecked: the family is made at each collect

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        now = self._clock()
        try:
            depth = self._queue.pending_count()
            oldest = self._queue.oldest_due(now=now)
        except Exception as exc:
            log.warning("cannot read the work queue for /metrics: %s", exc)
            return
        yield GaugeMetricFamily(
            "regwarden_queue_depth",
            "Events in the work queue not yet done (due now or later: rechecks, retries).",
            value=depth,
        )
        wait = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "regwarden_queue_oldest_pending_seconds",
            "How long the longest-waiting due event has waited (0: none waiting).",
            value=wait,
        )


class _AccessQueueCollector:
    """The access queue's depth, read when scraped."""

    def __init__(self, depth: Callable[[], int]) -> None:
        self._depth = depth

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "regwarden_access_queue_depth",
            "Access events acknowledged and waiting for the access monitor.",
            value=self._depth(),
        )
