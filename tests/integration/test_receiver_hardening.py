"""`regwarden serve` under hostile webhook callers (issue #11, items 3, 4 and 6), driven as a
real process over real HTTP.

- The registry an event names must be configured (policy `registries:`, `--registry`,
  `REGWARDEN_REGISTRIES`): an event for any other host is a 400 naming it and that host is
  never contacted. The fake registries are loopback listeners that count connections, so
  "never contacted" is observed, not inferred; the configured ones are contacted.
- Bodies are bounded: a 2 GB announcement is refused at once, a stalled body is dropped
  within `--body-timeout`, a disconnect mid-body is one log line, bytes past the announced
  length are not taken into the body.
- Envelopes: no valid event is a 400 naming each problem, blob-only stays 202, a deeply
  nested body is a 400 naming the limit.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.gate import TOKEN
from support.streams import Serve

from regwarden.devtools import free_port

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}
DIGEST = "sha256:" + "cd" * 32
BODY_TIMEOUT = 2.0


class Recorder:
    """A loopback TCP listener standing in for a registry: counts the connections made to
    it (and closes each at once, so a client sees a failed registry)."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@dataclass
class Env:
    serve: Serve
    port: int
    by_flag: Recorder
    by_env: Recorder
    by_policy: Recorder
    unlisted: Recorder

    def post(self, source: str, body: bytes | Iterator[bytes]) -> httpx.Response:
        return httpx.post(f"{self.serve.url}/events/{source}", content=body, headers=AUTH)

    def log(self) -> str:
        return self.serve.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("hardening")
    recorders = [Recorder() for _ in range(4)]
    by_flag, by_env, by_policy, unlisted = recorders
    policy = root / "regwarden.yaml"
    policy.write_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "repositories:\n  - {match: 'team/**', team: team}\n"
        f"registries:\n  - {{host: '{by_policy.host}', kind: distribution}}\n"
    )
    port = free_port()
    try:
        serve = Serve.start(
            root,
            policy,
            port,
            workers=2,
            registries=[by_flag.host],
            args=["--body-timeout", str(BODY_TIMEOUT)],
            env={"REGWARDEN_REGISTRIES": f"unused.example:5000, {by_env.host}"},
        )
    except BaseException:
        for r in recorders:
            r.close()
        raise
    try:
        yield Env(serve, port, by_flag, by_env, by_policy, unlisted)
    finally:
        serve.stop()
        for r in recorders:
            r.close()
    log = serve.log.read_text(errors="replace")
    assert "Traceback" not in log, log


def push(host: str, *, digest: str = DIGEST) -> dict[str, Any]:
    return {
        "id": f"push-{host}",
        "timestamp": "2026-11-27T10:00:00Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "repository": "team/app",
            "tag": "v1",
        },
        "request": {"host": host, "useragent": "containers/5.23.1"},
    }


def harbor_push(host: str) -> dict[str, Any]:
    return {
        "type": "PUSH_ARTIFACT",
        "occur_at": 1764237600,
        "operator": "robot$ci",
        "event_data": {
            "resources": [{"digest": DIGEST, "tag": "v1", "resource_url": f"{host}/team/app:v1"}],
            "repository": {"name": "app", "namespace": "team", "repo_full_name": "team/app"},
        },
    }


def envelope(*events: object) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def queued_bodies(serve: Serve) -> list[str]:
    with sqlite3.connect(serve.ledger_path) as db:
        return [bytes(row[0]).decode() for row in db.execute("SELECT body FROM queue")]


def wait_for(cond: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def raw_exchange(port: int, data: bytes, *, limit: float = 15.0) -> tuple[bytes, float, bool]:
    """Send `data` on a fresh connection and read until the server closes it (or `limit`
    passes). Returns what came back, the seconds until the close, and whether it closed."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it may close first
            sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received, time.monotonic() - started, True
            except TimeoutError:
                return received, time.monotonic() - started, False
            if not chunk:
                return received, time.monotonic() - started, True
            received += chunk


def request_head(length: int, path: str = "/events/distribution") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: regwarden\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# -- hosts from configuration -------------------------------------------------------------------


def test_an_event_for_an_unlisted_host_is_refused_and_that_host_never_contacted(
    env: Env,
) -> None:
    for source, body in (
        ("distribution", envelope(push(env.unlisted.host))),
        ("distribution", envelope(push(env.by_flag.host), push(env.unlisted.host))),
        ("harbor", json.dumps(harbor_push(env.unlisted.host)).encode()),
    ):
        resp = env.post(source, body)
        assert resp.status_code == 400, resp.text
        assert f"registry host '{env.unlisted.host}' is not configured" in resp.json()["error"]

    # the configured hosts, each from one place, are taken and contacted by the workers
    for recorder in (env.by_flag, env.by_env, env.by_policy):
        resp = env.post("distribution", envelope(push(recorder.host)))
        assert resp.status_code == 202, resp.text
    harbor = env.post("harbor", json.dumps(harbor_push(env.by_flag.host.upper())).encode())
    assert harbor.status_code == 202, harbor.text
    wait_for(
        lambda: all(r.connections for r in (env.by_flag, env.by_env, env.by_policy)),
        timeout=30,
        what="the workers to contact every configured registry",
    )
    assert env.unlisted.connections == 0
    assert not any(env.unlisted.host in body for body in queued_bodies(env.serve))
    refusals = [
        line
        for line in env.log().splitlines()
        if "rejected" in line and f"'{env.unlisted.host}'" in line
    ]
    assert len(refusals) == 3, env.log()


# -- bounded bodies ---------------------------------------------------------------------------


def test_a_client_announcing_2_gb_is_refused_at_once(env: Env) -> None:
    response, seconds, closed = raw_exchange(env.port, request_head(2_000_000_000) + b'{"ev')
    assert status_of(response) == 413, response
    assert b"2000000000 bytes is larger than 1048576 bytes" in response
    assert closed and seconds < BODY_TIMEOUT, seconds  # not after reading, not at the timeout


def test_a_body_growing_past_the_cap_is_refused(env: Env) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):  # 4 MiB, chunked: no length announced
            yield b" " * 65536

    resp = env.post("distribution", chunks())
    assert resp.status_code == 413 and "larger than 1048576 bytes" in resp.json()["error"]


def test_a_stalled_body_is_dropped_within_the_timeout(env: Env) -> None:
    response, seconds, closed = raw_exchange(env.port, request_head(500) + b'{"events": [')
    assert status_of(response) == 408, response
    assert b"body not received within 2 s" in response
    assert closed and BODY_TIMEOUT * 0.9 <= seconds < BODY_TIMEOUT + 4, seconds


def test_a_disconnect_mid_body_is_one_log_line(env: Env) -> None:
    marker = "client disconnected after 11 bytes of the body"
    before = env.log().count(marker)
    with socket.create_connection(("127.0.0.1", env.port)) as sock:
        sock.sendall(request_head(500) + b'{"events": ')
    wait_for(lambda: env.log().count(marker) > before, timeout=10, what="the disconnect line")
    lines = [line for line in env.log().splitlines() if marker in line]
    assert len(lines) == before + 1
    assert "ClientDisconnect" not in env.log() and "Traceback" not in env.log()


def test_bytes_past_the_announced_length_are_not_taken_into_the_body(env: Env) -> None:
    body = envelope()
    response, _, closed = raw_exchange(env.port, request_head(len(body)) + body + b"Z" * (2 << 20))
    first = response.split(b"\r\n\r\n", 1)
    assert status_of(response) == 202 and first[1].startswith(b'{"accepted":0}'), response
    assert response.count(b"HTTP/1.1 202") == 1 and closed  # the rest is no request


# -- clear errors -----------------------------------------------------------------------------


def test_an_envelope_with_no_valid_event_is_a_400_naming_each_problem(env: Env) -> None:
    bad_digest = push(env.by_flag.host, digest="sha256:nothex")
    resp = env.post("distribution", envelope({"action": "push"}, bad_digest))
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error.startswith("no valid event in the envelope (2 problems)")
    assert "events[0].target" in error and "events[1].target.digest: got 'sha256:nothex'" in error

    blob = {
        "id": "blob",
        "timestamp": "2026-11-27T10:00:00Z",
        "action": "push",
        "target": {"mediaType": "application/octet-stream", "digest": DIGEST, "url": "/blobs/x"},
        "request": {"host": env.by_flag.host},
    }
    resp = env.post("distribution", envelope(blob))
    assert (resp.status_code, resp.json()) == (202, {"accepted": 0})


def test_a_deeply_nested_body_is_a_400_naming_the_limit(env: Env) -> None:
    for depth in (65, 100_000):
        resp = env.post("distribution", b'{"events": ' + b"[" * depth + b"]" * depth + b"}")
        assert resp.status_code == 400
        assert "JSON nested deeper than 64 levels (the limit)" in resp.json()["error"]


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


CAP = 1 << 20
SLACK = 1 << 20
"""What a capped read may hold beyond the cap: one read buffer and the allocator's slack,
plus whatever serve's other threads allocate meanwhile (peak RSS is the process's). Never
the 100 MB."""


def test_a_100_mb_body_raises_the_receivers_memory_by_about_the_cap_not_the_body(env: Env) -> None:
    # warm up the same path (a body just past the cap) so imports and buffers are in place
    env.post("distribution", iter([b" " * (CAP + 1)]))
    before = _peak_rss(env.serve.proc.pid)

    def hundred_mb() -> Iterator[bytes]:  # chunked, no length announced: read as it comes
        for _ in range(1600):
            yield b" " * 65536

    resp = env.post("distribution", hundred_mb())

    assert resp.status_code == 413
    growth = _peak_rss(env.serve.proc.pid) - before
    print(json.dumps({"test": "receiver 100 MB body", "peak_rss_growth": growth, "cap": CAP}))
    assert growth < CAP + SLACK, f"peak RSS grew by {growth} bytes for a 100 MB body"
