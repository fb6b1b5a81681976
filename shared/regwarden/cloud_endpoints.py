"""Where a cloud's API is reached when it is not at the cloud's own address: the one rule
every cloud's client helper (`gcp_clients`, `azure_clients`) applies to an endpoint named
in the environment. https anywhere; plain http on loopback only (a stand-in in tests),
which callers then reach without credentials, so no token travels in the clear.
Standard library only: imported on every cold start."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from .errors import UsageError

__all__ = ["endpoint_override", "is_loopback"]


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (not a name that may resolve to one)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_override(variable: str, env: Mapping[str, str]) -> str | None:
    """The endpoint the environment variable `variable` names (`https://…`, or `http://`
    on loopback only, without a trailing slash); None when unset. Raises UsageError for
    anything else."""
    value = env.get(variable, "").strip().rstrip("/")
    if not value:
        return None
    parts = urlsplit(value)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return value
    if parts.scheme == "http" and is_loopback(host):
        return value
    raise UsageError(
        f"{variable}: got {value!r}, expected https://HOST[:PORT] (http:// only on loopback)"
    )
