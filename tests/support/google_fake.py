"""The base of every loopback stand-in for a Google Cloud REST API (Artifact Registry,
Artifact Analysis, Firestore, Pub/Sub, Cloud Tasks, Secret Manager, Cloud Run).

The real client libraries are driven at it with the REST transport
(`regwarden.gcp_clients.client_kwargs` and `REGWARDEN_GCP_ENDPOINT_<SERVICE>`), so what is
faked is only the server: routes answer in the shapes Google's API definitions give
(camelCase JSON, enums by name, `nextPageToken`), errors in Google's error envelope
(`{"error": {"code", "message", "status"}}`), which the clients turn into
`google.api_core.exceptions`.

    class FakeTasks(GoogleFake):
        def __init__(self) -> None:
            super().__init__()
            self.route("POST", r"/v2/(?P<queue>projects/[^/]+/locations/[^/]+/queues/[^/:]+)/tasks",
                       self._create_task)

        def _create_task(self, request: Request) -> Reply:
            return 200, {...}

    with FakeTasks() as tasks:
        env = {"REGWARDEN_GCP_ENDPOINT_CLOUDTASKS": tasks.url}

`fail_next(method, pattern, status, times)` answers the next matching requests with an
error (429 for quotas, 503, 409 …) before the route runs; `requests` records every call.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from support.loopback import LoopbackServer

__all__ = ["GoogleFake", "Reply", "Request", "google_error"]

#: google.rpc.Code names by HTTP status, as Google's error envelope spells them.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

Reply = tuple[int, Any]
"""(HTTP status, JSON body). A body of None sends `{}`."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    """URL-decoded path."""
    raw_path: str
    """The path as sent (percent-encoding kept: AR package ids encode `/` as `%2F`)."""
    query: dict[str, list[str]]
    body: Any
    """Decoded JSON body, or None."""
    headers: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    """The route pattern's named groups (matched against the raw path, then decoded)."""

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


def google_error(status: int, message: str) -> Reply:
    """Google's error envelope, which google.api_core maps to its exception classes."""
    return status, {
        "error": {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
    }


Handler = Callable[[Request], Reply]


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int
    headers: dict[str, str]


class GoogleFake:
    """A routing loopback HTTP server answering JSON the way Google's REST APIs do."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._faults: list[_Fault] = []
        self.lock = threading.RLock()
        """Held while a route runs: routes may mutate the fake's state freely."""
        self.requests: list[Request] = []
        self._server = LoopbackServer(self._handler_class())

    # -- configuration ---------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """`pattern` is a regular expression matched in full against the raw path (query
        string excluded); its named groups become `request.params`, URL-decoded."""
        self._routes.append((method.upper(), re.compile(pattern), handler))

    def fail_next(
        self,
        method: str,
        pattern: str,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `times` requests matching (method, pattern) with `status`."""
        with self.lock:
            self._faults.append(
                _Fault(method.upper(), re.compile(pattern), status, times, dict(headers or {}))
            )

    def calls(self, method: str, pattern: str) -> list[Request]:
        """The recorded requests matching (method, raw-path pattern)."""
        rx = re.compile(pattern)
        with self.lock:
            return [
                r for r in self.requests if r.method == method.upper() and rx.fullmatch(r.raw_path)
            ]

    # -- serving ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`: the value for `REGWARDEN_GCP_ENDPOINT_<SERVICE>`."""
        return self._server.url

    @property
    def host(self) -> str:
        return self._server.host

    def start(self) -> GoogleFake:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Any:  # the subclass, for `with FakeX() as x`
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def dispatch(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        """Run the fault list, then the first matching route."""
        with self.lock:
            self.requests.append(request)
            for fault in self._faults:
                if (
                    fault.remaining > 0
                    and fault.method == request.method
                    and fault.pattern.fullmatch(request.raw_path)
                ):
                    fault.remaining -= 1
                    status, body = google_error(fault.status, f"injected {fault.status}")
                    return status, body, fault.headers
            for method, pattern, handler in self._routes:
                if method != request.method:
                    continue
                match = pattern.fullmatch(request.raw_path)
                if match is None:
                    continue
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                status, body = handler(
                    Request(
                        request.method,
                        request.path,
                        request.raw_path,
                        request.query,
                        request.body,
                        request.headers,
                        params,
                    )
                )
                return status, body, {}
        status, body = google_error(404, f"no route for {request.method} {request.raw_path}")
        return status, body, {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, Nagle holds the
            # second until the client's delayed ACK (40 ms a request on Linux).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                request = Request(
                    method=self.command,
                    path=unquote(parts.path),
                    raw_path=parts.path,
                    query=parse_qs(parts.query),
                    body=body,
                    headers={k.lower(): v for k, v in self.headers.items()},
                )
                status, payload, headers = fake.dispatch(request)
                data = json.dumps({} if payload is None else payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

        return _Handler
