"""The receiver's operator endpoints in process, on a real SQLite ledger and a real worker
pool: /readyz follows the pool's workers (stopped, one died), /metrics's access rules,
counters and queue gauges; the request observers; the queue's own probe and due time."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from regwarden import observe
from regwarden.receiver import CallerAuthenticator, ServeMetrics, WorkerPool, create_app
from regwarden.receiver._metrics import action_kind
from regwarden.store import QueuedEvent, SqliteLedger

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AUTH = {"Authorization": "Bearer t0ken"}


def _count(body: bytes, content_type: str | None) -> int:
    return len(json.loads(body)["events"])


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    led = SqliteLedger(tmp_path / "ledger.db")
    yield led
    led.close()


def _wait(cond: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _app(
    ledger: SqliteLedger,
    *,
    pool: WorkerPool | None = None,
    metrics: ServeMetrics | None = None,
    **kwargs: object,
) -> TestClient:
    app = create_app(
        ledger=ledger,
        auth=CallerAuthenticator(["t0ken"]),
        validators={"distribution": _count},
        pool=pool,
        metrics=metrics,
        **kwargs,  # type: ignore[arg-type]
    )
    return TestClient(app)


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus exposition, None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, rest = key.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric == name and got == want:
            return float(value)
    return None


# -- /readyz --------------------------------------------------------------------------------


# the worker's death is the point: its thread ends on an exception nothing catches
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_readyz_follows_the_workers_stopped_and_dead(ledger: SqliteLedger) -> None:
    ran: list[int] = []

    def job(event: QueuedEvent) -> None:
        if json.loads(event.body)["events"][0] == "die":
            raise SystemExit  # ends its thread as a crash would: no except clause catches it
        ran.append(event.id)

    pool = WorkerPool(ledger, job, workers=2, poll=0.05)
    client = _app(ledger, pool=pool)
    assert client.get("/readyz").status_code == 503  # not started yet
    pool.start()
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True}
        body = json.dumps({"events": ["die"]}).encode()
        assert client.post("/events/distribution", content=body, headers=AUTH).status_code == 202
        _wait(lambda: pool.alive()[0] == 1, "a worker to die")
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.json() == {"ready": False, "reasons": ["workers: 1 of 2 running"]}
    finally:
        pool.stop()
    stopped = client.get("/readyz")
    assert stopped.status_code == 503
    assert stopped.json()["reasons"] == ["workers: 0 of 2 running"]


def test_readyz_fails_while_another_holds_the_queue_write_lock(
    ledger: SqliteLedger, tmp_path: Path
) -> None:
    client = _app(ledger, ready_timeout=0.2)
    assert client.get("/readyz").status_code == 200
    other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["reasons"] == ["work queue: database is locked"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert client.get("/readyz").status_code == 200


def test_readyz_fails_when_the_ledger_file_is_gone_and_never_recreates_it(
    ledger: SqliteLedger, tmp_path: Path
) -> None:
    client = _app(ledger)
    path = tmp_path / "ledger.db"
    os.rename(path, tmp_path / "moved.db")
    try:
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["reasons"] == ["work queue: unable to open database file"]
        assert not path.exists()
    finally:
        os.rename(tmp_path / "moved.db", path)
    assert client.get("/readyz").status_code == 200


# -- /metrics -------------------------------------------------------------------------------


def test_metrics_take_the_webhook_token_by_default(ledger: SqliteLedger) -> None:
    client = _app(ledger, metrics=ServeMetrics(ledger, clock=lambda: T0))
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert "regwarden" not in refused.text.replace('"unauthorized"', "")
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers=AUTH)
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain; version=")


def test_metrics_with_their_own_token_refuse_the_webhook_token(ledger: SqliteLedger) -> None:
    client = _app(
        ledger,
        metrics=ServeMetrics(ledger, clock=lambda: T0),
        metrics_auth=CallerAuthenticator(["scrape"], basic_user=None),
    )
    assert client.get("/metrics", headers=AUTH).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape"}).status_code == 200


def test_public_metrics_need_no_credentials_but_events_still_do(ledger: SqliteLedger) -> None:
    client = _app(ledger, metrics=ServeMetrics(ledger, clock=lambda: T0), metrics_public=True)
    assert client.get("/metrics").status_code == 200
    body = json.dumps({"events": [1]}).encode()
    assert client.post("/events/distribution", content=body).status_code == 401


def test_no_metrics_route_without_metrics(ledger: SqliteLedger) -> None:
    assert _app(ledger).get("/metrics", headers=AUTH).status_code == 404


def test_received_events_and_queue_gauges(ledger: SqliteLedger) -> None:
    now = [T0]
    metrics = ServeMetrics(ledger, clock=lambda: now[0])
    client = _app(ledger, metrics=metrics, metrics_public=True, clock=lambda: now[0])
    text = client.get("/metrics").text
    assert _sample(text, "regwarden_queue_depth") == 0
    assert _sample(text, "regwarden_queue_oldest_pending_seconds") == 0
    assert _sample(text, "regwarden_events_received_total", source="distribution") is None
    for n in (2, 3):
        body = json.dumps({"events": list(range(n))}).encode()
        assert client.post("/events/distribution", content=body, headers=AUTH).status_code == 202
    # a recheck planned for later is queued but not waiting
    ledger.enqueue("recheck", b"{}", None, now=T0, not_before=T0 + timedelta(hours=1))
    now[0] = T0 + timedelta(seconds=90)
    text = client.get("/metrics").text
    assert _sample(text, "regwarden_events_received_total", source="distribution") == 5
    assert _sample(text, "regwarden_queue_depth") == 3
    assert _sample(text, "regwarden_queue_oldest_pending_seconds") == 90


def test_several_apps_in_one_process_keep_their_own_counters(tmp_path: Path) -> None:
    a, b = SqliteLedger(tmp_path / "a.db"), SqliteLedger(tmp_path / "b.db")
    try:
        ca = _app(a, metrics=ServeMetrics(a, clock=lambda: T0), metrics_public=True)
        cb = _app(b, metrics=ServeMetrics(b, clock=lambda: T0), metrics_public=True)
        body = json.dumps({"events": [1]}).encode()
        ca.post("/events/distribution", content=body, headers=AUTH)
        name = "regwarden_events_received_total"
        assert _sample(ca.get("/metrics").text, name, source="distribution") == 1
        assert _sample(cb.get("/metrics").text, name, source="distribution") is None
    finally:
        a.close()
        b.close()


# -- observers ------------------------------------------------------------------------------


def test_request_observers_see_latency_and_errors(ledger: SqliteLedger) -> None:
    metrics = ServeMetrics(ledger, clock=lambda: T0)
    observe.report_request("r.example:5000", "GET", 0.01, status=200)  # nobody watching yet
    metrics.watch_requests()
    try:
        observe.report_request("r.example:5000", "GET", 0.03, status=200)
        observe.report_request("r.example:5000", "GET", 0.02, status=404)  # expected: no error
        observe.report_request("r.example:5000", "PUT", 0.5, status=503)
        observe.report_request("r.example:5000", "HEAD", 5.0, failure="ConnectTimeout")
    finally:
        metrics.close()
    observe.report_request("r.example:5000", "GET", 0.01, status=500)  # unsubscribed
    text = metrics.exposition()[0].decode()
    count = "regwarden_registry_request_seconds_count"
    assert _sample(text, count, host="r.example:5000", method="GET") == 2
    assert _sample(text, count, host="r.example:5000", method="PUT") == 1
    assert _sample(text, count, host="r.example:5000", method="HEAD") == 1
    errors = "regwarden_registry_errors_total"
    assert _sample(text, errors, host="r.example:5000", kind="http_503") == 1
    assert _sample(text, errors, host="r.example:5000", kind="ConnectTimeout") == 1
    assert _sample(text, errors, host="r.example:5000", kind="http_404") is None
    assert _sample(text, errors, host="r.example:5000", kind="http_500") is None


def test_an_observer_that_raises_never_breaks_the_request() -> None:
    class Broken:
        def request(self, host: str, method: str, seconds: float, status: int | None) -> None:
            raise RuntimeError("boom")

        def error(self, host: str, kind: str) -> None:
            raise AssertionError("not reached")

    broken = Broken()
    observe.subscribe(broken)
    try:
        observe.report_request("h", "GET", 0.1, status=500)  # logged, not raised
    finally:
        observe.unsubscribe(broken)
    assert not observe.has_observers()


def test_action_kinds_are_the_actions_first_word() -> None:
    assert action_kind("quarantine (move → quarantine/apps/web)") == "quarantine"
    assert action_kind("rollback latest → sha256:ab") == "rollback"
    assert action_kind("release (tags v1)") == "release"
    assert action_kind("promote → prod/web:v1") == "promote"


# -- the queue's due time and probe ---------------------------------------------------------


def test_oldest_due_counts_only_what_is_waiting(ledger: SqliteLedger) -> None:
    assert ledger.oldest_due(now=T0) is None
    # a retry whose backoff ended later than its receipt waits from the backoff's end
    ledger.enqueue("distribution", b"{}", None, now=T0, not_before=T0 + timedelta(seconds=5))
    ledger.enqueue("recheck", b"{}", None, now=T0, not_before=T0 + timedelta(hours=1))
    assert ledger.oldest_due(now=T0 + timedelta(seconds=4)) is None
    assert ledger.oldest_due(now=T0 + timedelta(seconds=6)) == T0 + timedelta(seconds=5)
    ledger.enqueue("distribution", b"{}", None, now=T0 + timedelta(seconds=10))
    assert ledger.oldest_due(now=T0 + timedelta(seconds=11)) == T0 + timedelta(seconds=5)
    leased = ledger.lease(now=T0 + timedelta(seconds=11), owner="me", timeout=timedelta(60))
    assert [e.source for e in leased] == ["distribution"]
    ledger.complete(leased[0].id, now=T0 + timedelta(seconds=12), owner="me")
    assert ledger.oldest_due(now=T0 + timedelta(seconds=20)) == T0 + timedelta(seconds=10)


def test_probe_of_an_in_memory_ledger() -> None:
    led = SqliteLedger(":memory:")
    led.probe(timeout=0.1)


def test_probe_answers_within_its_timeout_behind_a_held_lock(
    ledger: SqliteLedger, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    done = threading.Event()
    errors: list[BaseException] = []

    def probe() -> None:
        try:
            ledger.probe(timeout=0.3)
        except sqlite3.Error as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=probe, daemon=True).start()
    try:
        assert done.wait(10), "the probe waited past its timeout"
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert [str(e) for e in errors] == ["database is locked"]
