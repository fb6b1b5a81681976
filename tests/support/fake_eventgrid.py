"""A loopback HTTPS stand-in for an Event Grid custom topic's publish endpoint (the alerts
topic), recording every CloudEvent published with the credential it came with.

    with FakeEventGrid() as topic:
        env = {"REGWARDEN_AZURE_ENDPOINT_EVENTGRID": topic.url,
               "REGWARDEN_AZURE_CA_BUNDLE": topic.ca_file}
        ... publish to https://alerts.westeurope-1.eventgrid.azure.net/api/events ...
        topic.events          # the CloudEvents, as posted
        topic.posts[0].key    # its aeg-sas-key header (or .authorization)

Shapes (azure-eventgrid 4.22's basic-tier publisher, `_legacy/_publisher_client.py`,
`_legacy/_helpers.py _build_request`, `_legacy/_constants.py`; the data-plane spec
Azure/azure-rest-api-specs `specification/eventgrid/data-plane/Microsoft.EventGrid/stable/
2018-01-01/EventGrid.json`, operation `PublishCloudEventEvents`): `POST {topic path}?api-
version=2018-01-01`, `Content-Type: application/cloudevents-batch+json; charset=utf-8`,
the body a JSON array of CloudEvents 1.0; the key as `aeg-sas-key`, a Microsoft Entra
token as `Authorization: Bearer …` for the audience `https://eventgrid.azure.net/.default`.
Success is `200` with an empty body. Errors in Event Grid's envelope, `{"error": {"code",
"message"}}` (the SDK maps 401 to ClientAuthenticationError, 404 to ResourceNotFoundError,
anything else to HttpResponseError, reading only the status): `401 Unauthorized` for a
missing or wrong key/token, `400 BadRequest` for a body that is not a CloudEvents batch,
`413` for a batch over 1 MB (Event Grid's limit per event and per request).

`fail_next(status, times, headers)` answers the next publishes with an error (503 with
`Retry-After`, 400 …) before they are read; `redirect_next(location)` answers the next one
with `307 Location: …` (what a client pinned to the topic must not follow).
"""

from __future__ import annotations

import json
import secrets
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from support.fake_acr import FakeCredential, _make_tls
from support.loopback import LoopbackServer

__all__ = ["API_VERSION", "MAX_BYTES", "FakeEventGrid", "Post"]

API_VERSION = "2018-01-01"
MAX_BYTES = 1024 * 1024
_CODES = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 413: "PayloadTooLarge"}


@dataclass(frozen=True)
class Post:
    """One publish request as it arrived (answered or not)."""

    path: str
    query: dict[str, list[str]]
    content_type: str
    key: str | None
    """The `aeg-sas-key` header."""
    authorization: str | None
    status: int
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Fault:
    status: int
    remaining: int
    headers: dict[str, str]


class FakeEventGrid:
    def __init__(self, *, path: str = "/api/events", key: str = "", token: str = "") -> None:
        self.path = path
        self.key = key or secrets.token_urlsafe(24)
        """The topic access key it accepts as `aeg-sas-key`."""
        self.token = token or "aad-eg-" + secrets.token_urlsafe(12)
        """The Entra token it accepts as `Authorization: Bearer` (what `credential()` gives)."""
        self.lock = threading.Lock()
        self.posts: list[Post] = []
        self._faults: list[_Fault] = []
        self._redirects: list[str] = []
        self._dir = tempfile.TemporaryDirectory(prefix="fake-eventgrid-")
        self.ca_file, context = _make_tls(Path(self._dir.name))
        self._server = LoopbackServer(self._handler_class())
        self._server.server.socket = context.wrap_socket(
            self._server.server.socket, server_side=True
        )

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def url(self) -> str:
        """`https://127.0.0.1:PORT`: the value for `REGWARDEN_AZURE_ENDPOINT_EVENTGRID`."""
        return f"https://{self.host}"

    def env(self) -> dict[str, str]:
        return {
            "REGWARDEN_AZURE_ENDPOINT_EVENTGRID": self.url,
            "REGWARDEN_AZURE_CA_BUNDLE": self.ca_file,
        }

    def credential(self) -> FakeCredential:
        return FakeCredential(self.token)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every CloudEvent accepted (answered 200), in order."""
        with self.lock:
            return [e for p in self.posts if p.status == 200 for e in p.events]

    def fail_next(self, status: int, times: int = 1, headers: dict[str, str] | None = None) -> None:
        with self.lock:
            self._faults.append(_Fault(status, times, dict(headers or {})))

    def redirect_next(self, location: str) -> None:
        with self.lock:
            self._redirects.append(location)

    def __enter__(self) -> FakeEventGrid:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()
        self._dir.cleanup()

    # -- serving ---------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, Nagle holds the
            # second until the client's delayed ACK (40 ms a request on Linux).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._publish(self)

            def do_GET(self) -> None:
                fake._reply(self, 405, _error(405, "Only POST is allowed."))

        return _Handler

    @staticmethod
    def _reply(
        h: BaseHTTPRequestHandler,
        status: int,
        body: dict[str, Any] | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        raw = json.dumps(body).encode() if body is not None else b""
        h.send_response(status)
        if raw:
            h.send_header("Content-Type", "application/json; charset=utf-8")
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def _publish(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = parse_qs(parts.query)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        key = h.headers.get("aeg-sas-key")
        authorization = h.headers.get("Authorization")

        def seen(status: int, events: list[dict[str, Any]] | None = None) -> None:
            post = Post(
                parts.path,
                query,
                h.headers.get("Content-Type", ""),
                key,
                authorization,
                status,
                events or [],
            )
            with self.lock:
                self.posts.append(post)

        with self.lock:
            location = self._redirects.pop(0) if self._redirects else None
            fault = next((f for f in self._faults if f.remaining > 0), None)
            if fault is not None and location is None:
                fault.remaining -= 1
        if location is not None:
            seen(307)
            return self._reply(h, 307, None, {"Location": location})
        if fault is not None:
            seen(fault.status)
            return self._reply(h, fault.status, _error(fault.status, "injected"), fault.headers)
        if parts.path != self.path:
            seen(404)
            return self._reply(h, 404, _error(404, f"No topic at {parts.path}."))
        if key != self.key and authorization != f"Bearer {self.token}":
            seen(401)
            return self._reply(
                h, 401, _error(401, "The request authorization key is not authorized.")
            )
        if query.get("api-version") != [API_VERSION]:
            seen(400)
            return self._reply(h, 400, _error(400, "api-version is missing or unsupported."))
        if len(raw) > MAX_BYTES:
            seen(413)
            return self._reply(h, 413, _error(413, "The maximum size (1048576) is exceeded."))
        events = _cloudevents(h.headers.get("Content-Type", ""), raw)
        if events is None:
            seen(400)
            return self._reply(h, 400, _error(400, "The body is not a CloudEvents 1.0 batch."))
        seen(200, events)
        return self._reply(h, 200, None)


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": _CODES.get(status, "InternalServerError"), "message": message}}


def _cloudevents(content_type: str, raw: bytes) -> list[dict[str, Any]] | None:
    """The events of a CloudEvents batch; None unless every one has the required context
    attributes (`id`, `source`, `type`, `specversion` 1.0)."""
    if not content_type.startswith("application/cloudevents-batch+json"):
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, list) or not body:
        return None
    for event in body:
        if not isinstance(event, dict) or event.get("specversion") != "1.0":
            return None
        if not all(isinstance(event.get(k), str) and event[k] for k in ("id", "source", "type")):
            return None
    return body
