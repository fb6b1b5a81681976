"""A retention run scheduled and fanned out through a queue, whatever the cloud: the
schedule's payload, the run id a retried schedule repeats, the work message and its
checks, and what a worker's outcome means for its message. Pure: the platform's adapter
reads the payload, sends and receives the messages and passes `now`.

    payload = scheduled_run(event)                          # schedule → what it asks for
    run = scheduled_run_id(payload, registry, now=now)      # the same for every retry
    bodies = [message_body(m) for m in fan_out(reg, policy, globs=payload.globs, run=run)
              if in_scope(m["repository"], prefixes)]
    ...
    message = work_message(body, registry=registry, prefixes=prefixes)  # worker side
    outcome = work(message, runtime, now=now, should_stop=...)
    failure = outcome_failure(outcome, resume_delay=60)     # raise it: the message returns
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ...errors import IntakeError, RegistryError, RegwardenError
from ._run import new_run_id

if TYPE_CHECKING:
    from ._fanout import RetentionOutcome

__all__ = [
    "LOG_ITEMS",
    "MESSAGE_KEYS",
    "RunInterrupted",
    "ScheduledRun",
    "bounded",
    "in_scope",
    "message_body",
    "message_field",
    "outcome_failure",
    "run_id_for",
    "scheduled_run",
    "scheduled_run_id",
    "work_message",
]

LOG_ITEMS = 50
"""Longest list a logged plan or summary keeps (the rest is counted): log events stay small."""
MESSAGE_KEYS = ("registry", "repository", "run")
"""A work message's keys, all non-empty strings."""
_PAYLOAD_KEYS = ("globs", "run", "scheduledTime")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,52}")
"""A scheduled run id: a worker extends it with its repository's tag (64 characters in all,
`_fanout._worker_run_id`)."""


class RunInterrupted(RegwardenError):
    """The worker stopped deleting before its time ran out; the message comes back and
    the recorded run resumes."""


@dataclass(frozen=True, slots=True)
class ScheduledRun:
    """What a schedule payload asks for."""

    globs: tuple[str, ...] = ()
    """Only repositories matching one of these (policy globs); empty: all with rules."""
    run: str | None = None
    """An explicit run id."""
    scheduled: datetime | None = None
    """The schedule's time (e.g. `<aws.scheduler.scheduled-time>`): the run id derives from it."""


def scheduled_run(event: object) -> ScheduledRun:
    """The fan-out payload: `{}` or `{"globs": [...], "run": "...", "scheduledTime": ISO}`."""
    if event is None:
        return ScheduledRun()
    if not isinstance(event, Mapping):
        raise IntakeError(
            f"retention schedule payload: got {type(event).__name__}, expected an object "
            'such as {"scheduledTime": "2026-11-27T03:00:00Z"}'
        )
    unknown = sorted(set(event) - set(_PAYLOAD_KEYS))
    if unknown:
        raise IntakeError(
            f"retention schedule payload: got keys {unknown}, expected only: "
            + ", ".join(_PAYLOAD_KEYS)
        )
    globs = event.get("globs", ())
    if isinstance(globs, str) or not isinstance(globs, Sequence):
        raise IntakeError(f"payload globs: got {globs!r}, expected a list of repository globs")
    if not all(isinstance(g, str) and g for g in globs):
        raise IntakeError(f"payload globs: got {list(globs)!r}, expected non-empty strings")
    run = event.get("run")
    if run is not None and (not isinstance(run, str) or not _RUN_ID.fullmatch(run)):
        raise IntakeError(
            f"payload run: got {run!r}, expected a run id: letters, digits, '.', '_' or '-' "
            "(at most 53), e.g. 20261127T030000Z-3f2a9c"
        )
    when = event.get("scheduledTime")
    scheduled = None
    if when is not None:
        try:
            scheduled = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
        except ValueError:
            scheduled = None
        if scheduled is None or scheduled.tzinfo is None:
            raise IntakeError(
                f"payload scheduledTime: got {when!r}, expected an ISO 8601 time with a "
                "zone, e.g. 2026-11-27T03:00:00Z"
            )
    return ScheduledRun(tuple(globs), run, scheduled)


def run_id_for(at: datetime, registry: str) -> str:
    """The run id of a scheduled run: the same for every attempt at the same scheduled
    time (a retried fan-out queues the same runs, so workers resume, not re-plan)."""
    stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    tag = hashlib.sha256(f"{registry}|{stamp}".encode()).hexdigest()[:6]
    return f"{stamp}-{tag}"


def scheduled_run_id(payload: ScheduledRun, registry: str, *, now: datetime) -> str:
    """The payload's own run id, else the scheduled time's, else a new one (a run started
    by hand without a time is not repeated by a retry)."""
    if payload.run is not None:
        return payload.run
    if payload.scheduled is not None:
        return run_id_for(payload.scheduled, registry)
    return new_run_id(now)


def in_scope(repository: str, prefixes: Sequence[str]) -> bool:
    """True when `repository` starts with one of `prefixes` (`""` is every repository)."""
    return any(repository.startswith(p) for p in prefixes)


def message_body(message: Mapping[str, str]) -> str:
    """The body a work message is queued as (`work_message` reads it back)."""
    return json.dumps(dict(message), sort_keys=True)


def message_field(message: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    """`message[key]`, a non-empty string (None when absent and not `required`)."""
    value = message.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise IntakeError(
            f"retention message: got {key}={value!r}, expected a non-empty string "
            '(message shape: {"registry": HOST, "repository": NAME, "run": RUN_ID})'
        )
    return value


def work_message(body: str, *, registry: str, prefixes: Sequence[str]) -> dict[str, str]:
    """A work-queue message body → `{"registry", "repository", "run"}`, checked: this
    worker's registry, a repository in scope, a run id (so a redelivery resumes)."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise IntakeError(f"retention message: body is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise IntakeError(
            f"retention message: got {type(doc).__name__}, expected an object with "
            + ", ".join(MESSAGE_KEYS)
        )
    unknown = sorted(set(doc) - set(MESSAGE_KEYS))
    if unknown:
        raise IntakeError(
            f"retention message: got keys {unknown}, expected only: " + ", ".join(MESSAGE_KEYS)
        )
    message = {key: str(message_field(doc, key)) for key in MESSAGE_KEYS}
    if message["registry"] != registry:
        raise IntakeError(
            f"retention message: got registry {message['registry']!r}, expected {registry!r} "
            "(this function's registry)"
        )
    if not in_scope(message["repository"], prefixes):
        raise IntakeError(
            f"retention message: repository {message['repository']!r} is outside this "
            "stack's scope; expected a name starting with one of: "
            + ", ".join(repr(p) for p in prefixes)
        )
    return message


def outcome_failure(outcome: RetentionOutcome, *, resume_delay: int) -> RegwardenError | None:
    """The error a worker raises so its message is delivered again, or None when the
    message is done: interrupted (`RunInterrupted`: it returns after `resume_delay`
    seconds), deletions failed or refused (a retry resumes the recorded run)."""
    result, run_id = outcome.result, outcome.run.run_id
    if result is None:
        return None
    if result.status == "interrupted":
        return RunInterrupted(
            f"run {run_id}: {result.deleted + result.gone + result.resumed} of "
            f"{result.planned} deletions done before the time limit; the message returns "
            f"in {resume_delay}s and the run resumes"
        )
    if result.status in ("failed", "aborted"):
        failures = "; ".join(f"{f.digest}: {f.error}" for f in result.failures[:5])
        return RegistryError(
            f"run {run_id}: {result.status}: {len(result.failures)} deletions "
            f"failed ({failures or '; '.join(result.notes)}); a retry resumes the run"
        )
    return None


def bounded(value: Any, limit: int = LOG_ITEMS) -> Any:
    """`value` with every list cut to `limit` items plus a count of the rest."""
    if isinstance(value, dict):
        return {k: bounded(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [bounded(v, limit) for v in value[:limit]]
        if len(value) > limit:
            items.append(f"... {len(value) - limit} more")
        return items
    return value
