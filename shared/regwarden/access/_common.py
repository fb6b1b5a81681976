"""Helpers the access parsers share."""

from __future__ import annotations

import ipaddress

from ..jsondoc import Node

__all__ = ["address_host", "is_ip", "opt_text_at"]


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
