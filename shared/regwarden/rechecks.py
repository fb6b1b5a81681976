"""Rechecks: a PENDING verdict (or a settling manifest) comes back at its deadline.

Where "later" is kept depends on the platform, so it is a plug-in point:

    RECHECK_SCHEDULERS.get("queue")(RecheckTarget(queue=ledger))   # serve: the ledger's queue
    RECHECK_SCHEDULERS.get("sqs")(RecheckTarget(url=QUEUE_URL))     # Lambda: SQS DelaySeconds

A scheduler is called with the image, when it is due and the current time. A delay-capped
transport (SQS: 15 minutes) brings the message back early; whoever receives it parses it
with `parse_recheck` and, when `due` is still ahead, schedules it again with the next
`hop` (`Recheck.again`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from .errors import IntakeError, UsageError
from .plugins import PluginRegistry
from .reference import ImageRef

if TYPE_CHECKING:
    from .pipeline import Handled
    from .store import EventQueue

__all__ = [
    "EARLY_SLACK",
    "QUEUE_SOURCE",
    "RECHECK_EVENT_SOURCE",
    "RECHECK_SCHEDULERS",
    "SQS_MAX_DELAY",
    "Recheck",
    "RecheckScheduler",
    "RecheckTarget",
    "parse_recheck",
    "recheck_message",
    "schedule_recheck",
]

QUEUE_SOURCE = "recheck"
"""The event source of a recheck row in the ledger's queue."""
RECHECK_EVENT_SOURCE = "regwarden.recheck"
"""`source` of a delayed recheck message (beside EventBridge events on the same queue)."""
SQS_MAX_DELAY = 900
"""SQS's longest DelaySeconds: a recheck further away is re-sent until it is due."""
EARLY_SLACK = timedelta(seconds=1)
"""A recheck that arrives less than this before its time is due (clocks differ a little)."""


class RecheckScheduler(Protocol):
    """Bring `image` back at `at` (`hop`: how many times it was re-sent already)."""

    def __call__(self, image: str, at: datetime, *, now: datetime, hop: int = 0) -> None: ...


@dataclass(frozen=True, slots=True)
class RecheckTarget:
    """Where a scheduler keeps its rechecks: a queue object or a queue URL."""

    queue: EventQueue | None = None
    url: str | None = None


RECHECK_SCHEDULERS: PluginRegistry[Callable[[RecheckTarget], RecheckScheduler]] = PluginRegistry(
    "recheck scheduler"
)


@dataclass(frozen=True, slots=True)
class Recheck:
    """A parsed recheck message."""

    id: str
    image: ImageRef
    at: datetime | None
    """When it is due (a delayed message always says); None: now (a queue row)."""
    hop: int = 0

    def early(self, now: datetime) -> bool:
        """Still ahead of its time: schedule it again (`hop + 1`) instead of judging."""
        return self.at is not None and self.at > now + EARLY_SLACK


def recheck_message(image: str, at: datetime, *, hop: int = 0) -> dict[str, Any]:
    """The body of a delayed recheck message. Each hop has its own id: a consumer
    idempotent on the message id would answer a re-sent message carrying the id of the one
    that brought it from its idempotency store, and never judge it."""
    return {
        "id": f"recheck:{image}:{at.isoformat()}" + (f":hop{hop}" if hop else ""),
        "source": RECHECK_EVENT_SOURCE,
        "image": image,
        "at": at.isoformat(),
        "hop": hop,
    }


def parse_recheck(doc: object) -> Recheck:
    """A recheck message (`recheck_message`, or a queue row's `{"image": …}`); IntakeError
    naming the message when malformed."""
    if not isinstance(doc, Mapping):
        raise IntakeError(
            f"malformed recheck message: got {type(doc).__name__}, expected an object"
        )
    try:
        image = ImageRef.parse(str(doc["image"]))
        # a delayed message carries its due time; a queue row is leased only once due
        delayed = doc.get("source") == RECHECK_EVENT_SOURCE
        at = datetime.fromisoformat(str(doc["at"])) if delayed or "at" in doc else None
        hop = int(doc.get("hop", 0))
    except (KeyError, ValueError, TypeError) as exc:
        raise IntakeError(f"malformed recheck message {doc.get('id')!r}: {exc}") from None
    return Recheck(str(doc.get("id") or ""), image, at, hop)


def schedule_recheck(schedule: RecheckScheduler, handled: Handled, *, now: datetime) -> None:
    """PENDING verdicts come back at their deadline (grace period or scan timeout), and
    untagged manifests at the end of their settle window; anything else is not rescheduled."""
    target = handled.recheck_target
    if handled.recheck_at is None or target is None:
        return
    schedule(str(target), handled.recheck_at, now=now)


@RECHECK_SCHEDULERS.register("queue")
def _queue(target: RecheckTarget) -> RecheckScheduler:
    """A row in the ledger's queue, leased once due (a second after the deadline)."""
    queue = target.queue
    if queue is None:
        raise UsageError("the queue recheck scheduler needs RecheckTarget(queue=…)")

    def schedule(image: str, at: datetime, *, now: datetime, hop: int = 0) -> None:
        body = json.dumps({"image": image}).encode()
        queue.enqueue(
            QUEUE_SOURCE, body, "application/json", now=now, not_before=at + timedelta(seconds=1)
        )

    return schedule


@RECHECK_SCHEDULERS.register("sqs")
def _sqs(target: RecheckTarget) -> RecheckScheduler:
    """A delayed message on an SQS queue (at most 15 minutes; re-sent on arrival until due).
    The client is made on the first recheck, with regwarden's botocore config."""
    url = target.url
    if not url:
        raise UsageError("the sqs recheck scheduler needs RecheckTarget(url=QUEUE_URL)")
    clients: list[Any] = []

    def schedule(image: str, at: datetime, *, now: datetime, hop: int = 0) -> None:
        if not clients:
            from . import botocore_config

            clients.append(botocore_config.client("sqs"))
        delay = int(min(max((at - now).total_seconds() + 1, 0), SQS_MAX_DELAY))
        body = recheck_message(image, at, hop=hop)
        clients[0].send_message(QueueUrl=url, MessageBody=json.dumps(body), DelaySeconds=delay)

    return schedule
