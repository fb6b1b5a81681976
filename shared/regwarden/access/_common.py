"""Helpers the access parsers share."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from functools import lru_cache

from ..errors import InvalidReference
from ..intake import valid_host, valid_repository
from ..jsondoc import Node
from ..reference import validate_digest

__all__ = [
    "address_host",
    "fast_digest",
    "fast_host",
    "fast_repository",
    "fast_tag",
    "fast_time",
    "is_ip",
    "opt_text_at",
]

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")

# -- the fast path: plain checks for well-formed input, None for anything else -------------
# The parsers try these first and fall back to the `jsondoc` readers (which name the path
# of what is wrong) whenever one answers None: pulls come by the thousand, nearly all of
# them well formed, and the readers' per-field nodes cost more than the checks.


@lru_cache(maxsize=4096)
def fast_repository(value: str) -> str | None:
    return value if valid_repository(value) else None


@lru_cache(maxsize=1024)
def fast_host(value: str) -> str | None:
    return value if valid_host(value) else None


@lru_cache(maxsize=8192)
def fast_digest(value: str) -> str | None:
    try:
        return validate_digest(value)
    except InvalidReference:
        return None


def fast_tag(value: object) -> str | None:
    return value if isinstance(value, str) and _TAG.fullmatch(value) else None


def fast_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not _TIME.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def address_host(addr: str | None) -> str | None:
    """The host part of a client address as registries report it: `10.0.4.21:51734` →
    `10.0.4.21`, `[2001:db8::1]:443` → `2001:db8::1`, a bare address or name as is."""
    if addr is None:
        return None
    text = addr.strip()
    if not text:
        return None
    if text.startswith("["):
        end = text.find("]")
        return text[1:end] if end > 1 else None
    if text.count(":") == 1:  # host:port (an IPv6 literal has several colons)
        host, _, port = text.partition(":")
        if port.isdigit():
            return host or None
    return text


def opt_text_at(node: Node, *names: str) -> str | None:
    """The first present, non-empty string among `node`'s members `names` (case as
    written), or None. A member that is present but not a string fails with its path."""
    if not node.present:
        return None
    for name in names:
        if node.has(name):
            value = node.field(name).opt_text()
            if value is not None:
                return value
    return None
