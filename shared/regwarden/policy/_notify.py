"""`notifications`: named channels and the routes that pick them."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from ..model import Severity
from ._base import PolicyModel
from ._glob import Glob
from ._location import ENDPOINT_SCHEMES, SECRET_SCHEMES, Location, Schemes
from ._values import PolicySeverity

__all__ = [
    "ActionKind",
    "Channel",
    "EventGridChannelConfig",
    "FileChannelConfig",
    "Notifications",
    "PubSubChannelConfig",
    "Route",
    "RouteMatch",
    "SlackChannelConfig",
    "SnsChannelConfig",
    "StdoutChannelConfig",
    "TeamsChannelConfig",
    "WebhookChannelConfig",
]

#: The action kinds a route can match; the same names as `regwarden.model.Action.kind`,
#: and `access` for access alerts (a pull or push worth telling, `regwarden.access`).
ActionKind = Literal[
    "quarantine", "release", "promote", "tag", "untag", "delete", "rollback", "none", "access"
]

_Endpoint = Annotated[Location, Schemes(ENDPOINT_SCHEMES, "a channel endpoint")]
_Secret = Annotated[Location, Schemes(SECRET_SCHEMES, "a channel secret")]
_SNS_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?")
_PUBSUB_TOPIC = re.compile(r"projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/topics/[A-Za-z][\w.~+%-]{2,254}")


class SlackChannelConfig(PolicyModel):
    """Slack incoming webhook (Block Kit message)."""

    type: Literal["slack"]
    url: _Endpoint
    """The incoming-webhook URL; normally `secret://NAME`."""


class TeamsChannelConfig(PolicyModel):
    """Microsoft Teams workflow/incoming webhook (Adaptive Card)."""

    type: Literal["teams"]
    url: _Endpoint
    """The webhook URL; normally `secret://NAME`."""


class WebhookChannelConfig(PolicyModel):
    """Generic HTTPS webhook receiving CloudEvents JSON."""

    type: Literal["webhook"]
    url: _Endpoint
    """https:// (http:// only for loopback) or `secret://NAME`."""

    secret: _Secret | None = None
    """HMAC-SHA256 signing key (`secret://NAME`); unset: requests are not signed."""


class SnsChannelConfig(PolicyModel):
    """AWS SNS topic."""

    type: Literal["sns"]
    topic_arn: str
    """`arn:aws:sns:REGION:ACCOUNT:TOPIC`."""

    @field_validator("topic_arn")
    @classmethod
    def _check_arn(cls, value: str) -> str:
        if not _SNS_ARN.fullmatch(value):
            raise ValueError(f"got {value!r}, expected arn:aws:sns:REGION:ACCOUNT:TOPIC")
        return value


class PubSubChannelConfig(PolicyModel):
    """Google Cloud Pub/Sub topic."""

    type: Literal["pubsub"]
    topic: str
    """`projects/PROJECT/topics/TOPIC`."""

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if not _PUBSUB_TOPIC.fullmatch(value):
            raise ValueError(f"got {value!r}, expected projects/PROJECT/topics/TOPIC")
        return value


class EventGridChannelConfig(PolicyModel):
    """Azure Event Grid custom topic (CloudEvents schema)."""

    type: Literal["eventgrid"]
    endpoint: _Endpoint
    """The topic endpoint, `https://TOPIC.REGION-1.eventgrid.azure.net/api/events`."""

    key: _Secret | None = None
    """The topic access key (`secret://NAME`); unset: use the function's managed identity."""


class StdoutChannelConfig(PolicyModel):
    """Print alerts on standard output (local runs; cloud logs)."""

    type: Literal["stdout"]
    format: Literal["text", "json"] = "json"
    """`json`: one CloudEvents JSON object per line; `text`: one human line per alert."""


class FileChannelConfig(PolicyModel):
    """Append alerts as JSON lines to a local file."""

    type: Literal["file"]
    path: str = Field(min_length=1)
    """The file to append to; a relative path is relative to the policy file's directory."""


Channel = Annotated[
    Union[  # noqa: UP007  # one member per `type`
        SlackChannelConfig,
        TeamsChannelConfig,
        WebhookChannelConfig,
        SnsChannelConfig,
        PubSubChannelConfig,
        EventGridChannelConfig,
        StdoutChannelConfig,
        FileChannelConfig,
    ],
    Field(discriminator="type"),
]
"""A notification channel, chosen by its `type`."""


class RouteMatch(PolicyModel):
    """Which alerts a route takes. Every key that is set must match; a list matches when
    any of its items does; an empty match takes every alert."""

    team: str | None = None
    """The owning team (from the repository's `team`)."""

    severity: tuple[PolicySeverity, ...] | None = Field(default=None, min_length=1)
    """The alert's severity is one of these (exact; list every level you want)."""

    action: tuple[ActionKind, ...] | None = Field(default=None, min_length=1)
    """What regwarden did: quarantine, release, promote, tag, untag, delete, rollback, none;
    `access` for access alerts (pulls and pushes the `access` section reports)."""

    repository: Glob | None = None
    """The repository name (no host) matches this glob."""

    def matches(
        self,
        *,
        team: str | None,
        severity: Severity | None,
        action: str | None,
        repository: str | None,
    ) -> bool:
        """Whether an alert with these attributes is taken by this route (pure)."""
        if self.team is not None and team != self.team:
            return False
        if self.severity is not None and severity not in self.severity:
            return False
        if self.action is not None and action not in self.action:
            return False
        return self.repository is None or (
            repository is not None and self.repository.matches(repository)
        )


class Route(PolicyModel):
    """Send alerts that match to the named channels."""

    match: RouteMatch = RouteMatch()
    to: tuple[str, ...] = Field(min_length=1)
    """Channel names; each must be defined under `channels`."""


class Notifications(PolicyModel):
    """Alert channels and routing. Every matching route delivers (routes are not
    first-match); a channel named by several matching routes gets the alert once."""

    channels: dict[str, Channel] = Field(default_factory=dict)
    routes: tuple[Route, ...] = ()

    def channels_for(
        self,
        *,
        team: str | None,
        severity: Severity | None,
        action: str | None,
        repository: str | None,
    ) -> tuple[str, ...]:
        """Names of the channels an alert goes to, in route order, without duplicates."""
        names: dict[str, None] = {}
        for route in self.routes:
            if route.match.matches(
                team=team, severity=severity, action=action, repository=repository
            ):
                names.update(dict.fromkeys(route.to))
        return tuple(names)
