"""The receiver's access path (issue #16): pulls go to the access monitor's in-memory queue,
parsed once and never stored in the work queue; pushes are stored as before and also go to
the monitor; a full access queue refuses the whole body (503) before anything is stored.
The monitor thread drains in batches, flushes and sweeps on its timers, retries a batch the
monitor failed on, delivers the alerts the monitor committed, and drains and flushes on
stop. The parsers and the SQLite work queue are the real ones; the monitor is a recorder,
so what the receiver hands it can be checked exactly (the real monitor: tests/e2e)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from regwarden.pipeline import Pipeline
from regwarden.receiver import AccessIntake, CallerAuthenticator, ServeMetrics, create_app
from regwarden.runtime import load_runtime
from regwarden.service import access_parsers, receiver_validators
from regwarden.store import SqliteLedger

HOST = "127.0.0.1:5000"
AUTH = {"Authorization": "Bearer t0ken"}
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
repositories:
  - match: "team/**"
    team: team
"""


def _digest(n: int) -> str:
    return "sha256:" + f"{n:02x}" * 32


def _event(
    action: str,
    n: int = 1,
    *,
    repository: str = "team/app",
    media_type: str = MANIFEST,
    host: str = HOST,
    actor: str | None = "alice",
) -> dict[str, Any]:
    return {
        "id": f"{action}-{n}-{media_type}",
        "timestamp": "2026-11-27T10:00:00Z",
        "action": action,
        "target": {
            "mediaType": media_type,
            "digest": _digest(n),
            "size": 500,
            "repository": repository,
            "tag": "v1" if media_type == MANIFEST else None,
        },
        "request": {
            "method": "GET" if action == "pull" else "PUT",
            "useragent": "containerd/v1.7.13",
            "host": host,
            "addr": "10.2.3.4:51734",
        },
        "actor": {"name": actor} if actor else {},
    }


def _body(*events: dict[str, Any]) -> bytes:
    for e in events:
        if e["target"]["tag"] is None:
            del e["target"]["tag"]
    return json.dumps({"events": list(events)}).encode()


@dataclass
class Result:
    handled: int
    alerts: list[str]


@dataclass
class Recorder:
    """A monitor that records what it is given; `fail` makes the next N handle calls raise."""

    batches: list[list[Any]] = field(default_factory=list)
    flushes: list[bool] = field(default_factory=list)
    sweeps: int = 0
    fail: int = 0
    alerts_for: Callable[[Sequence[Any]], list[str]] = lambda events: []
    summaries: list[str] = field(default_factory=list)
    thread: set[str] = field(default_factory=set)

    def handle(self, events: Sequence[Any], *, now: datetime) -> Result:
        self.thread.add(threading.current_thread().name)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("ledger away")
        self.batches.append(list(events))
        return Result(len(events), self.alerts_for(events))

    def sweep(self, *, now: datetime) -> list[str]:
        self.thread.add(threading.current_thread().name)
        self.sweeps += 1
        out, self.summaries = self.summaries, []
        return out

    def flush(self, *, now: datetime, force: bool = False) -> int:
        self.thread.add(threading.current_thread().name)
        self.flushes.append(force)
        return 3 if force else 0

    @property
    def events(self) -> list[Any]:
        return [e for b in self.batches for e in b]


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[SqliteLedger]:
    led = SqliteLedger(tmp_path / "queue.db")
    yield led
    led.close()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("policy")
    (root / "regwarden.yaml").write_text(POLICY)
    runtime = load_runtime(root / "regwarden.yaml", ledger=root / "ledger.db")
    try:
        yield runtime.pipeline()
    finally:
        runtime.close()


def _wait(cond: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _intake(monitor: Recorder, **kwargs: Any) -> AccessIntake:
    kwargs.setdefault("allowed_hosts", frozenset({HOST}))
    return AccessIntake(monitor, access_parsers(), **kwargs)


def _client(
    queue: SqliteLedger,
    intake: AccessIntake,
    pipeline: Pipeline,
    metrics: ServeMetrics | None = None,
) -> TestClient:
    app = create_app(
        ledger=queue,
        auth=CallerAuthenticator(["t0ken"]),
        validators=receiver_validators(pipeline.wants, frozenset({HOST})),
        access=intake,
        metrics=metrics,
    )
    return TestClient(app)


def test_pulls_go_to_the_monitor_and_never_to_the_work_queue(
    queue: SqliteLedger, pipeline: Pipeline
) -> None:
    monitor = Recorder()
    intake = _intake(monitor)
    client = _client(queue, intake, pipeline)
    resp = client.post("/events/distribution", content=_body(_event("pull")), headers=AUTH)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 0, "access": 1}
    assert queue.pending_count() == 0
    assert intake.depth() == 1
    intake.start()
    try:
        _wait(lambda: intake.idle() and monitor.events, "the pull handled")
    finally:
        intake.stop()
    (pull,) = monitor.events
    assert (pull.action, pull.repository, pull.digest) == ("pull", "team/app", _digest(1))
    assert (pull.principal, pull.source_ip) == ("alice", "10.2.3.4")
    assert monitor.thread == {"regwarden-access"}  # one thread calls the monitor


def test_a_push_is_stored_for_the_gate_and_also_goes_to_the_monitor(
    queue: SqliteLedger, pipeline: Pipeline
) -> None:
    monitor = Recorder()
    intake = _intake(monitor)
    client = _client(queue, intake, pipeline)
    body = _body(_event("push", 2), _event("pull", 3))
    resp = client.post("/events/distribution", content=body, headers=AUTH)
    assert resp.status_code == 202
    assert resp.json()["accepted"] == 1 and resp.json()["access"] == 2  # the push, for the gate
    assert queue.pending_count() == 1
    assert [e.action for e in intake._queue] == ["push", "pull"]


def test_blob_events_and_deletes_reach_neither(queue: SqliteLedger, pipeline: Pipeline) -> None:
    intake = _intake(Recorder())
    client = _client(queue, intake, pipeline)
    blob = _event("pull", 4, media_type="application/octet-stream")
    body = _body(blob, _event("delete", 5))
    resp = client.post("/events/distribution", content=body, headers=AUTH)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 0}
    assert queue.pending_count() == 0 and intake.depth() == 0


def test_a_full_queue_refuses_the_whole_body_before_storing_it(
    queue: SqliteLedger, pipeline: Pipeline
) -> None:
    metrics = ServeMetrics(queue, clock=lambda: datetime.now(UTC))
    intake = _intake(Recorder(), capacity=2, metrics=metrics)
    metrics.watch_access(intake.depth)
    client = _client(queue, intake, pipeline, metrics)
    assert client.post("/events/distribution", content=_body(_event("pull")), headers=AUTH)
    full = _body(_event("push", 6), _event("pull", 7))  # 1 + 2 > 2: none of it fits
    resp = client.post("/events/distribution", content=full, headers=AUTH)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "1"
    assert queue.pending_count() == 0  # the push is not stored: the retry brings it whole
    assert intake.depth() == 1
    ok = client.post("/events/distribution", content=_body(_event("pull", 8)), headers=AUTH)
    assert ok.status_code == 202  # what fits still fits
    text = client.get("/metrics", headers=AUTH).text
    assert "regwarden_access_bodies_refused_total 1.0" in text
    assert "regwarden_access_queue_depth 2.0" in text
    assert 'regwarden_access_events_received_total{action="pull",source="distribution"} 2.0' in text


def test_an_unconfigured_host_or_a_bad_body_is_400_and_queues_nothing(
    queue: SqliteLedger, pipeline: Pipeline
) -> None:
    intake = _intake(Recorder())
    client = _client(queue, intake, pipeline)
    other = _body(_event("pull", host="evil.example.com"))
    resp = client.post("/events/distribution", content=other, headers=AUTH)
    assert resp.status_code == 400
    assert "not configured" in resp.json()["error"]
    resp = client.post("/events/distribution", content=b"{nope", headers=AUTH)
    assert resp.status_code == 400
    assert intake.depth() == 0 and queue.pending_count() == 0


def test_the_thread_batches_delivers_alerts_and_retries_a_failed_batch() -> None:
    delivered: list[list[str]] = []
    monitor = Recorder(
        fail=2,
        alerts_for=lambda events: [
            f"first:{e.digest}:hook" for e in events if e.digest == _digest(9)
        ],
    )
    intake = _intake(
        monitor,
        batch=2,
        sweep_every=0.05,
        retry_pause=0.01,
        deliver=lambda keys, now: delivered.append(list(keys)) or 1,
    )
    parse = access_parsers()["distribution"]
    events = [e for n in (9, 10, 11) for e in parse(_body(_event("pull", n)), None)]
    assert intake.offer(events)
    intake.start()
    try:
        _wait(lambda: intake.idle() and len(monitor.events) == 3, "three pulls handled")
        monitor.summaries = [f"summary:{_digest(9)}:hook"]
        _wait(lambda: [f"summary:{_digest(9)}:hook"] in delivered, "the summary delivered")
    finally:
        intake.stop()
    assert [len(b) for b in monitor.batches] == [2, 1]  # the failed batch, handled whole
    assert [e.digest for e in monitor.events] == [_digest(n) for n in (9, 10, 11)]
    assert delivered[0] == [f"first:{_digest(9)}:hook"]
    assert intake.handled == 3 and intake.dropped == 0


def test_a_batch_the_monitor_keeps_failing_on_is_dropped_and_the_thread_goes_on() -> None:
    monitor = Recorder(fail=5)
    intake = _intake(monitor, retry_pause=0.01)
    parse = access_parsers()["distribution"]
    assert intake.offer(parse(_body(_event("pull", 12)), None))
    intake.start()
    try:
        _wait(lambda: intake.dropped == 1, "the batch dropped")
        assert intake.offer(parse(_body(_event("pull", 13)), None))
        _wait(lambda: monitor.events, "the next pull handled")
    finally:
        intake.stop()
    assert [e.digest for e in monitor.events] == [_digest(13)]


def test_stop_drains_the_queue_flushes_everything_and_refuses_more() -> None:
    monitor = Recorder()
    intake = _intake(monitor, flush_every=3600.0, sweep_every=3600.0)
    parse = access_parsers()["distribution"]
    intake.start()
    _wait(lambda: monitor.sweeps == 1, "the sweep at start")  # windows a crash left
    held = threading.Event()
    original = monitor.handle

    def slow(events: Sequence[Any], *, now: datetime) -> Result:
        held.wait(5)
        return original(events, now=now)

    monitor.handle = slow  # type: ignore[method-assign]
    for n in range(20, 25):
        assert intake.offer(parse(_body(_event("pull", n)), None))
    stopper = threading.Thread(target=intake.stop)
    stopper.start()
    _wait(lambda: not intake.offer([]), "new events refused while stopping")
    held.set()
    stopper.join(10)
    assert len(monitor.events) == 5  # everything acknowledged was handled
    assert monitor.flushes[-1] is True  # and every tally written
    assert monitor.sweeps == 2
    assert intake.writes == 3


def test_a_burst_is_handed_to_the_monitor_in_one_call() -> None:
    monitor = Recorder()
    intake = _intake(monitor, linger=0.5, sweep_every=3600.0)
    parse = access_parsers()["distribution"]
    intake.start()
    try:
        _wait(lambda: monitor.sweeps == 1, "the sweep at start")
        for n in range(30, 33):  # the first wakes the thread, which waits for the rest
            assert intake.offer(parse(_body(_event("pull", n)), None))
        _wait(lambda: intake.idle() and monitor.events, "the burst handled")
    finally:
        intake.stop()
    assert [len(b) for b in monitor.batches] == [3]


EVENTS = Path(__file__).resolve().parents[2] / "events" / "access"


@pytest.mark.parametrize("sample", ["harbor-pull-artifact.json", "harbor-cloudevents-pull.json"])
def test_a_harbor_pull_goes_to_the_monitor_and_not_to_the_work_queue(
    queue: SqliteLedger, pipeline: Pipeline, sample: str
) -> None:
    intake = _intake(Recorder(), allowed_hosts=frozenset({"harbor.example.com"}))
    app = create_app(
        ledger=queue,
        auth=CallerAuthenticator(["t0ken"]),
        validators=receiver_validators(pipeline.wants, frozenset({"harbor.example.com"})),
        access=intake,
    )
    body = (EVENTS / sample).read_bytes()
    resp = TestClient(app).post("/events/harbor", content=body, headers=AUTH)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 0, "access": 1}
    assert queue.pending_count() == 0
    (pull,) = intake._queue
    assert (pull.source, pull.action, pull.repository) == ("harbor", "pull", "payments/api")
