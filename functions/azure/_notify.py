"""The `notify` function: one alert from the alerts custom topic → the policy's Slack, Teams
and webhook channels.

The gate functions publish every alert to the topic (`REGWARDEN_ALERTS_TOPIC`, the
`eventgrid` channel: a CloudEvent whose `data` is the alert with `team`, `severity`,
`verdict` on top); teams subscribe to it with advanced filters, and this function's own
subscription hands each event here (`func.EventGridEvent` or `func.CloudEvent`, the
worker's types). The alert is read back (`notify.eventgrid_alert`) and routed as the
policy routes it (`notify.routed_to`), except to the alerts topic itself (publishing back
would loop). Each (alert, channel) delivery is remembered in the ledger
(`notify.deliver`), so Event Grid's redelivery sends only to the channels still missing
it; a channel that failed raises, and Event Grid retries the event, then dead-letters it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _app
from ._failures import event_key, noting

if TYPE_CHECKING:
    from regwarden.notify import Notifier

__all__ = ["FUNCTION", "deliver"]

FUNCTION = "notify"


def deliver(event: Any) -> dict[str, Any]:
    """Send the alert `event` carries to every channel the policy routes it to."""

    def work(st: _app.State) -> dict[str, Any]:
        from pydantic import ValidationError

        from regwarden.errors import IntakeError
        from regwarden.notify import deliver, eventgrid_alert, routed_to

        data = event.get_json()
        if not isinstance(data, dict):
            raise IntakeError(f"Event Grid event {event.id}: its data is not a regwarden alert")
        try:
            alert = eventgrid_alert(data)
        except (ValidationError, ValueError) as exc:
            raise IntakeError(
                f"Event Grid event {event.id}: not a regwarden alert ({exc})"
            ) from None
        report = deliver(
            alert,
            routed_to(st.policy.notifications, alert),
            lambda name: _channel(st, name),
            st.ledger,
            now=_app.CLOCK(),
            unavailable="the alerts topic itself",
        )
        report.raise_for_failures()
        return {"alert": report.alert, "sent": list(report.sent), "skipped": list(report.skipped)}

    key = event_key(str(event.id))
    return _app.run(FUNCTION, noting(FUNCTION, key, work, clock=_app.now))


def _channel(st: _app.State, name: str) -> Notifier | None:
    """The channel `name`, built on first use (its secrets are fetched then); None for the
    alerts topic this function is subscribed to."""
    from regwarden.notify import build_channel
    from regwarden.policy import EventGridChannelConfig

    if name not in st.channels:
        config = st.policy.notifications.channels[name]
        loop = isinstance(config, EventGridChannelConfig) and config.endpoint.raw.rstrip("/") == (
            st.settings.alerts_topic or ""
        ).rstrip("/")
        st.channels[name] = None if loop else build_channel(st.policy, name, st.secrets)
    return st.channels[name]
