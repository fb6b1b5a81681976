"""The chaos harness for `regwarden serve` on the distribution path (issue #11, "Done when").

    registry ──notifications──▶ NotifyTap ──▶ serve (a subprocess, SIGKILLed and restarted)
        ▲                        (records what serve acknowledged)    │
        └──────────── KillProxy ◀──── every registry call of serve ───┘
                      (holds the Nth write; the test kills serve around it)

- `KillProxy` (an `AgentFaultProxy`) is the registry serve knows (the policy's `registries:`
  names its host). It counts regwarden's writes (PUT/POST/PATCH/DELETE with regwarden's
  User-Agent) and HOLDS the Nth one: `before` — not forwarded yet; `after` — forwarded and
  answered by the registry, the answer not passed on. The test SIGKILLs serve while the
  request is held; the proxy then drops it. So `before` means the write never landed and
  `after` means it landed but serve never learnt it did.
- `NotifyTap` relays the registry's notifications to serve and records every event serve
  answered 2xx for: what "acknowledged" means, observed from outside the product. It can
  hold a push's notification the same way (before serve stores it; after serve stored and
  answered it, the answer kept from the registry, which delivers the event again).
- `AlertSink` is the webhook channel; it de-duplicates on the CloudEvents `id` and counts
  repeated deliveries separately (alerts are at-least-once by design). It can hold an
  alert too (before taking it in; after, never answering).
- `ChaosServe` restarts serve on the same ledger and port; `ChaosLedger` reads the SQLite
  ledger directly; `placement` reads the registry by digest (never through the proxy).
- `ChaosRig` puts it together: `move_trial` (one image or index, one or more kill points),
  `delivery_trial`, `alert_trial` and `burst_trial` (N pushes, one kill at a random
  write), each ending in a `TrialResult`.

After a restart the rig waits on conditions — every push acknowledged, queue drained, no
unfinished intent, outbox empty — then checks the registry and the ledger; the recovery
time is restart → all of that holds. A trial that never gets there is judged as it stands
at its deadline (`recovered: false`).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

import httpx

from regwarden import USER_AGENT
from regwarden.devtools import (
    Content,
    IndexBlobs,
    LocalRegistry,
    free_port,
    make_image,
    make_multiarch,
    push_image,
    skopeo_copy,
    write_layout,
)
from regwarden.oci import RegistryClient
from support.gate import TOKEN, generate_keys
from support.loopback import LoopbackServer
from support.proxy import _Handler
from support.streams import AgentFaultProxy, Ledger, Serve, cli_env

REGWARDEN_AGENT = USER_AGENT.split("/")[0] + "/"
CI_AGENT = "chaos-ci/1.0"
"""Who pushes and looks: never taken for regwarden."""
WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})
When = Literal["before", "after"]

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: "{registry}", kind: distribution}}
defaults:
  mode: enforce
  team: chaos
  settleWindow: 1s
  quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
  signatures:
    required: true
    cosign: {{keys: ["file://keys/cosign.pub"]}}
    gracePeriod: 0s
repositories:
  - match: "**/pass-*"
    signatures: {{required: false}}
notifications:
  channels:
    hook: {{type: webhook, url: "{hook}", secret: "secret://hmac"}}
  routes:
    - {{match: {{team: chaos}}, to: [hook]}}
"""
"""Unsigned images fail at once (no grace period) and are moved; `…/pass-*` repositories
need no signature, so their images pass untouched."""


def chaos_policy(registry: str, hook: str) -> str:
    return POLICY.format(registry=registry, hook=hook)


# -- kill points ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    """Kill serve at the `n`th write of regwarden's (counted from arming) that matches
    `method` and `path` (a regex on the path), `before` it is forwarded or `after` the
    registry answered it."""

    n: int
    when: When
    method: str | None = None
    path: str | None = None
    label: str = ""

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        return self.path is None or re.search(self.path, path) is not None

    @property
    def name(self) -> str:
        what = self.label or " ".join(x for x in (self.method, self.path) if x) or "write"
        return f"{self.when} {what} #{self.n}"


@dataclass
class Hold:
    """One held write: `reached` is set when the proxy holds it; set `release` after the
    kill and the proxy drops it."""

    point: KillPoint
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    request: str = ""
    status: int | None = None
    """The registry's answer (`after` only): the write landed when this is 2xx."""


class KillProxy(AgentFaultProxy):
    """An `AgentFaultProxy` that holds one of regwarden's writes (see `KillPoint`)."""

    HOLD_LIMIT = 120.0
    """A held request is dropped after this long even if nobody released it."""

    def __init__(self, upstream: str, *, agent: str = REGWARDEN_AGENT, **kwargs: Any) -> None:
        kwargs.setdefault("page_tags", False)
        kwargs.setdefault("emulate_tag_delete", False)
        super().__init__(upstream, **kwargs)
        self.agent = agent
        self.writes: list[str] = []
        """regwarden's writes since the last `arm`/`count_writes`, as `METHOD path`."""
        self._hold: Hold | None = None
        self._matched = 0

    def count_writes(self) -> None:
        """Start counting regwarden's writes afresh (no hold)."""
        with self._lock:
            self.writes = []
            self._hold = None
            self._matched = 0

    def arm(self, point: KillPoint) -> Hold:
        hold = Hold(point)
        with self._lock:
            self.writes = []
            self._matched = 0
            self._hold = hold
        return hold

    def disarm(self) -> None:
        with self._lock:
            hold, self._hold = self._hold, None
        if hold is not None:
            hold.release.set()

    def _claim(self, method: str, path: str, agent: str) -> Hold | None:
        if method not in WRITE_METHODS or not agent.startswith(self.agent):
            return None
        with self._lock:
            self.writes.append(f"{method} {path}")
            hold = self._hold
            if hold is None or not hold.point.matches(method, path):
                return None
            self._matched += 1
            if self._matched != hold.point.n:
                return None
            self._hold = None
            return hold

    def start(self) -> KillProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):  # serve was killed meanwhile
                    self.close_connection = True

            def _handle(self) -> None:
                proxy._current.agent = self.headers.get("User-Agent") or ""
                try:
                    super()._handle()
                except (BrokenPipeError, ConnectionResetError):  # serve was killed meanwhile
                    self.close_connection = True

            def _forward(
                self,
                method: str,
                path: str,
                query: str,
                body: bytes,
                tampers: list[Callable[[bytes], bytes]],
            ) -> None:
                agent = self.headers.get("User-Agent") or ""
                hold = proxy._claim(method, path, agent)
                if hold is None:
                    super()._forward(method, path, query, body, tampers)
                    return
                hold.request = f"{method} {path}"
                if hold.point.when == "after":
                    try:
                        response = self._upstream(method, self.path, body)
                    except httpx.HTTPError as exc:  # nothing landed: say so in the record
                        hold.request += f" (upstream failed: {exc})"
                    else:
                        hold.status = response.status_code
                self._log(method, path, query, hold.status, f"held-{hold.point.when}")
                hold.reached.set()
                hold.release.wait(proxy.HOLD_LIMIT)
                self._drop()

            def _drop(self) -> None:
                """Reset the connection: the (dead) client never gets an answer."""
                self.close_connection = True
                try:
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                except OSError:
                    pass

        self._server = LoopbackServer(Handler).start()
        return self

    def stop(self) -> None:
        self.disarm()
        super().stop()

    def __enter__(self) -> KillProxy:
        return self.start()


# -- acknowledged notifications ---------------------------------------------------------------


@dataclass(frozen=True)
class AckedEvent:
    """One event of a notification serve answered 2xx for."""

    id: str
    action: str
    repository: str
    digest: str | None
    tag: str | None
    media_type: str | None
    agent: str

    @property
    def delivery(self) -> str:
        """The pipeline's delivery id for it (`<source>:<event id>`)."""
        return f"distribution:{self.id}"


def _acked(event: dict[str, Any]) -> AckedEvent:
    target = event.get("target") or {}
    return AckedEvent(
        id=str(event.get("id")),
        action=str(event.get("action")),
        repository=str(target.get("repository")),
        digest=target.get("digest"),
        tag=target.get("tag"),
        media_type=target.get("mediaType"),
        agent=str((event.get("request") or {}).get("useragent") or ""),
    )


class _Holder:
    """Holds the Nth request it counts after `arm` (the kill point of a tap or a sink)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hold: Hold | None = None
        self._seen = 0

    def arm(self, point: KillPoint) -> Hold:
        """Hold the `point.n`th counted request from now on."""
        hold = Hold(point)
        with self._lock:
            self._seen = 0
            self._hold = hold
        return hold

    def disarm(self) -> None:
        with self._lock:
            hold, self._hold = self._hold, None
        if hold is not None:
            hold.release.set()

    def _next(self) -> Hold | None:
        """Count one request; the armed hold when it is the one to hold."""
        with self._lock:
            self._seen += 1
            hold = self._hold
            if hold is None or self._seen != hold.point.n:
                return None
            self._hold = None
            return hold


class NotifyTap(_Holder):
    """Relays a registry's notifications to `target`, recording what was acknowledged.
    While serve is down it answers 503, so the registry delivers again, as it would.

    It can hold the Nth notification that reports a manifest push by anyone but regwarden
    (`arm`): `before` — not relayed yet; `after` — relayed and answered by serve, the answer
    kept from the registry. Either way the registry then gets a 503 and delivers it again
    (after `after`, serve has it twice: a redelivery of an event it already stored)."""

    HOLD_LIMIT = 120.0

    def __init__(self, target: str) -> None:
        super().__init__()
        tap = self
        self.target = target
        self.acked: list[AckedEvent] = []
        self.refused = 0
        self._client = httpx.Client(timeout=10)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = tap._relay(body, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = LoopbackServer(Handler)

    @property
    def url(self) -> str:
        return f"{self._server.url}/events"

    def _claim(self, events: list[AckedEvent]) -> Hold | None:
        pushed = [
            e
            for e in events
            if e.action == "push"
            and e.tag is not None  # a tagged manifest: blobs carry no tag
            and not e.agent.startswith(REGWARDEN_AGENT)
        ]
        if not pushed:
            return None
        hold = self._next()
        if hold is None:
            return None
        hold.request = f"notify {pushed[0].repository}:{pushed[0].tag}"
        return hold

    def _relay(self, body: bytes, headers: dict[str, str]) -> int:
        events = [_acked(e) for e in json.loads(body).get("events") or []]
        hold = self._claim(events)
        if hold is not None and hold.point.when == "before":
            hold.reached.set()
            hold.release.wait(self.HOLD_LIMIT)
            return 503
        forward = {
            k: v for k, v in headers.items() if k.lower() in ("authorization", "content-type")
        }
        try:
            response = self._client.post(self.target, content=body, headers=forward)
        except httpx.HTTPError:
            response = None
        if hold is not None:  # `after`: serve answered (or died); the registry never hears it
            hold.status = response.status_code if response is not None else None
            hold.reached.set()
            hold.release.wait(self.HOLD_LIMIT)
            return 503
        if response is None or not 200 <= response.status_code < 300:
            with self._lock:
                self.refused += 1
            return 503 if response is None else response.status_code
        with self._lock:
            self.acked.extend(events)
        return response.status_code

    def pushes(self, repository: str, digest: str) -> list[AckedEvent]:
        """Acknowledged pushes of `digest` to `repository` by anyone but regwarden."""
        with self._lock:
            events = list(self.acked)
        return [
            e
            for e in events
            if e.action == "push"
            and e.repository == repository
            and e.digest == digest
            and not e.agent.startswith(REGWARDEN_AGENT)
        ]

    def start(self) -> NotifyTap:
        self._server.start()
        return self

    def stop(self) -> None:
        self.disarm()
        self._server.stop()
        self._client.close()


# -- alerts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedAlert:
    id: str
    data: dict[str, Any]

    def about(self, digest: str) -> bool:
        return digest in json.dumps(self.data)


class AlertSink(_Holder):
    """The webhook channel's receiver: every delivery kept. Signatures are not checked here
    (their scheme has tests of its own); what matters is the CloudEvents `id`.

    Like the proxy, it can hold the Nth alert POST after `arm`: `before` — not taken in;
    `after` — kept, as a receiver that processed it, but serve (killed meanwhile) never
    gets the answer, so the alert is delivered again."""

    HOLD_LIMIT = 120.0

    def __init__(self) -> None:
        super().__init__()
        sink = self
        self.received: list[bytes] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hold = sink._next()
                if hold is None or hold.point.when == "after":
                    with sink._lock:
                        sink.received.append(body)
                if hold is None:
                    self.send_response(204)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                hold.request = "POST alert"
                hold.status = 204 if hold.point.when == "after" else None
                hold.reached.set()
                hold.release.wait(sink.HOLD_LIMIT)
                self.close_connection = True
                try:
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                except OSError:
                    pass

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self._server = LoopbackServer(Handler).start()

    @property
    def url(self) -> str:
        return f"{self._server.url}/hook"

    def deliveries(self) -> list[ReceivedAlert]:
        out = []
        with self._lock:
            bodies = list(self.received)
        for body in bodies:
            doc = json.loads(body)
            out.append(ReceivedAlert(str(doc["id"]), dict(doc["data"])))
        return out

    def for_digest(self, digest: str) -> tuple[list[ReceivedAlert], int]:
        """Distinct alerts about `digest` (by CloudEvents id) and how many deliveries repeated
        one already received."""
        seen: dict[str, ReceivedAlert] = {}
        repeats = 0
        for alert in self.deliveries():
            if not alert.about(digest):
                continue
            if alert.id in seen:
                repeats += 1
            else:
                seen[alert.id] = alert
        return list(seen.values()), repeats

    def stop(self) -> None:
        self.disarm()
        self._server.stop()


# -- the serve process ------------------------------------------------------------------------


@dataclass
class ChaosServe(Serve):
    """`regwarden serve` that can be SIGKILLed and restarted on the same ledger and port.
    Each incarnation logs to its own file (`serve-<n>.log`). `product`: run the
    `regwarden` package found there (a `shared/` directory, e.g. an older commit's, for
    before/after figures) instead of the installed one."""

    policy: Path = Path()
    port: int = 0
    workers: int = 4
    incarnation: int = 0
    product: Path | None = None

    @classmethod
    def launch(
        cls,
        root: Path,
        policy: Path,
        port: int,
        *,
        workers: int = 4,
        incarnation: int = 0,
        product: Path | None = None,
        timeout: float = 60.0,
    ) -> ChaosServe:
        (root / "tokens").write_text(TOKEN + "\n")
        log = root / f"serve-{incarnation}.log"
        ledger = root / "ledger.db"
        args = [sys.executable, "-m", "regwarden", "--ledger", str(ledger), "serve"]
        args += ["--policy", str(policy), "--port", str(port)]
        args += ["--auth-token-file", str(root / "tokens"), "--workers", str(workers)]
        env = cli_env()
        if product is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(product), env.get("PYTHONPATH")]))
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
        serve = cls(
            root,
            f"http://127.0.0.1:{port}",
            ledger,
            log,
            proc,
            policy=policy,
            port=port,
            workers=workers,
            incarnation=incarnation,
            product=product,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1) as probe:
            while True:
                try:
                    if probe.get(f"{serve.url}/healthz").status_code == 200:
                        return serve
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    serve.stop()
                    raise RuntimeError(f"regwarden serve did not start:\n{log.read_text()}")
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed but what the OS keeps."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> ChaosServe:
        return self.launch(
            self.root,
            self.policy,
            self.port,
            workers=self.workers,
            incarnation=self.incarnation + 1,
            product=self.product,
        )

    def logs(self, tail: int = 6000) -> str:
        parts = []
        for n in range(self.incarnation + 1):
            path = self.root / f"serve-{n}.log"
            if path.exists():
                parts.append(f"--- serve-{n}.log ---\n" + path.read_text(errors="replace"))
        return "\n".join(parts)[-tail:]


# -- the ledger -------------------------------------------------------------------------------


@dataclass
class ChaosLedger(Ledger):
    """What the recovery conditions and the invariants read from serve's ledger."""

    def _count(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        try:
            return int(self._rows(sql, args)[0][0])
        except sqlite3.OperationalError as exc:  # a table an older ledger lacks
            if "no such table" in str(exc):
                return 0
            raise

    def undone(self) -> int:
        """Queued deliveries and rechecks not finished (leased, waiting or due)."""
        return self._count("SELECT count(*) FROM queue WHERE done_at IS NULL")

    def undone_bodies(self) -> list[str]:
        rows = self._rows("SELECT body FROM queue WHERE done_at IS NULL")
        return [bytes(b).decode(errors="replace") for (b,) in rows]

    def unsent_alerts(self) -> list[str]:
        try:
            rows = self._rows("SELECT alert FROM outbox WHERE sent_at IS NULL")
        except sqlite3.OperationalError:  # no outbox: alerts were sent inline
            return []
        return [str(a) for (a,) in rows]

    def unfinished_intents(self, digests: Sequence[str] | None = None) -> int:
        if digests is None:
            return self._count("SELECT count(*) FROM actions WHERE status = 'intent'")
        marks = ",".join("?" * len(digests))
        return self._count(
            f"SELECT count(*) FROM actions WHERE status = 'intent' AND digest IN ({marks})",  # noqa: S608
            tuple(digests),
        )

    def outbox_unsent(self) -> int:
        return self._count("SELECT count(*) FROM outbox WHERE sent_at IS NULL")

    def verdict_log_used(self) -> bool:
        """Whether this build writes the verdict log (the baseline does not)."""
        return self._count("SELECT count(*) FROM verdict_log") > 0

    def verdict_log(self, digest: str) -> list[tuple[str | None, str]]:
        """(delivery id, outcome) of every verdict recorded for `digest`."""
        try:
            rows = self._rows(
                "SELECT delivery_id, outcome FROM verdict_log WHERE digest = ? ORDER BY at",
                (digest,),
            )
        except sqlite3.OperationalError:
            return []
        return [(None if d is None else str(d), str(o)) for d, o in rows]

    def current_verdict(self, repo: str, digest: str) -> str | None:
        rows = self._rows(
            "SELECT outcome FROM verdicts WHERE repository = ? AND digest = ?", (repo, digest)
        )
        return str(rows[0][0]) if rows else None

    def actions_for(self, digest: str) -> list[tuple[str, str]]:
        """(kind, status) of every action recorded for `digest`."""
        rows = self._rows("SELECT kind, status FROM actions WHERE digest = ?", (digest,))
        return [(str(k), str(s)) for k, s in rows]


# -- the registry's state ---------------------------------------------------------------------


def manifests_of(content: Content) -> list[str]:
    """The top manifest, then an index's children."""
    top = content.manifest_digest
    return [top, *(d for d in content.manifests if d != top)]


def placement(client: RegistryClient, repo: str, qrepo: str, content: Content) -> str:
    """`quarantined` (every manifest gone from `repo`, all of it — manifests and blobs — in
    `qrepo`), `untouched` (all in `repo`, no manifest in `qrepo`), else `half-done: …`."""
    digests = manifests_of(content)
    in_source = [d for d in digests if client.head_manifest(repo, d) is not None]
    in_quarantine = [d for d in digests if client.head_manifest(qrepo, d) is not None]
    if not in_source and len(in_quarantine) == len(digests):
        missing = [b for b in content.blobs if not client.blob_exists(qrepo, b)]
        if not missing:
            return "quarantined"
        return f"half-done: {len(missing)} blob(s) missing from {qrepo}"
    if len(in_source) == len(digests) and not in_quarantine:
        return "untouched"
    return (
        f"half-done: {len(in_source)}/{len(digests)} manifest(s) still in {repo}, "
        f"{len(in_quarantine)}/{len(digests)} in {qrepo}"
    )


# -- results ----------------------------------------------------------------------------------


@dataclass
class Expect:
    """One pushed image and what must become of it."""

    repo: str
    tag: str
    content: Content
    fails: bool
    """Unsigned in a gated repository: FAILED and moved. Else PASSED and left alone."""

    @property
    def digest(self) -> str:
        return self.content.manifest_digest

    @property
    def qrepo(self) -> str:
        return f"quarantine/{self.repo}"


@dataclass
class TrialResult:
    """One trial (a move with one kill, or a burst with one kill), as one JSON line."""

    test: str
    kill: str
    trials: int = 1
    images: int = 0
    acknowledged: int = 0
    lost: int = 0
    """Acknowledged pushes with no verdict."""
    half_done: int = 0
    """Images neither whole in quarantine nor untouched, or left with an unfinished intent."""
    wrong: int = 0
    """Images whole but in the wrong place (a passing image moved, a failing one kept)."""
    duplicated_verdicts: int = 0
    duplicated_actions: int = 0
    unattributed: int = 0
    """Acknowledged deliveries whose image has its verdict, but under another delivery."""
    sweep_verdicts: int = 0
    """Verdicts the recovery sweep recorded (no delivery of its own); reported, not judged."""
    missing_alerts: int = 0
    duplicate_alert_deliveries: int = 0
    recovered: bool = False
    recovery_s: float | None = None
    writes: int = 0
    """regwarden's writes seen by the proxy since the kill point was armed."""
    held: str = ""
    held_status: int | None = None
    seed: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Recovered, with every invariant holding."""
        return self.recovered and self.holds

    @property
    def holds(self) -> bool:
        """Every invariant holds (duplicate alert deliveries are allowed)."""
        return (
            self.lost == 0
            and self.half_done == 0
            and self.wrong == 0
            and self.duplicated_verdicts == 0
            and self.duplicated_actions == 0
            and self.unattributed == 0
            and self.missing_alerts == 0
        )

    def json_line(self) -> str:
        doc = asdict(self)
        doc["problems"] = self.problems[:10]
        return json.dumps(doc, sort_keys=True)


def summarize(name: str, results: Sequence[TrialResult]) -> dict[str, Any]:
    """The figures over many trials."""
    times = sorted(r.recovery_s for r in results if r.recovery_s is not None)
    return {
        "test": name,
        "trials": len(results),
        "ok": sum(1 for r in results if r.ok),
        "images": sum(r.images for r in results),
        "lost": sum(r.lost for r in results),
        "half_done": sum(r.half_done for r in results),
        "wrong": sum(r.wrong for r in results),
        "duplicated_verdicts": sum(r.duplicated_verdicts for r in results),
        "duplicated_actions": sum(r.duplicated_actions for r in results),
        "unattributed": sum(r.unattributed for r in results),
        "sweep_verdicts": sum(r.sweep_verdicts for r in results),
        "missing_alerts": sum(r.missing_alerts for r in results),
        "duplicate_alert_deliveries": sum(r.duplicate_alert_deliveries for r in results),
        "not_recovered": sum(1 for r in results if not r.recovered),
        "recovery_s_median": times[len(times) // 2] if times else None,
        "recovery_s_max": times[-1] if times else None,
    }


# -- the rig ----------------------------------------------------------------------------------


class ChaosRig:
    """A real registry notifying serve through the tap, serve reaching it through the kill
    proxy, alerts into the sink. One rig serves many trials (each in fresh repositories)."""

    def __init__(self, root: Path, *, workers: int = 4, product: Path | None = None) -> None:
        self.root = root
        self.workers = workers
        self.product = product
        self._stack = ExitStack()
        self.trials = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> ChaosRig:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        stack = self._stack
        generate_keys(self.root)
        self.sink = AlertSink()
        stack.callback(self.sink.stop)
        self.port = free_port()
        self.tap = NotifyTap(f"http://127.0.0.1:{self.port}/events/distribution").start()
        stack.callback(self.tap.stop)
        self.registry = stack.enter_context(
            LocalRegistry(
                notifications=self.tap.url,
                notification_headers={"Authorization": f"Bearer {TOKEN}"},
                notification_timeout="5s",
                notification_backoff="200ms",
                # what the README recommends, plus pulls: the checks' reads make no events
                ignored_media_types=["application/octet-stream"],
                ignored_actions=["pull", "delete"],
            )
        )
        self.proxy = stack.enter_context(KillProxy(self.registry.host))
        self.policy = self.root / "regwarden.yaml"
        self.policy.write_text(chaos_policy(self.proxy.host, self.sink.url))
        self.serve = ChaosServe.launch(
            self.root, self.policy, self.port, workers=self.workers, product=self.product
        )
        stack.callback(lambda: self.serve.stop())
        self.ledger = ChaosLedger(self.serve.ledger_path)
        self.pusher = stack.enter_context(
            RegistryClient(self.proxy.host, user_agent=CI_AGENT, backoff=0.05)
        )
        self.reader = stack.enter_context(
            RegistryClient(self.registry.host, user_agent=CI_AGENT, backoff=0.05)
        )

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> ChaosRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pushing ------------------------------------------------------------------------------

    def fresh_repo(self, prefix: str) -> str:
        self.trials += 1
        return f"chaos/{prefix}-{self.trials}-{uuid.uuid4().hex[:6]}"

    def push(self, expect: Expect) -> None:
        """An image with regwarden's client as CI; an index with `skopeo copy --all` (its
        children by digest, then the index by tag), both through the proxy so every event
        names the host serve is configured with."""
        if isinstance(expect.content, IndexBlobs):
            layout = self.root / "layouts" / uuid.uuid4().hex
            write_layout(layout, expect.content, tag=expect.tag)
            try:
                skopeo_copy(
                    f"oci:{layout}:{expect.tag}",
                    f"docker://{self.proxy.host}/{expect.repo}:{expect.tag}",
                )
            finally:
                shutil.rmtree(layout, ignore_errors=True)
        else:
            push_image(self.pusher, expect.repo, expect.content, tag=expect.tag)

    # -- killing and waiting ------------------------------------------------------------------

    def kill_at(self, hold: Hold, *, timeout: float = 120.0) -> None:
        """Wait until the proxy holds the write, SIGKILL serve, let the proxy drop it."""
        if not hold.reached.wait(timeout):
            self.proxy.disarm()
            self.sink.disarm()
            self.tap.disarm()
            raise AssertionError(
                f"kill point {hold.point.name} never reached; regwarden's writes: "
                f"{self.proxy.writes}\n{self.serve.logs()}"
            )
        self.serve.kill()
        hold.release.set()

    def restart(self) -> float:
        """Start serve again on the same ledger and port; the monotonic time it began."""
        began = time.monotonic()
        self.serve = self.serve.restart()
        return began

    def unacknowledged(self, expects: Sequence[Expect]) -> int:
        """Manifest pushes (images, indexes and their children) serve has not acknowledged."""
        return sum(
            1 for e in expects for d in manifests_of(e.content) if not self.tap.pushes(e.repo, d)
        )

    def quiet(self, expects: Sequence[Expect]) -> bool:
        """For these images: every push acknowledged, nothing queued, no intent unfinished,
        no alert unsent. (Only theirs: a trial that failed earlier must not hold up the
        next one.)"""
        if self.unacknowledged(expects):
            return False
        repos = [e.repo for e in expects]
        if any(r in body for body in self.ledger.undone_bodies() for r in repos):
            return False
        if self.ledger.unfinished_intents([e.digest for e in expects]):
            return False
        digests = [e.digest for e in expects]
        return not any(d in alert for alert in self.ledger.unsent_alerts() for d in digests)

    def recover(
        self, result: TrialResult, expects: Sequence[Expect], began: float, *, deadline: float
    ) -> TrialResult:
        """Wait until quiet and every invariant holds, or the deadline; fill `result`."""
        end = began + deadline
        next_check = 0.0
        while True:
            now = time.monotonic()
            if now >= next_check and self.quiet(expects):
                self.judge(result, expects)
                if result.holds or now > end:
                    result.recovered = result.holds
                    result.recovery_s = round(time.monotonic() - began, 2) if result.holds else None
                    return result
                next_check = now + 2.0  # reading the registry costs: not every poll
            if now > end:
                self.judge(result, expects)
                result.recovered = False
                result.problems.append(
                    f"not quiet after {deadline:.0f}s: {self.unacknowledged(expects)} push(es) "
                    f"unacknowledged, {self.ledger.undone()} queued, "
                    f"{self.ledger.unfinished_intents()} unfinished intent(s), "
                    f"{self.ledger.outbox_unsent()} unsent alert(s)"
                )
                return result
            time.sleep(0.1)

    # -- invariants ---------------------------------------------------------------------------

    def judge(self, result: TrialResult, expects: Sequence[Expect]) -> None:
        """Check every image against the registry, the ledger and the sink (fills `result`
        afresh)."""
        for name in (
            "sweep_verdicts",
            "lost",
            "half_done",
            "wrong",
            "duplicated_verdicts",
            "duplicated_actions",
            "unattributed",
            "missing_alerts",
            "duplicate_alert_deliveries",
        ):
            setattr(result, name, 0)
        result.problems = []
        result.images = len(expects)
        use_log = self.ledger.verdict_log_used()
        acked = 0
        for e in expects:
            deliveries = {a.delivery for a in self.tap.pushes(e.repo, e.digest)}
            acked += len(deliveries)
            self._judge_image(result, e, deliveries, use_log=use_log)
        result.acknowledged = acked

    def _judge_image(
        self, result: TrialResult, e: Expect, deliveries: set[str], *, use_log: bool
    ) -> None:
        def problem(counter: str, text: str) -> None:
            setattr(result, counter, getattr(result, counter) + 1)
            result.problems.append(f"{e.repo}@{e.digest[:19]}: {text}")

        where = placement(self.reader, e.repo, e.qrepo, e.content)
        wanted = "quarantined" if e.fails else "untouched"
        outcome = "FAILED" if e.fails else "PASSED"
        if where.startswith("half-done"):
            problem("half_done", where)
        elif where != wanted:
            problem("wrong", f"{where}, expected {wanted}")
        intents = self.ledger.unfinished_intents([e.digest])
        if intents and not where.startswith("half-done"):
            problem("half_done", f"{intents} unfinished intent(s) in the ledger")
        if use_log:
            # Exactly one verdict per acknowledged delivery. The recovery sweep has no
            # delivery of its own: its verdicts (delivery None) are counted, not judged.
            log = self.ledger.verdict_log(e.digest)
            per_delivery = Counter(d for d, _ in log)
            result.sweep_verdicts += per_delivery[None]
            if not log:
                problem("lost", "no verdict")
            for d in sorted(deliveries):
                if per_delivery[d] > 1:
                    problem("duplicated_verdicts", f"{per_delivery[d]} verdicts for {d}: {log}")
                elif per_delivery[d] == 0 and log:
                    problem("unattributed", f"acknowledged {d} has no verdict; the image has {log}")
            others = [d for d in per_delivery if d is not None and d not in deliveries]
            if others:
                problem("duplicated_verdicts", f"verdicts from unacknowledged deliveries: {log}")
            outcomes = {o for _, o in log}
        else:
            current = self.ledger.current_verdict(e.repo, e.digest)
            if current is None:
                problem("lost", "no verdict")
            outcomes = {current} if current else set()
        if outcomes and outcomes != {outcome}:
            problem("wrong", f"verdict {sorted(outcomes)}, expected {outcome}")
        moves = [s for k, s in self.ledger.actions_for(e.digest) if k == "quarantine"]
        if len(moves) > 1:
            problem("duplicated_actions", f"{len(moves)} quarantine actions: {moves}")
        alerts, repeats = self.sink.for_digest(e.digest)
        result.duplicate_alert_deliveries += repeats
        if e.fails and not any(a.data.get("action") == "quarantine" for a in alerts):
            got = [(a.data.get("outcome"), a.data.get("action")) for a in alerts]
            problem("missing_alerts", f"no quarantine alert (got {got})")

    # -- trials -------------------------------------------------------------------------------

    def move_trial(
        self,
        shape: Literal["image", "index"],
        point: KillPoint | Sequence[KillPoint] | None,
        *,
        deadline: float,
    ) -> TrialResult:
        """Push one unsigned image (or multi-arch index), kill serve at `point` during its
        move, restart, and judge. Several points: the next one is armed before each restart,
        so it counts the writes of the resumed move. Without a point: no kill (calibration)."""
        points = [point] if isinstance(point, KillPoint) else list(point or ())
        repo = self.fresh_repo(shape)
        seed = self.trials
        content: Content = (
            make_multiarch(seed=seed, layer_size=256)
            if shape == "index"
            else make_image(seed=seed, layer_size=256)
        )
        expect = Expect(repo, "v1", content, fails=True)
        result = TrialResult(f"move-{shape}", ", then ".join(p.name for p in points) or "none")
        if points:
            hold = self.proxy.arm(points[0])
        else:
            self.proxy.count_writes()
        began = time.monotonic()
        self.push(expect)
        held: list[str] = []
        for n in range(len(points)):
            self.kill_at(hold)
            held.append(hold.request)
            result.held_status = hold.status
            if n + 1 < len(points):  # armed before the restart: it counts the resumed writes
                hold = self.proxy.arm(points[n + 1])
            began = self.restart()
        result.held = ", then ".join(held)
        self.recover(result, [expect], began, deadline=deadline)
        result.writes = len(self.proxy.writes)
        return result

    def alert_trial(self, point: KillPoint, *, deadline: float) -> TrialResult:
        """Kill serve while the sink holds the `point.n`th alert POST of a move: before the
        sink took it in, or after (taken in, never answered: sent again after the restart,
        a duplicate delivery the CloudEvents id lets a receiver drop)."""
        return self._held_push_trial("alert", self.sink, point, deadline=deadline)

    def delivery_trial(self, point: KillPoint, *, deadline: float) -> TrialResult:
        """Kill serve while the tap holds the notification of an unsigned image's push:
        before serve got it, or after serve stored and answered it (its answer never reaches
        the registry, which delivers the event again: serve then holds it twice)."""
        result = self._held_push_trial("delivery", self.tap, point, deadline=deadline)
        result.writes = len(self.proxy.writes)
        return result

    def _held_push_trial(
        self, kind: str, holder: _Holder, point: KillPoint, *, deadline: float
    ) -> TrialResult:
        """Push an unsigned image, kill serve where `holder` holds its request, restart and
        wait for everything to hold."""
        repo = self.fresh_repo(kind)
        expect = Expect(repo, "v1", make_image(seed=self.trials, layer_size=64), fails=True)
        result = TrialResult(kind, point.name)
        self.proxy.count_writes()
        hold = holder.arm(point)
        self.push(expect)
        self.kill_at(hold)
        result.held, result.held_status = hold.request, hold.status
        began = self.restart()
        self.recover(result, [expect], began, deadline=deadline)
        return result

    def burst_trial(
        self, n: int, *, seed: int, deadline: float, fail_every: int = 2, pushers: int = 4
    ) -> TrialResult:
        """Push `n` images at once (every `fail_every`th unsigned in a gated repository, the
        rest passing), kill serve at a random write of the moves, restart, judge them all."""
        rng = random.Random(seed)
        run = uuid.uuid4().hex[:6]
        expects = []
        for i in range(n):
            fails = i % fail_every == 0
            repo = f"chaos/burst-{run}/{'fail' if fails else 'pass'}-{i}"
            image = make_image(seed=seed * 100_000 + i, layer_size=128)
            expects.append(Expect(repo, "v1", image, fails=fails))
        moves = sum(1 for e in expects if e.fails)
        # a move writes 4 times (2 mounts, the manifest, the delete): kill inside the burst
        point = KillPoint(
            rng.randint(1, max(1, moves * 4 * 3 // 4)),
            rng.choice(("before", "after")),
            label="write of the burst",
        )
        result = TrialResult(f"burst-{n}", point.name, seed=seed)
        hold = self.proxy.arm(point)
        with ThreadPoolExecutor(pushers) as pool:
            pushed = [pool.submit(self.push, e) for e in expects]
            self.kill_at(hold, timeout=deadline)
            result.held, result.held_status = hold.request, hold.status
            began = self.restart()
            for f in pushed:
                f.result()
        self.recover(result, expects, began, deadline=deadline)
        result.writes = len(self.proxy.writes)
        return result

    def calibrate(self, shape: Literal["image", "index"], *, deadline: float) -> list[str]:
        """regwarden's writes for one move with no kill, in order (the kill points)."""
        result = self.move_trial(shape, None, deadline=deadline)
        if not result.ok:
            raise AssertionError(
                f"calibration move of an {shape} failed: {result.json_line()}\n{self.serve.logs()}"
            )
        return list(self.proxy.writes)


PRODUCT_ENV = "REGWARDEN_CHAOS_PRODUCT"
"""A `shared/` directory whose `regwarden` serve runs instead of the installed one."""


def product_from_env() -> Path | None:
    value = os.environ.get(PRODUCT_ENV)
    return Path(value) if value else None


@contextmanager
def chaos_rig(root: Path, *, workers: int = 4, product: Path | None = None) -> Iterator[ChaosRig]:
    rig = ChaosRig(root, workers=workers, product=product).start()
    try:
        yield rig
    finally:
        rig.close()
