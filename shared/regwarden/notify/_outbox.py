"""Sending the alert outbox: each committed row to the channel it names, at least once.

The pipeline sends what a judgement committed (and the recovery sweep what is due); the
access functions, which judge nothing and have no pipeline, send what the access monitor
committed. Both go through `send_outbox`, so a refusal is backed off the same way
everywhere: doubling from `RETRY_BASE` up to `RETRY_MAX`, never sooner than the receiver's
`Retry-After`, and `RETRY_MAX` for a refusal only a configuration change will help (a 4xx).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from ..errors import RegistryError
from ._alert import Alert
from ._channels import DeliveryFailed

if TYPE_CHECKING:
    from ..store import OutboxItem
    from ._router import Router

__all__ = ["RETRY_BASE", "RETRY_MAX", "outbox_delay", "send_outbox"]

log = logging.getLogger("regwarden.notify")

RETRY_BASE = timedelta(seconds=30)
RETRY_MAX = timedelta(hours=1)


class OutboxWriter(Protocol):
    """What sending records in the ledger (`Ledger`'s outbox methods)."""

    def outbox_sent(self, key: str, *, now: datetime) -> None: ...

    def outbox_retry(self, key: str, *, at: datetime, error: str) -> None: ...


def outbox_delay(exc: RegistryError, attempts: int) -> timedelta:
    """When to try a failed alert again: backing off, never sooner than the receiver asked,
    and an hour for a refusal (a 4xx: only a configuration change will help)."""
    if isinstance(exc, DeliveryFailed) and exc.permanent:
        return RETRY_MAX
    delay = min(RETRY_BASE * (1 << min(attempts, 16)), RETRY_MAX)
    if isinstance(exc, DeliveryFailed) and exc.retry_after is not None:
        delay = max(delay, timedelta(seconds=exc.retry_after))
    return delay


def send_outbox(
    items: Iterable[OutboxItem], *, router: Router, ledger: OutboxWriter, now: datetime
) -> tuple[int, int]:
    """Send each row to its channel and record it sent, or its next attempt when the
    channel refused (one dead channel never blocks the others). Returns (sent, failed)."""
    sent = failed = 0
    for item in items:
        channel = router.channel(item.channel)
        if channel is None:  # the policy no longer defines it: nowhere to send
            ledger.outbox_retry(item.key, at=now + RETRY_MAX, error="unknown channel")
            failed += 1
            continue
        try:
            channel.send(Alert.model_validate_json(item.alert))
        except RegistryError as exc:
            delay = outbox_delay(exc, item.attempts)
            log.error("alert to %s failed (retry in %s): %s", channel.name, delay, exc)
            ledger.outbox_retry(item.key, at=now + delay, error=str(exc))
            failed += 1
            continue
        ledger.outbox_sent(item.key, now=now)
        sent += 1
    return sent, failed
