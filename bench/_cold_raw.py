"""What both cold-start children share (imported after their first mark; standard library
only, so product and floor pay the same): hiding the packages a deployed function lacks,
and the floor's replay of the product's requests, raw."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__ = ["Hidden", "send_raw"]


class Hidden:
    """A meta path finder that makes the packages a deployed function would not have
    missing: an optional import of one fails as it would on the platform."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (not deployed)", name=name)
        return None


def send_raw(
    requests: Iterable[Mapping[str, Any]], tls: Mapping[str, Any] | None = None
) -> Callable[[], None]:
    """Send each recorded request as it was (one keep-alive connection per server, one
    after another) and read its answer; returns what closes the connections (called
    after the child's last mark). `tls`: the servers (`host:port`) spoken to over TLS,
    each with its `ssl.SSLContext`."""
    import http.client

    connections: dict[str, http.client.HTTPConnection] = {}
    for request in requests:
        host = request["host"]
        connection = connections.get(host)
        if connection is None and tls and host in tls:
            connection = connections[host] = http.client.HTTPSConnection(
                host, timeout=60, context=tls[host]
            )
        elif connection is None:
            connection = connections[host] = http.client.HTTPConnection(host, timeout=60)
        connection.putrequest(
            request["method"], request["target"], skip_host=True, skip_accept_encoding=True
        )
        for name, value in request["headers"]:
            connection.putheader(name, value)
        body = request["body"].encode("latin-1")
        connection.endheaders(body or None)
        connection.getresponse().read()

    def close() -> None:
        for connection in connections.values():
            connection.close()

    return close
