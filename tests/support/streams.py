"""Helpers for the event-stream e2e suite (tests/e2e/test_gate_streams.py).

The product is driven the way registries drive it:
- a real distribution registry whose `notifications` point at `regwarden serve`
  (`/events/distribution`), reached through a `RegistryProxy` so tests can inject faults;
- a second real registry standing in for Harbor: its notifications go to `HarborRelay`,
  which turns each manifest push or delete the registry reports into the webhook Harbor
  would send (default JSON format, `auth_header` verbatim) and posts it to
  `/events/harbor`. Every webhook therefore describes a push that really happened, in the
  order the registry saw it; nothing is invented.

The serve process, its ledger and the registries are real; these helpers only read the
ledger (verdicts, the durable queue) and run the real CLI.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx

from regwarden.store import SqliteLedger
from support.gate import HMAC, TOKEN, Sink
from support.loopback import LoopbackServer
from support.proxy import RegistryProxy, Rule, _Handler

# -- the policy -------------------------------------------------------------------------------

SETTLE = timedelta(seconds=2)
"""`settleWindow` everywhere; the default grace period is the same, so the settle wait of
an unsigned repository is 2 s."""
SIGNED_GRACE = timedelta(seconds=12)
"""Grace where a test signs after pushing: room for the signing CLI on a busy machine (4 s
was overrun when the signing subprocess started slowly under load)."""
FAULT_GRACE = timedelta(seconds=60)
"""Grace in the fault repositories: far beyond the test, so only a retry can judge them."""
SCAN_TIMEOUT = timedelta(seconds=30)
"""Scan timeout in the attestation repositories: only the attestation can pass them."""

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  team: streams
  settleWindow: 2s
  quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
  signatures: &unsigned
    required: true
    cosign: {{keys: ["file://keys/cosign.pub"]}}
    gracePeriod: 2s
repositories:
  - match: "*/signed-*"
    signatures: &signed
      required: true
      cosign: {{keys: ["file://keys/cosign.pub"]}}
      gracePeriod: 12s
  - match: "*/attest-*"
    signatures: *signed
    vulnerabilities: {{maxSeverity: high, scanTimeout: 30s, sources: [cosign-vuln]}}
  - match: "*/fault-*"
    signatures:
      required: true
      cosign: {{keys: ["file://keys/cosign.pub"]}}
      gracePeriod: 60s
  - match: "*/retain-*"
    signatures: {{required: false}}
    retention:
      delete:
        - untagged: {{olderThan: 1s}}
        - olderThan: 30d
{notation}notifications:
  channels:
    hook: {{type: webhook, url: "{hook}", secret: "secret://hmac"}}
  routes:
    - {{match: {{team: streams}}, to: [hook]}}
"""

NOTATION_ENTRY = """\
  - match: "*/notation-*"
    signatures:
      required: true
      notation:
        trustPolicy: "file://notation/trustpolicy.json"
        trustStore: "file://notation/truststore"
      gracePeriod: 12s
"""


def streams_policy(hook: str, *, notation: bool) -> str:
    return POLICY.format(hook=hook, notation=NOTATION_ENTRY if notation else "")


# -- faults for one client only ---------------------------------------------------------------


@dataclass
class AgentRule(Rule):
    """A proxy rule that applies only to requests whose User-Agent starts with `agent`."""

    agent: str = ""
    current: threading.local = field(default_factory=threading.local)

    def matches(self, method: str, target: str) -> bool:
        seen = str(getattr(self.current, "agent", "") or "")
        return seen.startswith(self.agent) and super().matches(method, target)


class AgentFaultProxy(RegistryProxy):
    """`RegistryProxy` that can also fail one client's requests (e.g. regwarden's own
    signature lookups) while other clients (the CI pushing, `regwarden sign`) get through."""

    def __init__(self, upstream: str, **kwargs: Any) -> None:
        super().__init__(upstream, **kwargs)
        self._current = threading.local()

    def inject_for(
        self, agent: str, status: int, *, count: int, path: str, method: str | None = None
    ) -> Rule:
        body = json.dumps(
            {"errors": [{"code": "UNAVAILABLE", "message": f"injected {status} by test proxy"}]}
        ).encode()
        rule = AgentRule(
            "status",
            method,
            re.compile(path),
            count,
            status=status,
            body=body,
            agent=agent,
            current=self._current,
        )
        return self._add(rule)

    def start(self) -> AgentFaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

            def _handle(self) -> None:
                proxy._current.agent = self.headers.get("User-Agent") or ""
                super()._handle()

        self._server = LoopbackServer(Handler).start()
        return self

    def __enter__(self) -> AgentFaultProxy:
        return self.start()


# -- Harbor-shaped webhooks from a real registry's pushes -------------------------------------

_MANIFEST_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_HARBOR_TYPES = {"push": "PUSH_ARTIFACT", "delete": "DELETE_ARTIFACT"}


def harbor_webhook(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Harbor webhook (default JSON format) for one distribution notification event,
    or None for what Harbor would not report as an artifact event (blobs, pulls).

    A push by digest carries the digest as its tag, as Harbor's do; regwarden's own writes
    carry the operator `regwarden` (Harbor webhooks have no User-Agent)."""
    kind = _HARBOR_TYPES.get(str(event.get("action")))
    target = event.get("target") or {}
    if kind is None or target.get("mediaType") not in _MANIFEST_TYPES:
        return None
    repo = str(target["repository"])
    digest = str(target["digest"])
    tag = target.get("tag") or None
    request = event.get("request") or {}
    host = str(request["host"])
    agent = str(request.get("useragent") or "")
    when = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
    namespace, _, name = repo.partition("/")
    return {
        "type": kind,
        "occur_at": int(when.timestamp()),
        "operator": "regwarden" if agent.startswith("regwarden/") else "robot$ci",
        "event_data": {
            "resources": [
                {
                    "digest": digest,
                    "tag": tag or digest,
                    "resource_url": f"{host}/{repo}:{tag}" if tag else f"{host}/{repo}@{digest}",
                }
            ],
            "repository": {
                "date_created": int(when.timestamp()),
                "name": name,
                "namespace": namespace,
                "repo_full_name": repo,
                "repo_type": "private",
            },
        },
    }


class HarborRelay:
    """Receives a registry's notifications and posts the matching Harbor webhooks to
    `target` in order, one per artifact, authenticated with Harbor's verbatim
    `auth_header`. Answers 503 when the receiver did not accept one, so the registry
    delivers the batch again, as it would to Harbor's own core."""

    def __init__(self, target: str, auth_header: str) -> None:
        relay = self
        self.target = target
        self.auth_header = auth_header
        self.sent: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=10)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = relay._relay(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = LoopbackServer(Handler)

    @property
    def url(self) -> str:
        return self._server.url

    def _relay(self, body: bytes) -> int:
        try:
            events = json.loads(body).get("events") or []
        except ValueError:
            return 400
        with self._lock:  # one delivery at a time: Harbor's order is the registry's
            for event in events:
                hook = harbor_webhook(event)
                if hook is None:
                    continue
                try:
                    r = self._client.post(
                        self.target,
                        json=hook,
                        headers={"Authorization": self.auth_header},
                    )
                except httpx.HTTPError:
                    return 503
                if r.status_code != 202:
                    return 503
                self.sent.append(hook)
        return 200

    def start(self) -> HarborRelay:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._client.close()


# -- the ledger, read from outside the serve process ------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    id: int
    source: str
    body: str
    done_at: datetime | None
    not_before: datetime | None
    attempts: int
    error: str | None


WEBHOOK_SOURCES = frozenset({"distribution", "harbor"})


def mentions(text: str, repo: str, digest: str | None = None) -> bool:
    """Whether a queued body names `repo` (exactly, not a longer name), or `digest`."""
    if digest is not None and digest in text:
        return True
    return re.search(re.escape(repo) + r"(?=[\"@:])", text) is not None


@dataclass
class Ledger:
    """Read-only views of the serve process's SQLite ledger."""

    path: Path

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return list(db.execute(sql, args))
        finally:
            db.close()

    def verdict(self, host: str, repo: str, digest: str) -> str | None:
        ledger = SqliteLedger(self.path)
        try:
            return ledger.last_verdict(host, repo, digest)
        finally:
            ledger.close()

    def verdict_at(self, host: str, repo: str, digest: str) -> datetime | None:
        rows = self._rows(
            "SELECT at FROM verdicts WHERE registry = ? AND repository = ? AND digest = ?",
            (host, repo, digest),
        )
        return datetime.fromisoformat(rows[0][0]) if rows else None

    def first_seen(self, host: str, repo: str, digest: str) -> datetime | None:
        ledger = SqliteLedger(self.path)
        try:
            times = ledger.image_times(host, repo)
        finally:
            ledger.close()
        seen = times.get(digest)
        return seen[0] if seen else None

    def quarantine_actions(self, host: str, repo: str, digest: str) -> list[str]:
        rows = self._rows(
            "SELECT status FROM actions WHERE registry = ? AND repository = ? AND digest = ? "
            "AND kind = 'quarantine'",
            (host, repo, digest),
        )
        return [str(r[0]) for r in rows]

    def queue(self) -> list[QueueRow]:
        rows = self._rows(
            "SELECT id, source, body, done_at, not_before, attempts, error FROM queue ORDER BY id"
        )
        out = []
        for id_, source, body, done, not_before, attempts, error in rows:
            text = bytes(body).decode(errors="replace") if body is not None else ""
            out.append(
                QueueRow(
                    int(id_),
                    str(source),
                    text,
                    datetime.fromisoformat(done) if done else None,
                    # a row not tried yet: when it is due (a recheck's deadline)
                    datetime.fromisoformat(not_before) if not_before and not attempts else None,
                    int(attempts),
                    error,
                )
            )
        return out

    def delivered(self, repo: str, digest: str) -> bool:
        """The webhook delivery naming `digest` in `repo` has been processed."""
        rows = [
            r for r in self.queue() if r.source in WEBHOOK_SOURCES and mentions(r.body, repo, None)
        ]
        rows = [r for r in rows if digest in r.body]
        return bool(rows) and all(r.done_at is not None for r in rows)

    def quiet_until(self, repo: str, horizon: datetime) -> bool:
        """Nothing for `repo` is waiting that is due by `horizon` (later rechecks, e.g. a
        scan timeout far away, do not count)."""
        for r in self.queue():
            if r.done_at is not None or not mentions(r.body, repo):
                continue
            if r.not_before is not None and r.not_before > horizon:
                continue
            return False
        return True

    def dead_letters(self, repo: str) -> list[QueueRow]:
        """Deliveries and rechecks for `repo` the receiver gave up on."""
        return [
            r
            for r in self.queue()
            if r.done_at is not None and r.error is not None and mentions(r.body, repo)
        ]

    def rechecked(self, repo: str, after: datetime) -> bool:
        """A recheck regwarden scheduled itself (not a webhook) for `repo` ran after `after`."""
        return any(
            r.source not in WEBHOOK_SOURCES
            and r.done_at is not None
            and r.done_at >= after
            and mentions(r.body, repo)
            for r in self.queue()
        )


# -- waiting ----------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def wait_for(
    cond: Callable[[], Any], *, timeout: float = 30.0, what: str = "", log: Path | None = None
) -> Any:
    """Poll `cond` until it is truthy; on timeout fail with the serve log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-6000:] if log is not None and log.exists() else ""
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}\n--- serve ---\n{tail}"
    )


# -- the serve process and the CLI ------------------------------------------------------------


def cli_env() -> dict[str, str]:
    return {**os.environ, "REGWARDEN_SECRET_HMAC": HMAC, "COSIGN_PASSWORD": "pw"}


@dataclass
class Serve:
    """`regwarden serve` as a real process, with the CLI run against the same ledger."""

    root: Path
    url: str
    ledger_path: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        root: Path,
        policy: Path,
        port: int,
        *,
        workers: int = 4,
        registries: Sequence[str] = (),
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> Serve:
        """`registries`: hosts serve may contact besides the policy's (`--registry`);
        `args`: more serve options; `env`: added to `cli_env()`."""
        (root / "tokens").write_text(TOKEN + "\n")
        log = root / "serve.log"
        ledger = root / "ledger.db"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "regwarden",
                    "--ledger",
                    str(ledger),
                    "serve",
                    "--policy",
                    str(policy),
                    "--port",
                    str(port),
                    "--auth-token-file",
                    str(root / "tokens"),
                    "--workers",
                    str(workers),
                    *(f"--registry={host}" for host in registries),
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**cli_env(), **(env or {})},
            )
        serve = cls(root, f"http://127.0.0.1:{port}", ledger, log, proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{serve.url}/healthz", timeout=1).status_code == 200:
                    return serve
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                serve.stop()
                raise RuntimeError(f"regwarden serve did not start:\n{log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`regwarden --ledger <serve's ledger> ARGS…` in the serve's directory."""
        return subprocess.run(
            [sys.executable, "-m", "regwarden", "--ledger", str(self.ledger_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=cli_env(),
            cwd=self.root,
        )

    def cli_json(self, *args: str) -> Any:
        proc = self.cli(*args, "--output", "json")
        assert proc.returncode == 0, f"regwarden {' '.join(args)}: exit {proc.returncode}\n" + (
            proc.stderr or proc.stdout
        )
        return json.loads(proc.stdout)


def alerts(sink: LoopbackServer) -> list[dict[str, Any]]:
    from regwarden.notify import verify_signature

    out = []
    for headers, body in list(sink.server.received):  # type: ignore[attr-defined]
        assert verify_signature(
            HMAC.encode(), headers, body, now=datetime.now(UTC), tolerance=timedelta(hours=1)
        )
        out.append(json.loads(body)["data"])
    return out


def access_handled(serve_url: str) -> float:
    """Access events a running serve's monitor has handled (its /metrics)."""
    text = httpx.get(f"{serve_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    for line in text.splitlines():
        if line.startswith("regwarden_access_events_handled_total "):
            return float(line.split()[1])
    return 0.0


def start_sink() -> LoopbackServer:
    sink = LoopbackServer(Sink).start()
    sink.server.received = []  # type: ignore[attr-defined]
    return sink
