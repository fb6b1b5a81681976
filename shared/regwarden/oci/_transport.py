"""Overall deadlines for registry calls, enforced on every socket operation.

httpx's timeouts bound each read, write or connect on its own: a registry that answers one
byte every second never trips a 30 s read timeout, through the status line, the headers or
the body, and holds a worker for as long as it likes. Here each operation gets at most the
time left before the deadline of the call it belongs to, so the call ends at its deadline
whatever the peer does.

The deadline lives in a context variable set around each call (`deadline_within`); the
network backend reads it on every operation of the pooled connections, whichever call
happens to use them. Threads start with no deadline: each call sets its own.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextvars import ContextVar

import httpcore
import httpx

from ..errors import UsageError

_DEADLINE: ContextVar[float | None] = ContextVar("regwarden_oci_deadline", default=None)


@contextlib.contextmanager
def deadline_within(seconds: float) -> Iterator[float]:
    """Bound everything inside to `seconds` from now, or to the enclosing deadline if that
    comes first; yields the deadline (a `time.monotonic()` value)."""
    when = time.monotonic() + seconds
    outer = _DEADLINE.get()
    if outer is not None:
        when = min(when, outer)
    token = _DEADLINE.set(when)
    try:
        yield when
    finally:
        _DEADLINE.reset(token)


def time_left() -> float | None:
    """Seconds until the current call's deadline (negative once passed); None without one."""
    when = _DEADLINE.get()
    return None if when is None else when - time.monotonic()


def _bounded(timeout: float | None, late: type[httpcore.TimeoutException]) -> float | None:
    left = time_left()
    if left is None:
        return timeout
    if left <= 0:
        raise late("the call's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# Most specific first: the first match wins.
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    """httpcore's exceptions as the httpx ones the client handles."""
    try:
        yield
    except Exception as exc:
        for core, mapped in _EXCEPTIONS:
            if isinstance(exc, core):
                raise mapped(str(exc) or type(exc).__name__, request=request) from exc
        raise


class _Body(httpx.SyncByteStream):
    def __init__(self, inner: Iterable[bytes], request: httpx.Request) -> None:
        self._inner = inner
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx(self._request):
            yield from self._inner

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if callable(close):
            with _as_httpx(self._request):
                close()


class DeadlineTransport(httpx.BaseTransport):
    """HTTP/1.1 connection pools (direct, or through the environment's HTTP(S) proxy, as
    httpx's own transport would) whose every socket operation keeps the call's deadline."""

    def __init__(
        self,
        *,
        limits: httpx.Limits,
        ca_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ca_file`: extra authorities (a stand-in's test CA), on top of httpx's default
        trust store; `ssl_context`: one made already (its owner's other clients share it:
        loading a trust store costs 10-40 ms), instead of a new one from `ca_file`."""
        if ssl_context is None:
            ssl_context = httpx.create_ssl_context()
            if ca_file is not None:
                ssl_context.load_verify_locations(cafile=ca_file)
        self._ssl = ssl_context
        self._limits = limits
        self._backend = _DeadlineBackend()
        self._direct = httpcore.ConnectionPool(
            ssl_context=self._ssl,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self._backend,
        )
        self._proxies: dict[str, httpcore.HTTPProxy] = {}
        self._lock = threading.Lock()
        # the environment's proxies are read once, as httpx reads them when a client is
        # made, and each (scheme, host)'s route kept: reading them per request walked the
        # whole environment each time, ~0.25 ms of CPU per request (bench/report.py)
        self._env_proxies = urllib.request.getproxies_environment()
        self._routes: dict[tuple[str, str], httpcore.ConnectionPool] = {}

    def _pool_for(self, url: httpx.URL) -> httpcore.ConnectionPool:
        route = (url.scheme, url.host)
        pool = self._routes.get(route)
        if pool is not None:
            return pool
        proxy = self._env_proxies.get(url.scheme) or self._env_proxies.get("all")
        if not proxy or urllib.request.proxy_bypass(url.host):
            pool = self._direct
        else:
            with self._lock:
                pool = self._proxy_pool(proxy, url)
        self._routes[route] = pool
        return pool

    def _proxy_pool(self, proxy: str, url: httpx.URL) -> httpcore.HTTPProxy:
        if proxy not in self._proxies:
            parsed = httpx.URL(proxy if "://" in proxy else f"http://{proxy}")
            if parsed.scheme not in ("http", "https"):
                raise UsageError(
                    f"proxy for {url.scheme} from the environment: got {parsed.scheme!r}, "
                    "expected an http or https proxy"
                )
            auth = (parsed.username, parsed.password) if parsed.username else None
            self._proxies[proxy] = httpcore.HTTPProxy(
                proxy_url=str(parsed.copy_with(username=None, password=None)),
                proxy_auth=auth,
                ssl_context=self._ssl,
                max_connections=self._limits.max_connections,
                max_keepalive_connections=self._limits.max_keepalive_connections,
                keepalive_expiry=self._limits.keepalive_expiry,
                network_backend=self._backend,
            )
        return self._proxies[proxy]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx(request):
            response = self._pool_for(request.url).handle_request(core)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, request),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._direct.close()
        for pool in self._proxies.values():
            pool.close()
