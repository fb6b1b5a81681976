"""Chaos on Google Cloud: the `on_push` function SIGKILLed at every write of a `move`, then
started again and the same Pub/Sub message delivered again (issue #13, "Done when").

The function runs as Cloud Run runs it, a process of its own — `functions-framework
--target on_push --source functions/gcp/main.py` — with its ledger in Firestore
(`FakeFirestore`, which outlives the process as Firestore would) and the stand-ins of the
GCP functions' tests (`support.gcp_harness`: Artifact Registry's `/v2/` front and API
over a real docker-registry, Pub/Sub for the alerts). The push is delivered over HTTP as
a push subscription delivers it.

Kill points come from `FakeGar.park`: it holds the function's Nth write to the registry —
an Artifact Registry call (createTag, deleteTag, deleteVersion …) or a `/v2/` write (a
blob mount, a manifest PUT, a DELETE) — `before` it is served (it never lands) or `after`
(it landed, the function never heard). The test kills the function there, starts a new
process, and delivers the message again with the next `deliveryAttempt`, as Pub/Sub does
with a push it never got an answer for. Every trial must end with:

- the registry whole: every manifest and blob of the image in `PROJECT/quarantine/…`,
  nothing left at the source, only `quarantined-…` on it (no half-move, no stray tag);
- one verdict for the message in the ledger's verdict log, one quarantine action, done,
  and no intent left unfinished;
- the quarantine alert on the alerts topic (a repeat of the same alert — same dedup key —
  is allowed: alerts are at-least-once).

A clean run of each shape (one image; a 2-platform index pushed with `skopeo copy --all`)
finds its writes in order; each write and side of it is a kill point. `CI=true` runs a few
of them (the first write before it lands, the copy's last write after, the last write
after); the full set runs otherwise. One more trial kills a move and never delivers the
message again: the `recovery` function's sweep finishes the intent, with its alert. Each
test prints its figures as one JSON line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import functions_framework
import httpx
import pytest
from support.chaos import placement
from support.fake_firestore import FakeFirestore
from support.fake_gar import FakeGar, Parked
from support.fake_pubsub import FakePubSub
from support.gcp_harness import ALERTS, HOST, MAIN, PROJECT, TOPICS, delivery

from functions.gcp import _app
from regwarden.devtools import (
    Content,
    LocalRegistry,
    free_port,
    make_image,
    make_multiarch,
    skopeo_copy,
    write_layout,
)
from regwarden.notify import Alert
from regwarden.oci import RegistryClient
from regwarden.providers import ProviderOptions
from regwarden.providers.gar import GarRegistry
from regwarden.quarantine_names import quarantine_tag
from regwarden.signatures.keys import generate_private_key
from regwarden.store import FirestoreLedger

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORK = Path(sys.executable).parent / "functions-framework"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
LEDGER = f"firestore://{PROJECT}?prefix=chaos"
WRITES = frozenset({"PUT", "POST", "PATCH", "DELETE"})
DEADLINE = 120.0
"""Seconds a process gets to start, a delivery to be answered, a write to be reached."""
AREA = "gated"
POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: gar}}
defaults:
  mode: enforce
  team: chaos
  signatures: {{required: true, cosign: {{keys: ["file://cosign.pub"]}}, gracePeriod: 0s}}
  quarantine: {{strategy: move, repository: "{PROJECT}/quarantine/{{repository}}"}}
notifications:
  channels:
    alerts: {{type: pubsub, topic: "{ALERTS}"}}
  routes:
    - {{to: [alerts]}}
"""
"""Unsigned images fail at once and are moved."""

When = Literal["before", "after"]
Then = Literal["redeliver", "sweep", "nothing"]


def function_write(method: str, raw_path: str, headers: Mapping[str, str]) -> bool:
    """A write to the registry (the API or `/v2/`); the test writes nothing while armed."""
    return method in WRITES and raw_path != "/v2/token"


# -- the function as a process ----------------------------------------------------------------


@dataclass
class Function:
    """`functions-framework --target TARGET` on a port of its own; SIGKILLed, never
    stopped gently, between trials."""

    target: str
    env: dict[str, str]
    root: Path
    incarnation: int = 0
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> Function:
        self.incarnation += 1
        self.port = free_port()
        log = self.root / f"{self.target}-{self.incarnation}.log"
        args = [str(FRAMEWORK), "--target", self.target, "--source", str(MAIN)]
        args += ["--host", "127.0.0.1", "--port", str(self.port)]
        with log.open("wb") as out:
            # a session of its own: functions-framework serves with gunicorn, a master and
            # its worker, and the kill must take both at once (as Cloud Run's does)
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + DEADLINE
        while not self._answers():  # the port answers: the server is up
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.target} did not start:\n{self.logs()}")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL to every process of the function (gunicorn's master and worker):
        nothing is flushed, no handler runs, no orphaned worker finishes the request."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its session's group: pgid == pid
        self.proc.wait(10)

    def logs(self, tail: int = 6000) -> str:
        parts = []
        for n in range(1, self.incarnation + 1):
            path = self.root / f"{self.target}-{n}.log"
            if path.exists():
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')}")
        return "\n".join(parts)[-tail:]


# -- the rig ----------------------------------------------------------------------------------


@dataclass
class Trial:
    """One image moved with one kill (or none), as one JSON line."""

    shape: str
    kill: str
    held: str = ""
    held_status: int | None = None
    deliveries: int = 0
    statuses: list[int] = field(default_factory=list)
    placement: str = ""
    stray_tags: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    """The outcomes the verdict log holds for the message."""
    sweep_verdicts: int = 0
    quarantine_actions: list[str] = field(default_factory=list)
    unfinished: int = 0
    alerts: int = 0
    alert_keys: int = 0
    recovery_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        return self.placement == "quarantined" and not self.stray_tags and not self.unfinished

    @property
    def ok(self) -> bool:
        return not self.problems

    def judge(self, *, swept: bool = False) -> None:
        if not self.whole:
            self.problems.append(
                f"not whole: {self.placement}, stray tags {self.stray_tags}, "
                f"{self.unfinished} unfinished intent(s)"
            )
        if not swept and self.verdicts != ["FAILED"]:
            self.problems.append(f"verdicts for the message: {self.verdicts}, expected one")
        if swept and (self.verdicts or self.sweep_verdicts < 1):
            self.problems.append(
                f"verdicts: {self.verdicts} for the message, {self.sweep_verdicts} swept"
            )
        if self.quarantine_actions != ["done"]:
            self.problems.append(f"quarantine actions: {self.quarantine_actions}")
        if self.alert_keys != 1:
            self.problems.append(f"{self.alert_keys} distinct quarantine alerts, expected 1")

    def line(self) -> str:
        return json.dumps({**asdict(self), "whole": self.whole, "ok": self.ok}, sort_keys=True)


class Rig:
    """The stand-ins, the docker-registry behind them, and `on_push` as a process."""

    def __init__(self, registry: LocalRegistry, root: Path) -> None:
        self.registry = registry
        self.root = root
        self.trials = 0
        self._stack = ExitStack()
        self._pool = ThreadPoolExecutor(2)

    def start(self) -> Rig:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        stack = self._stack
        key = generate_private_key("ecdsa-p256")
        pem = key.public_key.pem
        (self.root / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
        (self.root / "policy.yaml").write_text(POLICY)
        self.gar = stack.enter_context(
            FakeGar(self.registry.host, repositories=(AREA, "quarantine"))
        )
        self.firestore = stack.enter_context(FakeFirestore())
        self.pubsub = stack.enter_context(FakePubSub())
        self.origin = stack.enter_context(RegistryClient(self.registry.host))
        self.env = {
            "REGWARDEN_POLICY": str(self.root / "policy.yaml"),
            "REGWARDEN_LEDGER": LEDGER,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "REGWARDEN_ALERTS_TOPIC": ALERTS,
            "REGWARDEN_GAR_DATA_PLANE": self.gar.host,
            "REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": self.gar.url,
            "REGWARDEN_GCP_ENDPOINT_FIRESTORE": self.firestore.url,
            "REGWARDEN_GCP_ENDPOINT_PUBSUB": self.pubsub.url,
            "REGWARDEN_RECOVERY_SETTLE": "0",
        }
        process_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REGWARDEN_")},
            **self.env,
            "PYTHONPATH": str(ROOT),
        }
        self.api = GarRegistry(
            HOST,
            ProviderOptions(data_plane_host=self.gar.host, account=PROJECT),
            env={"REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": self.gar.url},
            sleep=lambda _s: None,
        )
        stack.callback(self.api.close)
        self.ledger = FirestoreLedger(PROJECT, prefix="chaos", env=self.env)
        stack.callback(self.ledger.close)
        self.function = Function("on_push", process_env, self.root).start()
        stack.callback(self.function.kill)
        stack.callback(self._pool.shutdown, cancel_futures=True)

    def close(self) -> None:
        self._stack.close()  # FakeGar's stop releases a request still parked

    # -- one image ----------------------------------------------------------------------------

    def push(self, shape: str) -> tuple[str, Content, dict[str, Any]]:
        """A fresh unsigned image (or 2-platform index, every platform: `skopeo copy
        --all`) pushed as `:v1`; its repository, content and the push's gcr message."""
        self.trials += 1
        repo = f"{PROJECT}/{AREA}/{shape}-{self.trials}-{uuid.uuid4().hex[:6]}"
        content: Content = (
            make_multiarch(seed=9000 + self.trials, layer_size=128)
            if shape == "index"
            else make_image(seed=9000 + self.trials, layer_size=128)
        )
        layout = self.root / "layouts" / uuid.uuid4().hex[:8]
        write_layout(layout, content, tag="v1")
        skopeo_copy(f"oci:{layout}:v1", f"docker://{self.gar.host}/{repo}:v1")
        tagged = self.gar.reference(repo, tag="v1")
        (message,) = [m for m in self.gar.gcr if json.loads(m["data"]).get("tag") == tagged]
        return repo, content, {**message, "topic": TOPICS["on_push"]}

    def post(self, message: dict[str, Any], attempt: int) -> Future[int]:
        """Deliver `message` to the running function as a push subscription does; the
        answer's status, or 0 when the connection died (the function was killed)."""
        body, headers = delivery(message, "push", attempt)
        url = self.function.url

        def send() -> int:
            try:
                return httpx.post(url, content=body, headers=headers, timeout=DEADLINE).status_code
            except httpx.TransportError:
                return 0

        return self._pool.submit(send)

    def redeliver(self, trial: Trial, message: dict[str, Any], first_attempt: int) -> None:
        """Pub/Sub's redelivery until the function acknowledges the message (200)."""
        attempt = first_attempt
        while attempt < first_attempt + 5:
            status = self.post(message, attempt).result(DEADLINE)
            trial.deliveries += 1
            trial.statuses.append(status)
            if status == 200:
                return
            attempt += 1
        trial.problems.append(f"never acknowledged: {trial.statuses}")

    def kill_at(self, parked: Parked, pending: Future[int]) -> None:
        """Wait until the write is held (or the delivery ends without reaching it), SIGKILL
        the function, drop the write, start a new process."""
        deadline = time.monotonic() + DEADLINE
        while not parked.reached.wait(0.05):
            if pending.done() or time.monotonic() > deadline:
                self.gar.unpark()
                raise AssertionError(
                    f"write {parked.n} ({parked.when}) never reached; the function's writes: "
                    f"{parked.counted}; answer {pending.result() if pending.done() else None}\n"
                    f"{self.function.logs()}"
                )
        self.function.kill()
        parked.release()
        pending.result(DEADLINE)
        self.function.start()

    def writes_of(self, shape: str) -> tuple[list[str], Trial]:
        """A clean move of one `shape`: the function's writes, in order (the kill points)."""
        repo, content, message = self.push(shape)
        counter = self.gar.park(10_000, "before", function_write)  # counts, never reached
        trial = Trial(shape, "none")
        self.redeliver(trial, message, 1)
        self.gar.unpark()
        self.judge(trial, repo, content, message)
        return list(counter.counted), trial

    def trial(self, shape: str, n: int, when: When, *, then: Then = "redeliver") -> Trial:
        """Push, deliver, kill at write `n` (`when`), start a new process; `then` Pub/Sub
        delivers the message again, or only the recovery schedule ticks (`sweep`), or
        nothing happens (`nothing`: the judge must see the half-done move). Judged."""
        repo, content, message = self.push(shape)
        parked = self.gar.park(n, when, function_write)
        trial = Trial(shape, f"{when} write {n}")
        first = self.post(message, 1)
        self.kill_at(parked, first)
        trial.held, trial.held_status = parked.request, parked.status
        trial.deliveries, trial.statuses = 1, [first.result()]
        began = time.monotonic()
        if then == "redeliver":
            self.redeliver(trial, message, 2)
        elif then == "sweep":
            self.sweep(trial)
        trial.recovery_s = round(time.monotonic() - began, 2)
        self.judge(trial, repo, content, message, swept=then == "sweep")
        return trial

    def sweep(self, trial: Trial) -> None:
        """The recovery function's scheduled tick (in this process: its own state)."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        _app.reset()
        try:
            app = functions_framework.create_app("recovery", str(MAIN))  # type: ignore[no-untyped-call]
            body, headers = delivery(
                {
                    "data": b"{}",
                    "messageId": f"tick-{uuid.uuid4().hex[:8]}",
                    "publishTime": "2026-01-01T00:00:00Z",
                    "topic": f"projects/{PROJECT}/topics/regwarden-recovery-tick",
                },
                "push",
            )
            answer = app.test_client().post("/", data=body, headers=headers)
            trial.statuses.append(answer.status_code)
            report = answer.get_json(silent=True) or {}
            if answer.status_code != 200 or not report.get("resumed"):
                trial.problems.append(f"recovery answered {answer.status_code}: {report}")
        finally:
            _app.reset()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    # -- the judge ----------------------------------------------------------------------------

    def judge(
        self,
        trial: Trial,
        repo: str,
        content: Content,
        message: dict[str, Any],
        *,
        swept: bool = False,
    ) -> None:
        digest = content.manifest_digest
        held = f"{PROJECT}/quarantine/{repo}"
        trial.placement = placement(self.origin, repo, held, content)
        stray = [f"{repo}@{i.digest[:19]}: {i.tags}" for i in self.api.list_images(repo)]
        for image in self.api.list_images(held):
            wanted = (quarantine_tag(digest),) if image.digest == digest else ()
            if image.tags != wanted:
                stray.append(f"{held}@{image.digest[:19]}: {image.tags}")
        trial.stray_tags = stray
        log = self.ledger.verdict_log(HOST, repo, digest)
        delivered = f"gcr:{message['messageId']}"  # the pipeline's key: source:message id
        trial.verdicts = [o for d, o, _ in log if d == delivered]
        # the recovery sweep's verdicts carry no delivery of their own
        trial.sweep_verdicts = sum(1 for d, _, _ in log if d is None)
        others = [d for d, _, _ in log if d not in (delivered, None)]
        if others:
            trial.problems.append(f"verdicts of other deliveries: {others}")
        actions = [a for a in self.ledger.actions() if a.repository == repo]
        trial.quarantine_actions = [a.status for a in actions if a.kind == "quarantine"]
        trial.unfinished = sum(1 for a in actions if a.status == "intent")
        alerts = [
            Alert.model_validate_json(m["data"])
            for m in self.pubsub.published(ALERTS)
            if m["attributes"].get("repository") == repo
            and m["attributes"].get("action") == "quarantine"
        ]
        trial.alerts = len(alerts)
        trial.alert_keys = len({a.dedup_key for a in alerts})
        trial.judge(swept=swept)


# -- kill points ------------------------------------------------------------------------------


def kill_points(writes: list[str]) -> list[tuple[int, When]]:
    """Every write, before and after it; under CI: the first before it lands, the copy's
    last write (its manifest PUT) after it landed, and the last write after it landed."""
    every: list[tuple[int, When]] = [
        (n, w) for n in range(1, len(writes) + 1) for w in ("before", "after")
    ]
    if not CI:
        return every
    puts = [n for n, w in enumerate(writes, start=1) if w.startswith("PUT /v2/")]
    chosen: list[tuple[int, When]] = [(1, "before"), (puts[-1], "after"), (len(writes), "after")]
    return list(dict.fromkeys(chosen))


@pytest.fixture(scope="module")
def rig(registry: LocalRegistry, chaos_root: Path) -> Iterator[Rig]:
    r = Rig(registry, chaos_root).start()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[dict[str, Any]], None]:
    def emit(line: dict[str, Any]) -> None:
        with capsys.disabled():
            print("\nCHAOS " + json.dumps(line, sort_keys=True), flush=True)

    return emit


@pytest.mark.parametrize("shape", ["image", "index"])
def test_a_move_killed_at_each_write_ends_whole_after_the_redelivery(
    rig: Rig, shape: str, report: Callable[[dict[str, Any]], None]
) -> None:
    started = time.monotonic()
    writes, clean = rig.writes_of(shape)
    assert clean.ok, clean.line() + "\n" + rig.function.logs()
    manifests = 1 if shape == "image" else 3
    # the copy (blob mounts, then each manifest PUT), then the source's versions deleted
    assert sum(1 for w in writes if w.startswith("PUT /v2/")) == manifests, writes
    assert any(w.startswith("DELETE ") for w in writes), writes
    trials = [rig.trial(shape, n, when) for n, when in kill_points(writes)]
    table = {t.kill: ("whole" if t.ok else "NOT: " + "; ".join(t.problems)) for t in trials}
    report(
        {
            "test": f"gcp-move-{shape}",
            "ci": CI,
            "writes": writes,
            "kill_points": table,
            "redelivered_alerts": sum(t.alerts - t.alert_keys for t in trials),
            "recovery_s_max": max((t.recovery_s or 0.0) for t in trials),
            "wall_s": round(time.monotonic() - started, 1),
        }
    )
    for t in trials:
        assert t.held and (t.kill.startswith("before") or (t.held_status or 500) < 300), t.line()
    failed = [t.line() for t in trials if not t.ok]
    assert not failed, "\n".join(failed) + "\n" + rig.function.logs()


def test_a_move_killed_and_never_redelivered_is_finished_by_the_recovery_sweep(
    rig: Rig, report: Callable[[dict[str, Any]], None]
) -> None:
    """Killed once the index's copy landed (its manifest PUT answered), and the message
    never comes again (dead-lettered, say): the recovery tick finishes the move from the
    ledger's intent, with its verdict and its alert."""
    writes, _ = rig.writes_of("index")
    copied = [n for n, w in enumerate(writes, start=1) if w.startswith("PUT /v2/")][-1]
    trial = rig.trial("index", copied, "after", then="sweep")
    report({"test": "gcp-move-index-recovery", **json.loads(trial.line())})
    assert trial.held.startswith("PUT /v2/") and trial.held_status == 201, trial.line()
    assert trial.ok, trial.line() + "\n" + rig.function.logs()


def test_the_judge_sees_a_killed_move_nobody_finished(rig: Rig) -> None:
    """The checks themselves: killed once the image's copy landed and left alone, the move
    is half-done (in both repositories), its intent unfinished, no verdict, no alert;
    then the sweep finishes it and the same checks pass."""
    repo, content, message = rig.push("image")
    copied = 3  # two blob mounts, then the manifest PUT: see the image's writes
    parked = rig.gar.park(copied, "after", function_write)
    first = rig.post(message, 1)
    rig.kill_at(parked, first)
    assert parked.request.startswith("PUT /v2/") and parked.status == 201, parked
    left = Trial("image", f"after write {copied}, nothing after")
    rig.judge(left, repo, content, message)
    assert left.placement.startswith("half-done") and left.unfinished == 1, left.line()
    assert left.verdicts == [] and left.alert_keys == 0, left.line()
    assert not left.ok and len(left.problems) == 4, left.line()

    rig.sweep(left)
    swept = Trial("image", "then swept")
    rig.judge(swept, repo, content, message, swept=True)
    assert swept.ok, swept.line()
