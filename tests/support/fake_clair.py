"""A small fake of Clair v4 (indexer and matcher in one, as `clair -mode combo` serves them)
on loopback, answering with Clair's documented shapes.

Clair itself cannot run here (it needs PostgreSQL and a vulnerability database download).
The answers are the JSON files in `tests/fixtures/clair/` (see its README: every shape comes
from Clair's OpenAPI spec, its JSON Schemas and examples at quay/clair eb22407). What the
fake does is what Clair's handlers do (`httptransport/indexer_v1.go`, `matcher_v1.go`,
`middleware/auth/httpauth_psk.go`):

- `POST /indexer/api/v1/index_report` takes a Manifest (`hash`, `layers[{hash, uri,
  headers}]`, no other keys: 400 otherwise), fetches every layer from its `uri` with the
  given headers (or, given none, with the fake's own registry credentials, as Clair's own
  registry configuration would), checks each against its digest, and answers 201 with an
  IndexReport: `IndexError` when a layer could not be fetched, else the state the test set
  (`index_state`, default `IndexFinished`).
- `GET /indexer/api/v1/index_report/{digest}` → that IndexReport, or 404.
- `GET /matcher/api/v1/vulnerability_report/{digest}` → 404 unless the index state is
  `IndexFinished`; then the report set for the digest (default: the clean one), 200; 202
  (no body) while `matcher_ready` is False, as a matcher still loading its data answers.
- With a `psk`, every request needs `Authorization: Bearer <JWT>`, HS256 over the key,
  `iss` on the allowlist, `exp`/`nbf`/`iat` within 15 s leeway: otherwise 401 `unauthorized`.

    with FakeClair(psk=KEY) as clair:
        clair.set_report(digest, "vulnerability_report_critical.json")
        clair.index_state(digest, "ScanLayers")   # indexing until clair.finish(digest)
        clair.inject(503, count=2)                 # the next two requests fail
        ...
        clair.index_requests[0].layers[0]["headers"]  # what regwarden sent Clair
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from support.loopback import LoopbackServer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "clair"
RECORDED_DIGEST = "sha256:fc84b5febd328eccaa913807716887b3eb5ed08bc22cc6933a9ebf82766725e3"
LEEWAY = 15  # seconds, as Clair's PSK check allows
_DIGEST = r"sha256:[0-9a-f]{64}"
_LAYER_KEYS = {"hash", "uri", "headers", "media_type"}


def shape(name: str, *, digest: str = RECORDED_DIGEST) -> dict[str, Any]:
    """A recorded answer, its manifest hash replaced by `digest`."""
    text = (FIXTURES / name).read_text(encoding="utf-8").replace(RECORDED_DIGEST, digest)
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_jwt(token: str, key: bytes, issuers: set[str], now: float) -> str | None:
    """Why Clair's PSK check would refuse `token`, or None when it passes."""
    parts = token.split(".")
    if len(parts) != 3:
        return "not a compact JWS"
    try:
        header = json.loads(_unb64url(parts[0]))
        claims = json.loads(_unb64url(parts[1]))
        signature = _unb64url(parts[2])
    except ValueError:
        return "undecodable"
    if header.get("alg") != "HS256":
        return f"alg {header.get('alg')!r}"
    expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        return "bad signature"
    if "exp" in claims and now > claims["exp"] + LEEWAY:
        return "expired"
    if "nbf" in claims and now < claims["nbf"] - LEEWAY:
        return "not valid yet"
    if "iat" in claims and now < claims["iat"] - LEEWAY:
        return "issued in the future"
    if claims.get("iss") not in issuers:
        return f"issuer {claims.get('iss')!r} not allowed"
    return None


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    status: int
    refused: str | None = None
    """Why the PSK check refused it (None: passed, or no PSK)."""


@dataclass(frozen=True)
class IndexRequest:
    """One accepted `POST .../index_report`: the Manifest as sent."""

    hash: str
    layers: list[dict[str, Any]]
    fetched: list[int]
    """The registry's status for each layer fetch."""


@dataclass
class _Fault:
    status: int
    remaining: int


@dataclass
class _State:
    psk: bytes | None
    issuers: set[str]
    registry_auth: str | None
    states: dict[str, str] = field(default_factory=dict)
    planned: dict[str, str] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    matcher_ready: bool = True
    index_delay: float = 0.0
    faults: list[_Fault] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    arrivals: list[str] = field(default_factory=list)
    index_requests: list[IndexRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeClair:
    """Clair v4's index and report endpoints on 127.0.0.1, a free port (see module doc).

    `registry_auth`: the `Authorization` value the fake fetches layers with when the index
    request gives no header (Clair's own registry configuration); None: anonymous."""

    def __init__(
        self,
        *,
        psk: bytes | None = None,
        issuers: tuple[str, ...] = ("regwarden",),
        registry_auth: str | None = None,
    ) -> None:
        self.state = _State(psk, set(issuers), registry_auth)
        state = self.state

        class Handler(_Handler):
            pass

        Handler.state = state
        self._server = LoopbackServer(Handler)

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def requests(self) -> list[Seen]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def arrivals(self) -> list[str]:
        """`METHOD PATH` of each request as it arrived, before any answer (`requests` holds
        them once answered)."""
        with self.state.lock:
            return list(self.state.arrivals)

    @property
    def index_requests(self) -> list[IndexRequest]:
        with self.state.lock:
            return list(self.state.index_requests)

    def set_report(self, digest: str, name: str) -> None:
        """Serve fixture `name` as the vulnerability report of `digest` once indexed."""
        with self.state.lock:
            self.state.reports[digest] = name

    def index_state(self, digest: str, state: str, *, err: str = "") -> None:
        """The state an index request for `digest` leaves (default `IndexFinished`)."""
        with self.state.lock:
            self.state.planned[digest] = state
            if err:
                self.state.errors[digest] = err

    def finish(self, digest: str) -> None:
        """Indexing of `digest` ends: its report is served from now on."""
        with self.state.lock:
            self.state.states[digest] = "IndexFinished"
            self.state.planned.pop(digest, None)

    def set_index_delay(self, seconds: float) -> None:
        """Index requests take this long to answer (a large image)."""
        with self.state.lock:
            self.state.index_delay = seconds

    def set_matcher_ready(self, ready: bool) -> None:
        with self.state.lock:
            self.state.matcher_ready = ready

    def inject(self, status: int, *, count: int = 1) -> None:
        """Answer the next `count` requests (after auth) with `status` and Clair's error body."""
        with self.state.lock:
            self.state.faults.append(_Fault(status, count))

    def start(self) -> FakeClair:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeClair:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _index_report(digest: str, state: str, err: str = "") -> dict[str, Any]:
    name = {
        "IndexFinished": "index_report_finished.json",
        "IndexError": "index_report_error.json",
    }.get(state, "index_report_scanning.json")
    doc = shape(name, digest=digest)
    doc["state"] = state
    if err:
        doc["err"] = err
    return doc


class _Handler(BaseHTTPRequestHandler):
    state: _State
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        with self.state.lock:
            self.state.arrivals.append(f"{method} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        refused = self._refused()
        if refused is not None:
            status, data, kind = 401, b"unauthorized\n", "text/plain; charset=utf-8"
        else:
            status, doc = self._answer(method, body)
            data = json.dumps(doc).encode() if doc is not None else b""
            kind = "application/json"
        # Recorded before the answer goes out: once the client has its answer, a test may
        # look at `requests` at once (on a loaded machine the handler thread could
        # otherwise still be between its reply and this line).
        with self.state.lock:
            self.state.requests.append(
                Seen(
                    method,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    status,
                    refused,
                )
            )
        self._reply(status, data, kind)

    def _reply(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refused(self) -> str | None:
        key = self.state.psk
        if key is None:
            return None
        value = self.headers.get("Authorization", "")
        if not value.startswith("Bearer "):
            return "no bearer token"
        return check_jwt(value.removeprefix("Bearer "), key, self.state.issuers, time.time())

    def _answer(self, method: str, body: bytes) -> tuple[int, dict[str, Any] | None]:
        with self.state.lock:
            fault = next((f for f in self.state.faults if f.remaining > 0), None)
            if fault is not None:
                fault.remaining -= 1
        if fault is not None:
            return fault.status, shape("error_internal.json")
        path = self.path.split("?", 1)[0]
        if method == "POST" and path == "/indexer/api/v1/index_report":
            return self._index(body)
        found = re.fullmatch(rf"/indexer/api/v1/index_report/({_DIGEST})", path)
        if method == "GET" and found:
            digest = found.group(1)
            with self.state.lock:
                state = self.state.states.get(digest)
                err = self.state.errors.get(digest, "")
            if state is None:
                return 404, shape("error_not_found.json", digest=digest)
            return 200, _index_report(digest, state, err)
        found = re.fullmatch(rf"/matcher/api/v1/vulnerability_report/({_DIGEST})", path)
        if method == "GET" and found:
            digest = found.group(1)
            with self.state.lock:
                ready = self.state.matcher_ready
                state = self.state.states.get(digest)
                report = self.state.reports.get(digest, "vulnerability_report_clean.json")
            if not ready:
                return 202, None
            if state != "IndexFinished":
                return 404, shape("error_not_found.json", digest=digest)
            return 200, shape(report, digest=digest)
        return 404, {"code": "not-found", "message": f"no route {method} {path}"}

    def _index(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            manifest = json.loads(body)
            problem = _manifest_problem(manifest)
        except ValueError as exc:
            problem = f"not JSON: {exc}"
        if problem is not None:
            return 400, {
                "code": "bad-request",
                "message": f"failed to deserialize manifest: {problem}",
            }
        digest: str = manifest["hash"]
        with self.state.lock:
            delay = self.state.index_delay
        time.sleep(delay)  # stands for the work of indexing, not for a wait on a condition
        fetched = [self._fetch(layer) for layer in manifest.get("layers", [])]
        with self.state.lock:
            self.state.index_requests.append(
                IndexRequest(digest, list(manifest.get("layers", [])), fetched)
            )
            if any(status != 200 for status in fetched):
                state = "IndexError"
                self.state.errors[digest] = (
                    "failed to fetch layers: fetcher: unexpected status code: "
                    f"{next(s for s in fetched if s != 200)}"
                )
            else:
                state = self.state.planned.get(digest, "IndexFinished")
                self.state.errors.pop(digest, None)
            self.state.states[digest] = state
            err = self.state.errors.get(digest, "")
        return 201, _index_report(digest, state, err)

    def _fetch(self, layer: dict[str, Any]) -> int:
        """Fetch one layer as Clair would; the registry's status (0: unreachable or the
        content does not match its digest)."""
        headers = {k: v[0] for k, v in (layer.get("headers") or {}).items() if v}
        if not headers and self.state.registry_auth:
            headers = {"Authorization": self.state.registry_auth}
        try:
            response = httpx.get(layer["uri"], headers=headers, follow_redirects=True, timeout=10)
        except httpx.HTTPError:
            return 0
        if response.status_code != 200:
            return response.status_code
        got = "sha256:" + hashlib.sha256(response.content).hexdigest()
        return 200 if got == layer["hash"] else 0


def _manifest_problem(doc: object) -> str | None:
    """What is wrong with a Manifest by Clair's schema (manifest / layer), or None."""
    if not isinstance(doc, dict) or set(doc) - {"hash", "layers"}:
        return "expected an object with 'hash' and 'layers' only"
    if not isinstance(doc.get("hash"), str) or not re.fullmatch(_DIGEST, doc["hash"]):
        return "hash: expected a digest"
    for layer in doc.get("layers") or []:
        if not isinstance(layer, dict) or set(layer) - _LAYER_KEYS:
            return f"layer: unexpected keys {sorted(set(layer) - _LAYER_KEYS)}"
        if not re.fullmatch(_DIGEST, str(layer.get("hash"))) or not layer.get("uri"):
            return "layer: expected 'hash' (a digest) and 'uri'"
        for name, values in (layer.get("headers") or {}).items():
            ok = isinstance(values, list) and all(isinstance(v, str) for v in values)
            if not re.fullmatch(r"[a-zA-Z0-9\-_]+", name) or not ok:
                return f"layer headers: {name!r} must map to a list of strings"
    return None
