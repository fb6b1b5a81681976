"""The policy's alert channels as senders, through `CHANNELS` (channel `type` → factory).

A channel type registers a factory where it is defined:

    @CHANNELS.register("slack")
    def _slack(name: str, config: SlackChannelConfig, context: ChannelContext) -> Notifier:
        return SlackChannel(name, context.value(config.url))

A type the policy accepts but no factory is registered for in this runtime still builds:
it says per alert that it cannot be delivered here, so one such channel never stops the
others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotImplementedYet
from ..plugins import PluginRegistry
from ._alert import Alert
from ._channels import Notifier, SlackChannel, StreamChannel, TeamsChannel, WebhookChannel
from ._eventgrid import EventGridChannel
from ._pubsub import PubSubChannel
from ._sns import SnsChannel

if TYPE_CHECKING:
    from ..policy import (
        EventGridChannelConfig,
        FileChannelConfig,
        Location,
        Policy,
        PubSubChannelConfig,
        SlackChannelConfig,
        SnsChannelConfig,
        StdoutChannelConfig,
        TeamsChannelConfig,
        WebhookChannelConfig,
    )

__all__ = ["CHANNELS", "ChannelContext", "ChannelFactory", "build_channel", "build_channels"]


@dataclass(frozen=True, slots=True)
class ChannelContext:
    """What a channel factory may use besides its own config: the environment that
    `secret://` values come from, and the directory relative paths start from."""

    env: Mapping[str, str]
    policy_dir: Path | None

    @property
    def base_dir(self) -> Path:
        """The policy file's directory (the working directory for a policy not read from a
        file): where a relative path starts."""
        return self.policy_dir or Path.cwd()

    def value(self, location: Location) -> str:
        """A location's value: `secret://NAME` resolved from `env`, anything else as written."""
        from ..policy import resolve_secret

        if location.scheme == "secret":
            return resolve_secret(location.target, self.env)
        return location.raw


ChannelFactory = Callable[[str, Any, ChannelContext], Notifier]
"""(channel name, the policy's channel model for its `type`, context) → sender."""

CHANNELS = PluginRegistry[ChannelFactory]("channel type")


class _Unsupported:
    """A channel this runtime cannot deliver to: says so per alert."""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self._kind = kind

    def send(self, alert: Alert) -> None:
        raise NotImplementedYet(
            f"channel {self.name!r}: {self._kind} delivery is not available in this runtime"
        )


def build_channels(policy: Policy, env: Mapping[str, str]) -> dict[str, Notifier]:
    """The policy's channels as senders; `secret://` values come from `env`."""
    return {name: build_channel(policy, name, env) for name in policy.notifications.channels}


def build_channel(policy: Policy, name: str, env: Mapping[str, str]) -> Notifier:
    """The policy's channel `name` as a sender (only its own secrets are read from `env`:
    a function that delivers alerts builds each channel when it first needs it)."""
    config = policy.notifications.channels[name]
    if config.type not in CHANNELS:
        return _Unsupported(name, config.type)
    context = ChannelContext(env=env, policy_dir=policy.base_dir)
    return CHANNELS.get(config.type)(name, config, context)


# -- the built-in channel types ---------------------------------------------------------------


@CHANNELS.register("slack")
def _slack(name: str, config: SlackChannelConfig, context: ChannelContext) -> Notifier:
    return SlackChannel(name, context.value(config.url))


@CHANNELS.register("teams")
def _teams(name: str, config: TeamsChannelConfig, context: ChannelContext) -> Notifier:
    return TeamsChannel(name, context.value(config.url))


@CHANNELS.register("webhook")
def _webhook(name: str, config: WebhookChannelConfig, context: ChannelContext) -> Notifier:
    key = context.value(config.secret).encode() if config.secret is not None else None
    secret_url = config.url.scheme == "secret"  # then its path is the credential too
    return WebhookChannel(name, context.value(config.url), secret=key, secret_url=secret_url)


@CHANNELS.register("stdout")
def _stdout(name: str, config: StdoutChannelConfig, context: ChannelContext) -> Notifier:
    return StreamChannel(name, format=config.format)


@CHANNELS.register("file")
def _file(name: str, config: FileChannelConfig, context: ChannelContext) -> Notifier:
    return StreamChannel(name, path=context.base_dir / config.path)


@CHANNELS.register("sns")
def _sns(name: str, config: SnsChannelConfig, context: ChannelContext) -> Notifier:
    return SnsChannel(name, config.topic_arn)


@CHANNELS.register("pubsub")
def _pubsub(name: str, config: PubSubChannelConfig, context: ChannelContext) -> Notifier:
    # the environment names the endpoint (REGWARDEN_GCP_ENDPOINT_PUBSUB) in tests
    return PubSubChannel(name, config.topic, env=context.env)


@CHANNELS.register("eventgrid")
def _eventgrid(name: str, config: EventGridChannelConfig, context: ChannelContext) -> Notifier:
    # the environment names a stand-in (REGWARDEN_AZURE_ENDPOINT_EVENTGRID) in tests
    key = context.value(config.key) if config.key is not None else None
    return EventGridChannel(name, context.value(config.endpoint), env=context.env, key=key)
