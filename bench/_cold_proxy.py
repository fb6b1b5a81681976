"""A recording reverse proxy on loopback for the cold-start bench.

The product and the floor reach moto and the registry through one of these, so the bench
knows which requests the handler made (to replay them in the floor, byte for byte, and
to check the floor made as many) and how long each took upstream. Both sides pay the same
extra hop. Headers go upstream unchanged (Host included: SigV4 signs it, and the registry
builds upload locations from it, which then point back at this proxy).
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from support.loopback import LoopbackServer

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailers", "upgrade"}
)
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/(?P<service>[^/]+)/aws4_request")


@dataclass(frozen=True)
class Exchange:
    """One request as the client sent it, and what upstream answered."""

    server: str
    """The proxy's `host:port` the request was sent to."""
    at: float
    """`time.monotonic()` when it arrived (orders the requests of both proxies)."""
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    status: int
    upstream_ms: float

    @property
    def service(self) -> str:
        """The AWS service a SigV4-signed request is for (its credential scope), else
        `registry` (the OCI data plane is authenticated with ECR's token, not SigV4)."""
        for name, value in self.headers:
            if name.lower() == "authorization":
                found = _SCOPE.search(value)
                if found is not None:
                    return found["service"]
        return "registry"


class RecordingProxy:
    """Forwards every request to `upstream` (`host:port`) and records it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(self._handler_class())

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> RecordingProxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def take(self) -> list[Exchange]:
        """The exchanges recorded since the last `take` (in arrival order)."""
        with self._lock:
            taken, self.exchanges = self.exchanges, []
        return taken

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body leave in separate writes: without this, Nagle holds the
            # body until the client's delayed ACK (40 ms a request on Linux)
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                return  # the bench prints JSON only

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    parts: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self) -> None:
                body = self._body()
                headers = tuple(
                    (k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                )
                arrived = time.monotonic()
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                started = time.perf_counter()
                try:
                    upstream.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in headers:
                        if name.lower() != "content-length":
                            upstream.putheader(name, value)
                    if body or self.command in ("POST", "PUT", "PATCH"):
                        upstream.putheader("Content-Length", str(len(body)))
                    upstream.endheaders(body or None)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    elapsed = (time.perf_counter() - started) * 1000
                    head = self.command == "HEAD"
                    self.send_response(answer.status, answer.reason)
                    for name, value in answer.getheaders():
                        low = name.lower()
                        if low in _HOP_BY_HOP or (low == "content-length" and not head):
                            continue  # HEAD keeps upstream's length: the body it describes
                        self.send_header(name, value)
                    if not head:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if not head:
                        self.wfile.write(payload)
                finally:
                    upstream.close()
                proxy._record(
                    Exchange(
                        proxy.host,
                        arrived,
                        self.command,
                        self.path,
                        headers,
                        body,
                        answer.status,
                        elapsed,
                    )
                )

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler
