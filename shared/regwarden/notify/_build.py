"""The policy's alert channels as senders, by channel type."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NotImplementedYet
from ._alert import Alert
from ._channels import Notifier, SlackChannel, StreamChannel, TeamsChannel, WebhookChannel
from ._sns import SnsChannel

if TYPE_CHECKING:
    from ..policy import Policy

__all__ = ["build_channels"]


class _Unsupported:
    """A channel this runtime cannot deliver to (e.g. SNS outside AWS): says so per alert."""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self._kind = kind

    def send(self, alert: Alert) -> None:
        raise NotImplementedYet(
            f"channel {self.name!r}: {self._kind} delivery is not available in this runtime"
        )


def build_channels(policy: Policy, env: Mapping[str, str]) -> dict[str, Notifier]:
    """The policy's channels as senders; `secret://` values come from `env`."""
    from .. import policy as p

    def value(location: p.Location) -> str:
        if location.scheme == "secret":
            return p.resolve_secret(location.target, env)
        return location.raw

    out: dict[str, Notifier] = {}
    for name, ch in policy.notifications.channels.items():
        if isinstance(ch, p.SlackChannelConfig):
            out[name] = SlackChannel(name, value(ch.url))
        elif isinstance(ch, p.TeamsChannelConfig):
            out[name] = TeamsChannel(name, value(ch.url))
        elif isinstance(ch, p.WebhookChannelConfig):
            key = value(ch.secret).encode() if ch.secret is not None else None
            secret_url = ch.url.scheme == "secret"  # then its path is the credential too
            out[name] = WebhookChannel(name, value(ch.url), secret=key, secret_url=secret_url)
        elif isinstance(ch, p.StdoutChannelConfig):
            out[name] = StreamChannel(name, format=ch.format)
        elif isinstance(ch, p.FileChannelConfig):
            out[name] = StreamChannel(name, path=(policy.base_dir or Path.cwd()) / ch.path)
        elif isinstance(ch, p.SnsChannelConfig):
            out[name] = SnsChannel(name, ch.topic_arn)
        else:
            out[name] = _Unsupported(name, ch.type)
    return out
