"""Turning delivered bodies into handled events: shared by `regwarden serve`, `invoke` and
the platform adapters. Parsing is pure; handling goes through the pipeline."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from .errors import IntakeError
from .model import ImageEvent
from .nesting import TooDeep, loads_json
from .pipeline import Handled, Pipeline
from .rechecks import (
    QUEUE_SOURCE,
    RECHECK_SCHEDULERS,
    RecheckScheduler,
    RecheckTarget,
    parse_recheck,
    schedule_recheck,
)
from .store import EventQueue, QueuedEvent

if TYPE_CHECKING:
    from .access import AccessEvent
    from .policy import Policy
    from .receiver import AccessIntake, AccessParser, ServeMetrics

RECHECK = QUEUE_SOURCE
ACCESS_CAPACITY = 10_000
"""Access events acknowledged and not yet handled, at most (then 503: the sender retries)."""
ACCESS_SWEEP_EVERY = 5.0
"""Seconds between looks for closed access alert windows (each a ledger query)."""
MAX_ATTEMPTS = 5


def parse_body(source: str, body: bytes, content_type: str | None) -> list[ImageEvent]:
    """Events in one delivery from `source` (a name in `intake.PARSERS`); raises IntakeError
    for an unknown source, a bad body, and an envelope whose records are all malformed
    (naming each problem)."""
    from .intake import PARSERS

    if source not in PARSERS:  # a queued delivery's source: a bad one is a bad delivery
        raise IntakeError(f"unknown event source {source!r}; valid: {', '.join(PARSERS)}")
    return PARSERS.get(source).parse(body, content_type)


def count_events(
    source: str,
    keep: Callable[[ImageEvent], bool] | None = None,
    allowed_hosts: frozenset[str] | None = None,
) -> Callable[[bytes, str | None], int]:
    """A receiver validator: parse now (a malformed body is a 400), count what is kept.
    With `keep` (`Pipeline.wants`), events the pipeline would ignore do not count, so a
    delivery holding only those is acknowledged without being stored. With
    `allowed_hosts`, an event naming any other registry host refuses the delivery
    (HostNotAllowed, a 400): regwarden never contacts a host because an event named it."""
    from .intake import check_event_hosts

    def validate(body: bytes, content_type: str | None) -> int:
        events = parse_body(source, body, content_type)
        check_event_hosts(events, allowed_hosts)
        if keep is None:
            return len(events)
        return sum(1 for e in events if keep(e))

    return validate


def webhook_sources() -> tuple[str, ...]:
    """The sources the receiver accepts at `/events/<name>` (EventBridge arrives by SQS)."""
    from .intake import PARSERS

    return tuple(name for name in PARSERS if PARSERS.get(name).webhook)


def receiver_validators(
    keep: Callable[[ImageEvent], bool] | None = None,
    allowed_hosts: frozenset[str] | None = None,
) -> dict[str, Callable[[bytes, str | None], int]]:
    """One validator per webhook source; with `keep` (`Pipeline.wants`), dropping what
    the pipeline would ignore; with `allowed_hosts`, refusing events for other hosts."""
    return {s: count_events(s, keep, allowed_hosts) for s in webhook_sources()}


def access_parsers() -> dict[str, AccessParser]:
    """The webhook sources whose bodies carry access events (manifest pulls and pushes),
    each with its parser `(body, content type) → AccessEvent list`."""
    from .access import parse_distribution_access, parse_harbor_access

    def distribution(body: bytes, content_type: str | None) -> list[AccessEvent]:
        return parse_distribution_access(body, content_type=content_type)

    def harbor(body: bytes, content_type: str | None) -> list[AccessEvent]:
        return parse_harbor_access(body, content_type=content_type)

    return {"distribution": distribution, "harbor": harbor}


def access_intake(
    policy: Policy,
    pipeline: Pipeline,
    *,
    allowed_hosts: frozenset[str] | None,
    clock: Callable[[], datetime],
    metrics: ServeMetrics | None = None,
    capacity: int = ACCESS_CAPACITY,
    sweep_every: float = ACCESS_SWEEP_EVERY,
) -> AccessIntake:
    """The receiver's access path: an `AccessMonitor` over the pipeline's ledger and alert
    router, fed by the webhook sources' access parsers; the alerts it commits are sent at
    once by the pipeline's outbox delivery. Start it (`start`) before serving and stop it
    (`stop`: drains, flushes every tally) after."""
    from .access import AccessMonitor
    from .receiver import AccessIntake

    monitor = AccessMonitor.from_policy(
        policy, pipeline.ledger, pipeline.router, actor=pipeline.actor
    )

    def deliver(keys: Sequence[str], now: datetime) -> int:
        return pipeline.deliver(keys, now=now)

    intake = AccessIntake(
        monitor,
        access_parsers(),
        deliver=deliver,
        allowed_hosts=allowed_hosts,
        capacity=capacity,
        sweep_every=sweep_every,
        clock=clock,
        metrics=metrics,
    )
    if metrics is not None:
        metrics.watch_access(intake.depth)
    return intake


def detect_source(body: bytes) -> str:
    """For `regwarden invoke`: which sender wrote this file (the first source, by name,
    whose `detect` recognises it)."""
    from .intake import PARSERS

    try:
        doc = loads_json(body)
    except TooDeep as exc:
        raise IntakeError(f"event file: {exc}") from None
    except ValueError as exc:
        raise IntakeError(f"event file is not JSON: {exc}") from None
    for name in PARSERS:
        if PARSERS.get(name).detect(doc):
            return name
    *others, last = [PARSERS.get(name).described for name in PARSERS]
    expected = f"{', '.join(others)} or {last}" if others else last
    raise IntakeError(f"cannot tell the event source: expected {expected}")


class Processor:
    """The worker pool's job: one queued delivery → its events handled."""

    def __init__(
        self,
        pipeline: Pipeline,
        ledger: EventQueue,
        *,
        clock: Callable[[], datetime],
        on_handled: Callable[[Handled], None] | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        recheck: RecheckScheduler | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._ledger = ledger
        # rechecks go to the ledger's own queue unless the caller keeps them elsewhere
        self._recheck = recheck or RECHECK_SCHEDULERS.get("queue")(RecheckTarget(queue=ledger))
        self._clock = clock
        self._on_handled = on_handled
        self._max_attempts = max_attempts

    def __call__(self, item: QueuedEvent) -> None:
        now = self._clock()
        final = item.attempts >= self._max_attempts
        if item.source == RECHECK:
            image = parse_recheck(json.loads(item.body)).image
            results = [self._pipeline.recheck(image, now=now, final_attempt=final)]
        else:
            results = [
                self._pipeline.handle(e, now=now, final_attempt=final)
                for e in parse_body(item.source, item.body, item.content_type)
            ]
        for handled in results:
            schedule_recheck(self._recheck, handled, now=now)
            if self._on_handled is not None:
                self._on_handled(handled)
