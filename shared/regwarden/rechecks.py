"""Rechecks: a PENDING verdict (or a settling manifest) comes back at its deadline.

Where "later" is kept depends on the platform, so it is a plug-in point:

    RECHECK_SCHEDULERS.get("queue")(RecheckTarget(queue=ledger))   # serve: the ledger's queue
    RECHECK_SCHEDULERS.get("sqs")(RecheckTarget(url=QUEUE_URL))     # Lambda: SQS DelaySeconds
    RECHECK_SCHEDULERS.get("cloudtasks")(RecheckTarget(url=FUNCTION_URL, tasks_queue=QUEUE,
                                         service_account=SA, env=os.environ))  # Cloud Tasks
    RECHECK_SCHEDULERS.get("storagequeue")(RecheckTarget(url=QUEUE_NAME, env=os.environ))
                                         # Azure: a Storage queue's visibility timeout

A scheduler is called with the image, when it is due and the current time. A delay-capped
transport (SQS: 15 minutes) brings the message back early; whoever receives it parses it
with `parse_recheck` and, when `due` is still ahead, schedules it again with the next
`hop` (`Recheck.again`). Cloud Tasks holds a task up to 30 days: a recheck further away
than that hops the same way, and so does a Storage queue message held past its 7 days.
"""

from __future__ import annotations

import hashlib
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
    "CLOUD_TASKS_MAX_AHEAD",
    "EARLY_SLACK",
    "QUEUE_SOURCE",
    "RECHECK_EVENT_SOURCE",
    "RECHECK_SCHEDULERS",
    "SQS_MAX_DELAY",
    "STORAGE_QUEUE_MAX_AHEAD",
    "Recheck",
    "RecheckScheduler",
    "RecheckTarget",
    "parse_recheck",
    "recheck_message",
    "schedule_recheck",
    "task_id",
]

QUEUE_SOURCE = "recheck"
"""The event source of a recheck row in the ledger's queue."""
RECHECK_EVENT_SOURCE = "regwarden.recheck"
"""`source` of a delayed recheck message (beside EventBridge events on the same queue)."""
SQS_MAX_DELAY = 900
"""SQS's longest DelaySeconds: a recheck further away is re-sent until it is due."""
CLOUD_TASKS_MAX_AHEAD = timedelta(days=30) - timedelta(minutes=5)
"""How far ahead a Cloud Tasks task may be scheduled (30 days, less a margin for clocks and
the request's flight); a recheck further away comes back early and hops."""
STORAGE_QUEUE_MAX_AHEAD = timedelta(days=7) - timedelta(minutes=5)
"""How long a Storage queue message may be held invisible (7 days, less a margin); a recheck
further away comes back early and hops."""
EARLY_SLACK = timedelta(seconds=1)
"""A recheck that arrives less than this before its time is due (clocks differ a little)."""


class RecheckScheduler(Protocol):
    """Bring `image` back at `at` (`hop`: how many times it was re-sent already)."""

    def __call__(self, image: str, at: datetime, *, now: datetime, hop: int = 0) -> None: ...


@dataclass(frozen=True, slots=True)
class RecheckTarget:
    """Where a scheduler keeps its rechecks: a queue object, a queue URL (SQS), or a Cloud
    Tasks queue with the URL its tasks call (the recheck function) and their identity."""

    queue: EventQueue | None = None
    url: str | None = None
    tasks_queue: str | None = None
    """`projects/P/locations/L/queues/Q` (Cloud Tasks)."""
    service_account: str | None = None
    """The service account whose OIDC token each task's request carries (Cloud Tasks)."""
    env: Mapping[str, str] | None = None
    """Where a client's endpoint settings come from (`regwarden.gcp_clients`)."""


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

    def again(self, schedule: RecheckScheduler | None, *, now: datetime) -> bool:
        """A recheck that arrived early (a transport's delay cap brought it back) is sent
        on again with the next hop, and True says so: do not judge it now. False: it is
        due. With no scheduler an early recheck is judged now (nothing could bring it
        back later)."""
        if self.at is None or not self.early(now) or schedule is None:
            return False
        schedule(str(self.image), self.at, now=now, hop=self.hop + 1)
        return True


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


def task_id(image: str, at: datetime, hop: int = 0) -> str:
    """The Cloud Tasks task id of one recheck: the same image, due time and hop always give
    the same id, so scheduling it twice (a redelivered event hands its recheck back) is
    refused as ALREADY_EXISTS rather than run twice."""
    digest = hashlib.sha256(f"{image}\n{at.isoformat()}\n{hop}".encode()).hexdigest()
    return f"recheck-{digest[:40]}"


def _already_exists(exc: Exception) -> bool:
    """A 409 that says ALREADY_EXISTS (not ABORTED): over gRPC its own class, over REST
    the `status` of Google's error envelope."""
    from google.api_core.exceptions import AlreadyExists

    if isinstance(exc, AlreadyExists):
        return True
    response = getattr(exc, "response", None)
    try:
        status = response.json()["error"]["status"] if response is not None else None
    except (ValueError, KeyError, TypeError):
        return False
    return status == "ALREADY_EXISTS"


@RECHECK_SCHEDULERS.register("cloudtasks")
def _cloudtasks(target: RecheckTarget) -> RecheckScheduler:
    """An HTTP task on a Cloud Tasks queue, calling the recheck function (`url`) with an
    OIDC token of `service_account` at the due time (at most 30 days ahead; further, it
    hops). The body is `recheck_message`. The client is made on the first recheck."""
    queue, url, account = target.tasks_queue, target.url, target.service_account
    if not (queue and url and account):
        raise UsageError(
            "the cloudtasks recheck scheduler needs RecheckTarget(tasks_queue=QUEUE, "
            "url=RECHECK_URL, service_account=EMAIL)"
        )
    env: Mapping[str, str] = target.env if target.env is not None else {}
    clients: list[Any] = []

    def schedule(image: str, at: datetime, *, now: datetime, hop: int = 0) -> None:
        from google.api_core.exceptions import Conflict
        from google.cloud import tasks_v2

        from . import gcp_clients

        if not clients:
            clients.append(
                tasks_v2.CloudTasksClient(**gcp_clients.client_kwargs("cloudtasks", env))
            )
        when = min(at + EARLY_SLACK, now + CLOUD_TASKS_MAX_AHEAD)  # proto-plus: a Timestamp
        task = tasks_v2.Task(
            name=f"{queue}/tasks/{task_id(image, at, hop)}",
            schedule_time=when,
            http_request=tasks_v2.HttpRequest(
                url=url,
                http_method=tasks_v2.HttpMethod.POST,
                headers={"Content-Type": "application/json"},
                body=json.dumps(recheck_message(image, at, hop=hop)).encode(),
                oidc_token=tasks_v2.OidcToken(service_account_email=account, audience=url),
            ),
        )
        try:
            clients[0].create_task(parent=queue, task=task)
        except Conflict as exc:  # the REST transport maps every 409 to Conflict
            if not _already_exists(exc):
                raise
            # scheduled before: a redelivered event handed its recheck back

    return schedule


@RECHECK_SCHEDULERS.register("storagequeue")
def _storagequeue(target: RecheckTarget) -> RecheckScheduler:
    """A message on an Azure Storage queue (`url`: the queue's name, in the account
    `REGWARDEN_STORAGE_ACCOUNT` of `env`) made visible at the due time: its visibility
    timeout is the delay (at most `STORAGE_QUEUE_MAX_AHEAD`; further, it hops). The body is
    `recheck_message`; the client is made on the first recheck (`regwarden.azure_queues`)."""
    queue = target.url
    if not queue:
        raise UsageError("the storagequeue recheck scheduler needs RecheckTarget(url=QUEUE_NAME)")
    env: Mapping[str, str] = target.env if target.env is not None else {}

    def schedule(image: str, at: datetime, *, now: datetime, hop: int = 0) -> None:
        from . import azure_queues

        ahead = min(at + EARLY_SLACK - now, STORAGE_QUEUE_MAX_AHEAD)
        delay = max(int(-(-ahead.total_seconds() // 1)), 0)  # rounded up: never early
        body = json.dumps(recheck_message(image, at, hop=hop)).encode()
        azure_queues.send(queue, body, env=env, visibility_timeout=delay)

    return schedule
