"""Why a message was dead-lettered: each failed delivery of `on_push`, `on_scan` and
`notify` is noted in the ledger, as the AWS functions note each failed record.

    respond(function, headers, noting(function, body, headers, work, clock=now), state)

A delivery that fails (answered 400 or 500, so Pub/Sub redelivers it and, after
`maxDeliveryAttempts`, forwards it to the subscription's dead-letter topic) counts one
failure in `ledger.note_failure(function, key, error)`: the first error and the latest,
the number of failed attempts, kept `FAILURE_TTL`. The error names the message id of the
attempt, so the function's logs of it are found too. A later failure supersedes the
latest error; a later success leaves the note as it is (as on AWS): a message that
succeeded is no dead letter, and the note goes with its TTL.

The key is found again from the dead letter alone. Pub/Sub forwards a message to the
dead-letter topic as a new message — a new message id, its data and attributes kept, with
`CloudPubSubDeadLetterSource*` attributes added — so the key cannot be the message id: it
is `sha256:` of the message's data (`failure_key`), which the letter carries unchanged.
Messages with the same data (the same tag pushed again with the same digest) share a note.

Only a ledger that keeps such notes is written (`FirestoreLedger`, `DynamoLedger`); with
another (a local SQLite ledger) the failure is only logged. A note that cannot be written
is logged and never replaces the delivery's own error.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from ._app import State

__all__ = ["FAILURE_TTL", "MAX_ERROR", "NOTED_FUNCTIONS", "failure_key", "noting"]

log = logging.getLogger("regwarden.gcp")

FAILURE_TTL = timedelta(days=38)
"""How long a failed delivery's note is kept: the push subscription's retention (7 days)
plus its dead-letter subscription's (31 days), `infra/gcp/pubsub.tf`."""
MAX_ERROR = 2000
"""Characters of an error kept."""
NOTED_FUNCTIONS = ("on_push", "on_scan", "notify")
"""The functions whose failed deliveries are noted (those with dead-letter topics that
carry a regwarden event or alert)."""

T = TypeVar("T")


@runtime_checkable
class FailureLedger(Protocol):
    def note_failure(
        self, function: str, key: str, error: str, *, now: datetime, ttl: timedelta
    ) -> None: ...


def _identity(body: bytes, headers: Mapping[str, str]) -> tuple[str, str]:
    """(the note's key, the message id) of a delivery, decoded once: the key is `sha256:`
    of its message's data (of the whole body for a delivery that holds no readable
    message, whose id is then unknown)."""
    from regwarden.errors import IntakeError
    from regwarden.intake.pubsub import decode_pubsub

    try:
        message = decode_pubsub(body, headers)
    except IntakeError:
        return "sha256:" + hashlib.sha256(body).hexdigest(), "(unreadable delivery)"
    return "sha256:" + hashlib.sha256(message.data).hexdigest(), message.message_id


def failure_key(body: bytes, headers: Mapping[str, str]) -> str:
    """The key of a delivery's note: `sha256:` of its message's data (of the whole body,
    for a delivery that holds no readable message)."""
    return _identity(body, headers)[0]


def noting(
    function: str,
    body: bytes,
    headers: Mapping[str, str],
    work: Callable[[State], T],
    *,
    clock: Callable[[], datetime],
) -> Callable[[State], T]:
    """`work`, with its failure noted in the state's ledger before it propagates."""

    def noted(st: State) -> T:
        try:
            return work(st)
        except Exception as exc:
            _note(st, function, body, headers, exc, now=clock())
            raise

    return noted


def _note(
    st: State,
    function: str,
    body: bytes,
    headers: Mapping[str, str],
    exc: Exception,
    *,
    now: datetime,
) -> None:
    from regwarden.redact import redact_text

    ledger = st.ledger
    if not isinstance(ledger, FailureLedger):
        return  # this ledger keeps no notes: the logs say why (`respond`)
    key, message_id = _identity(body, headers)
    error = redact_text(f"message {message_id}: {type(exc).__name__}: {exc}")[:MAX_ERROR]
    try:
        ledger.note_failure(function, key, error, now=now, ttl=FAILURE_TTL)
    except Exception as note_exc:  # the delivery's own error is what matters
        log.warning("could not note the failure", extra={"error": str(note_exc)})
