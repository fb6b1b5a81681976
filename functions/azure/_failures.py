"""Why an event or message was dead-lettered: each failed invocation of `on_push`, `notify`
and `recheck` is noted in the ledger, as the AWS and GCP functions note theirs.

    run(function, noting(function, key, work, clock=now))

A failure (an exception: Event Grid retries the event, then dead-letters it to the
subscription's storage container; the host retries a queue message, then moves it to
`<queue>-poison`) counts one in `ledger.note_failure(function, key, error)`: the first error
and the latest, the number of failed attempts, kept `FAILURE_TTL`. A later success leaves
the note to expire (it is no dead letter then).

The key is found again from the dead letter alone:

| function          | dead letter                                  | key                  |
| ----------------- | -------------------------------------------- | -------------------- |
| `on_push`, notify | Event Grid's blob: the event, its `id` kept  | `event:` + its id    |
| `recheck`         | the host's copy on `-poison`: a new message  | `sha256:` + of its   |
|                   | id, the same body                            | body                 |

Only a ledger that keeps such notes is written (`AzureTableLedger`, and the other clouds');
with another (a local SQLite ledger) the failure is only logged. A note that cannot be
written is logged and never replaces the invocation's own error.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from ._app import State

__all__ = ["FAILURE_TTL", "MAX_ERROR", "event_key", "message_key", "noting"]

log = logging.getLogger("regwarden.azure")

FAILURE_TTL = timedelta(days=30)
"""How long a failure's note is kept: an operator looks at a dead letter within this (Event
Grid's dead-letter blobs stay until deleted; `-poison` messages are kept 7 days by default)."""
MAX_ERROR = 2000
"""Characters of an error kept."""

T = TypeVar("T")


@runtime_checkable
class FailureLedger(Protocol):
    def note_failure(
        self, function: str, key: str, error: str, *, now: datetime, ttl: timedelta
    ) -> None: ...


def event_key(event_id: str) -> str:
    """The note's key of an Event Grid event (its id survives dead-lettering)."""
    return f"event:{event_id}"


def message_key(body: bytes) -> str:
    """The note's key of a queue message (the poison copy keeps only its body)."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def noting(
    function: str, key: str, work: Callable[[State], T], *, clock: Callable[[], datetime]
) -> Callable[[State], T]:
    """`work`, with its failure noted in the state's ledger under `key` before it propagates."""

    def noted(st: State) -> T:
        try:
            return work(st)
        except Exception as exc:
            _note(st, function, key, exc, now=clock())
            raise

    return noted


def _note(st: State, function: str, key: str, exc: Exception, *, now: datetime) -> None:
    from regwarden.redact import redact_text

    ledger = st.ledger
    if not isinstance(ledger, FailureLedger):
        return  # this ledger keeps no notes: the logs say why (`_app.run`)
    error = redact_text(f"{type(exc).__name__}: {exc}")[:MAX_ERROR]
    try:
        ledger.note_failure(function, key, error, now=now, ttl=FAILURE_TTL)
    except Exception as note_exc:  # the invocation's own error is what matters
        log.warning("could not note the failure of %s %s: %s", function, key, note_exc)
