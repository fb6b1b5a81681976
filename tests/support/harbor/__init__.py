"""A small fake of Harbor's v2.0 API on loopback, serving recorded answer shapes.

The JSON files next to this module are answers as Harbor 2.10 (with its Trivy adapter)
gives them: artifacts with a `scan_overview` in each scan state, `additions/vulnerabilities`
reports, and Harbor's error bodies. `shape(name, digest=...)` loads one for a given digest.

    with FakeHarbor() as harbor:
        harbor.add("library/team/app", digest,
                   artifact=shape("artifact_success_critical.json", digest=digest),
                   vulnerabilities=shape("vulnerabilities_critical.json", digest=digest))
        harbor.inject(503, count=1)            # the next request fails once
        ...
        assert harbor.requests[0].path.startswith("/api/v2.0/projects/library/...")

Like Harbor it decodes the request path once to route it (an escaped `/` in the repository
name must be encoded twice, `%252F`), decodes the repository segment once more, checks
Basic auth, serves `scan_overview` only with `with_scan_overview=true`, and keeps to the
report media types listed in `X-Accept-Vulnerabilities` (default: the 1.1 report).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest

from support.loopback import LoopbackServer

HERE = Path(__file__).parent
RECORDED_DIGEST = "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4"
NATIVE_REPORT = "application/vnd.security.vulnerability.report; version=1.1"
USERNAME = "robot$regwarden"
PASSWORD = "Harbor-robot-s3cret"
_PREFIX = "/api/v2.0/projects/"


def shape(name: str, *, digest: str = RECORDED_DIGEST) -> dict[str, Any]:
    """A recorded answer, with the recorded artifact digest replaced by `digest`."""
    text = (HERE / name).read_text(encoding="utf-8").replace(RECORDED_DIGEST, digest)
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@dataclass(frozen=True)
class Seen:
    """One request as the fake received it (raw path, before any decoding)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int


@dataclass
class _Fault:
    status: int
    remaining: int
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class _Artifact:
    artifact: dict[str, Any]
    vulnerabilities: dict[str, Any] | None


@dataclass
class _State:
    username: str
    password: str
    artifacts: dict[tuple[str, str], _Artifact] = field(default_factory=dict)
    faults: list[_Fault] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeHarbor:
    """Harbor's artifact and vulnerability-addition endpoints on 127.0.0.1, a free port."""

    def __init__(self, *, username: str = USERNAME, password: str = PASSWORD) -> None:
        self.state = _State(username, password)
        state = self.state

        class Handler(_Handler):
            pass

        Handler.state = state
        self._server = LoopbackServer(Handler)

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def requests(self) -> list[Seen]:
        with self.state.lock:
            return list(self.state.requests)

    def add(
        self,
        repository: str,
        digest: str,
        *,
        artifact: dict[str, Any],
        vulnerabilities: dict[str, Any] | None = None,
    ) -> None:
        """Serve `artifact` (and its vulnerability addition) for `repository@digest`."""
        with self.state.lock:
            self.state.artifacts[(repository, digest)] = _Artifact(artifact, vulnerabilities)

    def inject(
        self,
        status: int,
        *,
        count: int = 1,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `count` requests with `status` (after auth passes)."""
        fault = _Fault(status, count, dict(headers or {}), body or shape("error_unavailable.json"))
        with self.state.lock:
            self.state.faults.append(fault)

    def start(self) -> FakeHarbor:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeHarbor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    state: _State
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        raw_path, _, raw_query = self.path.partition("?")
        query = parse_qs(raw_query)
        status, body, headers = self._answer(raw_path, query)
        with self.state.lock:
            self.state.requests.append(
                Seen(
                    "GET", raw_path, query, {k.lower(): v for k, v in self.headers.items()}, status
                )
            )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        expected = base64.b64encode(f"{self.state.username}:{self.state.password}".encode())
        return self.headers.get("Authorization", "") == f"Basic {expected.decode()}"

    def _accepted(self) -> list[str]:
        header = self.headers.get("X-Accept-Vulnerabilities")
        if not header:
            return [NATIVE_REPORT]
        # media types contain "; version=…": split on ", " between types only
        return [part.strip() for part in header.split(", ") if part.strip()]

    def _answer(
        self, raw_path: str, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if not self._authorised():
            return 401, shape("error_unauthorized.json"), {}
        with self.state.lock:
            fault = self.state.faults[0] if self.state.faults else None
            if fault is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.state.faults.pop(0)
        if fault is not None:
            return fault.status, fault.body, fault.headers
        path = unquote(raw_path)  # the router's one decoding, as Go's URL.Path
        if not path.startswith(_PREFIX):
            return 404, shape("error_not_found.json"), {}
        parts = path[len(_PREFIX) :].split("/")
        if len(parts) not in (5, 7) or parts[1] != "repositories" or parts[3] != "artifacts":
            return 404, shape("error_not_found.json"), {}
        if len(parts) == 7 and parts[5:] != ["additions", "vulnerabilities"]:
            return 404, shape("error_not_found.json"), {}
        repository = f"{parts[0]}/{unquote(parts[2])}"  # the handler's second decoding
        with self.state.lock:
            found = self.state.artifacts.get((repository, parts[4]))
        if found is None:
            return 404, shape("error_not_found.json"), {}
        accepted = self._accepted()
        if len(parts) == 7:
            reports = found.vulnerabilities or {}
            return 200, {k: v for k, v in reports.items() if k in accepted}, {}
        artifact = dict(found.artifact)
        overview = artifact.pop("scan_overview", None)
        if query.get("with_scan_overview") == ["true"] and overview is not None:
            artifact["scan_overview"] = {k: v for k, v in overview.items() if k in accepted}
        return 200, artifact, {}


@pytest.fixture
def harbor() -> Iterator[FakeHarbor]:
    """A fake Harbor API on its own loopback port for one test (register it under this name)."""
    with FakeHarbor() as fake:
        yield fake


def robot_docker_config(directory: Path, host: str) -> Path:
    """Make `directory` a docker config (`DOCKER_CONFIG`) holding the robot account's
    credentials for `host`, as `docker login` leaves them; returns `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory
