"""What the cloud providers (GAR, ACR) share around their OCI data plane: the registry
client on a transport pinned to the registry's own hosts, the throttling watchers, and
the small conversions of their SDKs' records.

The pin is security: a cloud data plane carries a credential (GAR's access token, ACR's
refresh token) that must reach the registry and nothing else — not a Bearer challenge's
realm elsewhere, not a redirect.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ..errors import AuthError
from ._base import THROTTLE_STATUS

if TYPE_CHECKING:
    import ssl

    from ..oci import Credentials, RegistryClient
    from . import ProviderOptions

log = logging.getLogger("regwarden.providers")

__all__ = [
    "THROTTLE_ATTEMPTS",
    "PinnedTransport",
    "ThrottleWatchers",
    "bare_host",
    "call_throttled",
    "pinned_client",
    "retry_after",
    "utc",
]

_T = TypeVar("_T")

THROTTLE_ATTEMPTS = 4
"""Tries of one control-plane call answered 429/503 before it fails (`throttled`)."""
_MAX_BACKOFF = 8.0
_MAX_RETRY_AFTER = 30.0


def utc(value: object) -> datetime | None:
    """An SDK's datetime as an aware UTC one (naive ones are UTC); None for anything else."""
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def bare_host(host: str) -> str:
    """`host[:port]` of a host that may be given as `scheme://host[:port]`."""
    return host.split("://", 1)[-1].rstrip("/").lower()


class PinnedTransport:
    """An httpx transport that sends `Authorization` only to `allowed` hosts (dropped,
    with a warning, elsewhere) and, with `secret`, refuses outright a request to another
    host whose body carries it (a token request holding a refresh token)."""

    def __init__(
        self,
        inner: httpx.BaseTransport,
        allowed: Iterable[str],
        *,
        secret: bytes | None = None,
        what: str = "credential",
    ) -> None:
        self._inner = inner
        self._allowed = frozenset(bare_host(h) for h in allowed)
        self._secret = secret
        self._what = what

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        where = request.url.netloc.decode().lower()
        if where not in self._allowed:
            if self._secret is not None and self._secret in request.read():
                raise AuthError(
                    f"token realm {request.url.host} is not the registry's host; "
                    f"refusing to send it the {self._what}"
                )
            if "authorization" in request.headers:
                log.warning("not sending the registry's credentials to %s", request.url.host)
                del request.headers["authorization"]
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class ThrottleWatchers:
    """The callbacks `Registry.watch_throttling` registers, told of every 429/503."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: list[Callable[[float | None], None]] = []

    def add(self, callback: Callable[[float | None], None]) -> Callable[[], None]:
        """Register `callback`; returns the undo."""
        with self._lock:
            self._watchers.append(callback)

        def undo() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._watchers.remove(callback)

        return undo

    def notify(self, delay: float | None) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for callback in watchers:
            callback(delay)


def retry_after(exc: Any) -> float | None:
    """The seconds a throttling answer's `Retry-After` asks for, if it says (the SDK
    exception's `response.headers`, as both Google's and Azure's carry them)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def call_throttled(
    thunk: Callable[[], _T],
    *,
    throttled: Callable[[Exception], bool],
    watchers: ThrottleWatchers,
    sleep: Callable[[float], None],
) -> _T:
    """`thunk()`, tried again while it raises what `throttled` recognises (a 429/503 from
    the cloud's SDK, whose own retries are off): each time the watchers are told, then the
    wait is the answer's `Retry-After` (at most 30 s) or a doubling backoff (0.25 s up to
    8 s). After `THROTTLE_ATTEMPTS` the last exception is raised for the caller to
    translate; any other exception at once."""
    attempt = 0
    while True:
        try:
            return thunk()
        except Exception as exc:
            if not throttled(exc):
                raise
            delay = retry_after(exc)
            watchers.notify(delay)
            attempt += 1
            if attempt >= THROTTLE_ATTEMPTS:
                raise
            backoff = min(_MAX_BACKOFF, 0.25 * 2 ** (attempt - 1))
            sleep(min(delay, _MAX_RETRY_AFTER) if delay is not None else backoff)


def pinned_client(
    data_plane_host: str,
    credentials: Credentials | None,
    options: ProviderOptions,
    allowed: Iterable[str],
    watchers: ThrottleWatchers,
    *,
    ca_file: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    secret: bytes | None = None,
    what: str = "credential",
) -> RegistryClient:
    """The OCI client of a cloud registry's `/v2/`: credentials only to `allowed`, and
    every throttled retry told to `watchers`. `ssl_context`: the provider's own (its token
    service's), shared rather than a trust store loaded again from `ca_file`."""
    from ..oci import DeadlineTransport, RegistryClient

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    inner = DeadlineTransport(limits=limits, ca_file=ca_file, ssl_context=ssl_context)
    transport = PinnedTransport(inner, allowed, secret=secret, what=what)
    client = RegistryClient(
        data_plane_host,
        credentials=credentials,
        insecure=options.insecure,
        transport=transport,  # type: ignore[arg-type]  # an httpx transport by duck type
        deadline=options.deadline,
        blob_deadline=options.blob_deadline,
        max_index_children=options.max_index_children,
    )

    def on_retry(status: int | None, delay: float) -> None:
        if status in THROTTLE_STATUS:
            watchers.notify(delay)

    client.on_retry = on_retry
    return client
