"""One alert to the channels routed to it, each (alert, channel) delivery remembered, so a
retry after one channel failed sends only to the channels still missing it.

Shared by every runtime that delivers alerts itself (the AWS notify function today), so a
retried delivery behaves the same wherever it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from ..errors import NotImplementedYet, RegistryError, UsageError
from ._alert import Alert
from ._channels import Notifier

if TYPE_CHECKING:
    from ..policy import Notifications

log = logging.getLogger("regwarden.notify")

__all__ = [
    "DELIVERY_TTL",
    "DeliveryMemory",
    "DeliveryReport",
    "deliver",
    "delivery_key",
    "routed_to",
]

DELIVERY_TTL = timedelta(days=30)
"""How long an (alert, channel) delivery is remembered: the alerts' de-duplication window."""


class DeliveryMemory(Protocol):
    """What `deliver` remembers deliveries in (the ledger's delivery ids)."""

    def seen_delivery(self, delivery_id: str, *, now: datetime, ttl: timedelta) -> bool: ...

    def forget_delivery(self, delivery_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What became of one alert: channel names sent to, skipped (with why), failed."""

    alert: str
    """The alert's de-duplication key."""
    sent: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def raise_for_failures(self) -> None:
        """RegistryError (retried) when any channel failed; the retry sends only to those."""
        if self.failed:
            raise RegistryError(
                f"alert {self.alert}: delivery failed on {', '.join(self.failed)}; "
                f"sent to {', '.join(self.sent) or 'none'} (not repeated on retry)"
            )


def routed_to(rules: Notifications, alert: Alert) -> tuple[str, ...]:
    """The names of the channels the policy's routes send `alert` to, in route order."""
    return rules.channels_for(
        team=alert.team, severity=alert.severity, action=alert.action, repository=alert.repository
    )


def delivery_key(alert: Alert, channel: str) -> str:
    """The delivery id one (alert, channel) delivery is remembered under."""
    return f"notify:{alert.dedup_key}:{channel}"


def deliver(
    alert: Alert,
    names: Iterable[str],
    channel_for: Callable[[str], Notifier | None],
    memory: DeliveryMemory,
    *,
    now: datetime,
    ttl: timedelta = DELIVERY_TTL,
    unavailable: str = "not delivered here",
) -> DeliveryReport:
    """Send `alert` to each channel `names` lists, once per (alert, channel) within `ttl`.

    `channel_for(name)` is None for a channel this runtime must not send to (skipped with
    `unavailable` as the reason). A channel kind this runtime cannot serve is skipped for
    good; a channel that fails (RegistryError, UsageError) is forgotten so a retry sends
    to it again. Never raises for a channel: see `DeliveryReport.raise_for_failures`.
    """
    sent: list[str] = []
    skipped: list[str] = []
    failed: list[str] = []
    for name in names:
        channel = channel_for(name)
        if channel is None:
            skipped.append(f"{name} ({unavailable})")
            continue
        key = delivery_key(alert, name)
        if memory.seen_delivery(key, now=now, ttl=ttl):
            skipped.append(f"{name} (already delivered)")
            continue
        try:
            channel.send(alert)
        except NotImplementedYet as exc:  # a channel kind this runtime cannot serve: permanent
            log.error("channel cannot deliver here", extra={"channel": name, "error": str(exc)})
            skipped.append(f"{name} ({exc})")
        except (RegistryError, UsageError) as exc:  # retried: another attempt may succeed
            memory.forget_delivery(key)
            log.error("channel failed", extra={"channel": name, "error": str(exc)})
            failed.append(name)
        else:
            sent.append(name)
    return DeliveryReport(alert.dedup_key, tuple(sent), tuple(skipped), tuple(failed))
