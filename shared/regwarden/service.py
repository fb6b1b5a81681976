"""Turning delivered bodies into handled events: shared by `regwarden serve`, `invoke` and
the platform adapters. Parsing is pure; handling goes through the pipeline."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from .errors import IntakeError
from .model import ImageEvent
from .nesting import TooDeep, loads_json
from .pipeline import Handled, Pipeline
from .reference import ImageRef
from .store import EventQueue, QueuedEvent

log = logging.getLogger("regwarden.service")

SOURCES = ("distribution", "harbor")
RECHECK = "recheck"
MAX_ATTEMPTS = 5


def parse_body(source: str, body: bytes, content_type: str | None) -> list[ImageEvent]:
    """Events in one delivery from `source`; raises IntakeError for a bad body, and for an
    envelope whose records are all malformed (naming each problem)."""
    from . import intake

    if source == "distribution":
        batch = intake.parse_distribution_batch(body, content_type=content_type)
        if batch.errors and not batch.events and not batch.skipped:
            raise IntakeError(_no_valid_event(batch.errors))
        for err in batch.errors:  # one bad record never hides the good ones
            log.warning("skipped a malformed distribution event: %s", err)
        return list(batch.events)
    if source == "harbor":
        return [r.event for r in intake.parse_harbor_results(body, content_type=content_type)]
    raise IntakeError(f"unknown event source {source!r}; valid: {', '.join(SOURCES)}")


MAX_LISTED_PROBLEMS = 20  # a 400 names each problem, within reason for a 1 MiB envelope


def _no_valid_event(errors: Sequence[IntakeError]) -> str:
    listed = [str(e) for e in errors[:MAX_LISTED_PROBLEMS]]
    if len(errors) > MAX_LISTED_PROBLEMS:
        listed.append(f"and {len(errors) - MAX_LISTED_PROBLEMS} more")
    what = "1 problem" if len(errors) == 1 else f"{len(errors)} problems"
    return f"no valid event in the envelope ({what}): " + "; ".join(listed)


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


def receiver_validators(
    keep: Callable[[ImageEvent], bool] | None = None,
    allowed_hosts: frozenset[str] | None = None,
) -> dict[str, Callable[[bytes, str | None], int]]:
    """One validator per webhook source; with `keep` (`Pipeline.wants`), dropping what
    the pipeline would ignore; with `allowed_hosts`, refusing events for other hosts."""
    return {s: count_events(s, keep, allowed_hosts) for s in SOURCES}


def detect_source(body: bytes) -> str:
    """For `regwarden invoke`: which sender wrote this file."""
    try:
        doc = loads_json(body)
    except TooDeep as exc:
        raise IntakeError(f"event file: {exc}") from None
    except ValueError as exc:
        raise IntakeError(f"event file is not JSON: {exc}") from None
    if isinstance(doc, dict):
        if "events" in doc:
            return "distribution"
        if "detail-type" in doc:
            return "eventbridge"
        if "event_data" in doc or "specversion" in doc:
            return "harbor"
    raise IntakeError(
        "cannot tell the event source: expected a distribution envelope "
        '({"events": […]}), a Harbor webhook or an EventBridge event'
    )


def enqueue_recheck(ledger: EventQueue, handled: Handled, *, now: datetime) -> None:
    """PENDING verdicts come back at their deadline (grace period or scan timeout), and
    untagged manifests at the end of their settle window."""
    target = handled.recheck_target
    if handled.recheck_at is None or target is None:
        return
    body = json.dumps({"image": str(target)}).encode()
    ledger.enqueue(
        RECHECK,
        body,
        "application/json",
        now=now,
        not_before=handled.recheck_at + timedelta(seconds=1),
    )


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
    ) -> None:
        self._pipeline = pipeline
        self._ledger = ledger
        self._clock = clock
        self._on_handled = on_handled
        self._max_attempts = max_attempts

    def __call__(self, item: QueuedEvent) -> None:
        now = self._clock()
        final = item.attempts >= self._max_attempts
        if item.source == RECHECK:
            image = ImageRef.parse(json.loads(item.body)["image"])
            results = [self._pipeline.recheck(image, now=now, final_attempt=final)]
        else:
            results = [
                self._pipeline.handle(e, now=now, final_attempt=final)
                for e in parse_body(item.source, item.body, item.content_type)
            ]
        for handled in results:
            enqueue_recheck(self._ledger, handled, now=now)
            if self._on_handled is not None:
                self._on_handled(handled)
