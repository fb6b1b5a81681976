"""The `access` section: who may pull and push a repository's images, from where, and which
accesses alert (issue #16; `regwarden.access` evaluates it)."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field, StrictBool, StrictInt

from ._base import PolicyModel
from ._values import PositiveDuration

__all__ = ["DEFAULT_DEDUPE_WINDOW", "Access", "AccessAlertOn"]

DEFAULT_DEDUPE_WINDOW = timedelta(minutes=10)


def _principal_glob(value: str) -> str:
    if not value.strip():
        raise ValueError("got an empty glob, expected a principal glob such as 'ci-*'")
    if value != value.strip():
        raise ValueError(f"got {value!r}, expected a glob without leading or trailing spaces")
    return value


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(
            f"got {value!r}, expected a CIDR such as 10.0.0.0/8 or 2001:db8::/32 ({exc})"
        ) from None
    return value


PrincipalGlob = Annotated[str, AfterValidator(_principal_glob)]
Network = Annotated[str, AfterValidator(_network)]


class AccessAlertOn(PolicyModel):
    """Which accesses raise an alert."""

    blocked_pull: StrictBool = True
    """A pull of a digest that is quarantined, FAILED or PENDING (also from the quarantine
    location). Default: on."""

    unexpected_pusher: StrictBool | None = None
    """A push by a principal outside `pushers` or from outside `networks`. Default: on
    when `pushers` or `networks` is set."""

    unexpected_puller: StrictBool | None = None
    """A pull by a principal outside `pullers` or from outside `networks`. Default: on
    when `pullers` or `networks` is set."""

    pull_rate: StrictInt | None = Field(default=None, ge=1)
    """Pulls per minute by one principal above which an alert is raised (counted per
    process: each receiver or function instance counts its own). Default: off."""


class Access(PolicyModel):
    """Access monitoring: pulls and pushes as the registry reports them. Alerts go through
    `notifications` like verdicts (routes match `action: access`); the first access of a
    kind by a principal to a digest alerts at once, further ones within `dedupeWindow` are
    counted and sent as one summary when the window closes."""

    pushers: tuple[PrincipalGlob, ...] | None = None
    """Globs over the principals allowed to push: IAM role ARNs
    (`arn:aws:iam::*:role/ci-*`), service accounts, registry usernames. `*` matches any
    run of characters (also `/` and `:`), `?` one character; case matters. Unset: anyone;
    empty: nobody."""

    pullers: tuple[PrincipalGlob, ...] | None = None
    """Globs over the principals allowed to pull, as `pushers`. Unset: anyone. A pull that
    names no principal (anonymous) matches no glob."""

    networks: tuple[Network, ...] | None = None
    """CIDRs every pull and push must come from. Unset: anywhere. An access whose source
    reports no address is not checked."""

    alert_on: AccessAlertOn = AccessAlertOn()
    """Which accesses alert."""

    dedupe_window: PositiveDuration = Field(
        default=DEFAULT_DEDUPE_WINDOW, json_schema_extra={"default": "10m"}
    )
    """How long further accesses of the same kind, principal and digest are counted into
    one summary instead of alerting again. Default: 10m."""

    @property
    def alerts_unexpected_pusher(self) -> bool:
        if self.alert_on.unexpected_pusher is not None:
            return self.alert_on.unexpected_pusher
        return self.pushers is not None or self.networks is not None

    @property
    def alerts_unexpected_puller(self) -> bool:
        if self.alert_on.unexpected_puller is not None:
            return self.alert_on.unexpected_puller
        return self.pullers is not None or self.networks is not None
