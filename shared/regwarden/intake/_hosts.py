"""Which registry hosts regwarden may contact, when the host comes from an event.

A webhook names its registry (`request.host`, `resource_url`); regwarden must not contact
whatever host an event names (SSRF). `regwarden serve` contacts only the hosts its
configuration lists. Hosts are compared case-insensitively with default ports dropped
(`Registry.Example.com:443` is `registry.example.com`) and Docker Hub's aliases as one.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import HostNotAllowed, UsageError
from ..model import ImageEvent
from ._common import valid_host

__all__ = [
    "allowed_host_set",
    "check_event_hosts",
    "host_allowed",
    "host_not_allowed",
    "normalize_host",
    "parse_host",
]

_DEFAULT_PORTS = frozenset({"443", "80"})
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def _split_port(name: str) -> tuple[str, str | None]:
    if name.startswith("["):  # [v6]:port
        end = name.find("]")
        rest = name[end + 1 :] if end >= 0 else ""
        return (name[: end + 1], rest[1:]) if rest.startswith(":") else (name, None)
    base, sep, port = name.rpartition(":")
    return (base, port) if sep and ":" not in base else (name, None)


def normalize_host(host: str) -> str:
    """`host[:port]` in the one form used for comparisons: lower case, no default port,
    `docker.io` for Docker Hub's names."""
    name = host.strip().lower()
    base, port = _split_port(name)
    if port in _DEFAULT_PORTS:
        name = base
    return "docker.io" if base in _HUB_ALIASES else name


def parse_host(text: str, *, what: str) -> str:
    """A registry host given on the command line or in the environment, normalised;
    UsageError naming `what` when it is not a `host[:port]`."""
    value = text.strip()
    if "://" in value:
        bare = value.split("://", 1)[1].split("/", 1)[0]
        raise UsageError(
            f"invalid {what} {text!r}: expected host[:port] without a scheme",
            hint=f"use {bare!r}",
        )
    if not valid_host(value):
        raise UsageError(
            f"invalid {what} {text!r}: expected a registry host[:port] such as "
            "'registry.example.com' or '127.0.0.1:5000' (no path)"
        )
    return normalize_host(value)


def allowed_host_set(hosts: Iterable[str]) -> frozenset[str]:
    """The normalised set of `hosts` (already valid `host[:port]` strings)."""
    return frozenset(normalize_host(h) for h in hosts)


def host_allowed(host: str, allowed: frozenset[str] | None) -> bool:
    """Whether regwarden may contact `host`; `allowed` None means any host (one-shot
    commands, where the operator named the host)."""
    return allowed is None or normalize_host(host) in allowed


def host_not_allowed(hosts: Iterable[str]) -> HostNotAllowed:
    """The error for events naming `hosts`, with the configuration that would allow them."""
    names = sorted(set(hosts))
    quoted = ", ".join(repr(h) for h in names)
    what = f"registry host {quoted} is" if len(names) == 1 else f"registry hosts {quoted} are"
    return HostNotAllowed(
        f"{what} not configured: regwarden does not contact it",
        hint="list it in the policy's registries section "
        "(regwarden serve: or --registry HOST, or REGWARDEN_REGISTRIES)",
    )


def check_event_hosts(events: Iterable[ImageEvent], allowed: frozenset[str] | None) -> None:
    """Raise HostNotAllowed naming every host in `events` that is not allowed."""
    if allowed is None:
        return
    refused = [e.image.registry for e in events if not host_allowed(e.image.registry, allowed)]
    if refused:
        raise host_not_allowed(refused)
