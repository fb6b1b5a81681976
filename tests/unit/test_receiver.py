"""Webhook receiver: authentication, validation before ack, durable queue, worker retries."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from regwarden.errors import IntakeError, UsageError
from regwarden.receiver import CallerAuthenticator, WorkerPool, create_app
from regwarden.store import QueuedEvent, SqliteLedger


def _validate(body: bytes, content_type: str | None) -> int:
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise IntakeError(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise IntakeError("expected an object with an 'events' list")
    return len(doc["events"])


@pytest.fixture
def ledger(tmp_path: Path) -> SqliteLedger:
    return SqliteLedger(tmp_path / "ledger.db")


def _client(ledger: SqliteLedger, pool: WorkerPool | None = None) -> TestClient:
    app = create_app(
        ledger=ledger,
        auth=CallerAuthenticator(["t0ken"]),
        validators={"distribution": _validate},
        pool=pool,
    )
    return TestClient(app)


GOOD = json.dumps({"events": [{"id": "1"}, {"id": "2"}]}).encode()


@pytest.mark.parametrize(
    "header",
    ["Bearer t0ken", "t0ken", "Basic " + base64.b64encode(b"regwarden:t0ken").decode()],
)
def test_accepted_credentials(ledger: SqliteLedger, header: str) -> None:
    resp = _client(ledger).post(
        "/events/distribution", content=GOOD, headers={"Authorization": header}
    )
    assert resp.status_code == 202
    assert resp.json()["accepted"] == 2
    assert ledger.pending_count() == 1


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer wrong",
        "Bearer t0ken2",
        "t0ke",
        "Basic " + base64.b64encode(b"other:t0ken").decode(),
    ],
)
def test_wrong_credentials_are_401_and_store_nothing(
    ledger: SqliteLedger, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    resp = _client(ledger).post("/events/distribution", content=GOOD, headers=headers)
    assert resp.status_code == 401
    assert ledger.pending_count() == 0


def test_malformed_body_is_400_and_stores_nothing(ledger: SqliteLedger) -> None:
    client = _client(ledger)
    resp = client.post(
        "/events/distribution", content=b"{not json", headers={"Authorization": "Bearer t0ken"}
    )
    assert resp.status_code == 400
    assert "not JSON" in resp.json()["error"]
    ok = client.post(
        "/events/distribution", content=GOOD, headers={"Authorization": "Bearer t0ken"}
    )
    assert ok.status_code == 202  # the bad request affected nothing else
    assert ledger.pending_count() == 1


def test_unknown_source_lists_valid_ones(ledger: SqliteLedger) -> None:
    resp = _client(ledger).post(
        "/events/quay", content=GOOD, headers={"Authorization": "Bearer t0ken"}
    )
    assert resp.status_code == 404
    assert "valid: distribution" in resp.json()["error"]


def test_empty_token_set_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="at least one non-empty token"):
        CallerAuthenticator(["", "  "])
    f = tmp_path / "tokens"
    f.write_text("# comment\n\nabc\n")
    assert CallerAuthenticator.from_file(str(f)).check("Bearer abc")
    with pytest.raises(UsageError, match="cannot read auth token file"):
        CallerAuthenticator.from_file(str(tmp_path / "missing"))


def _wait(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_worker_processes_and_retries_then_dead_letters(ledger: SqliteLedger) -> None:
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def process(event: QueuedEvent) -> None:
        with lock:
            seen.append((event.id, event.attempts))
        if event.body == b"poison":
            raise RuntimeError("cannot handle")
        if event.body == b"flaky" and event.attempts < 2:
            raise RuntimeError("transient")

    from datetime import timedelta

    pool = WorkerPool(
        ledger, process, workers=2, max_attempts=3, backoff=timedelta(milliseconds=10), poll=0.02
    )
    pool.start()
    try:
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        ok = ledger.enqueue("s", b"ok", None, now=now)
        flaky = ledger.enqueue("s", b"flaky", None, now=now)
        poison = ledger.enqueue("s", b"poison", None, now=now)
        pool.notify()
        _wait(pool.idle)
    finally:
        pool.stop()
    attempts = {i: max(a for j, a in seen if j == i) for i, _ in seen}
    assert attempts == {ok: 1, flaky: 2, poison: 3}
    dead = ledger.dead_letters()
    assert [(i, e) for i, _, e in dead] == [(poison, "RuntimeError: cannot handle")]


def test_acknowledged_event_survives_a_crash(tmp_path: Path) -> None:
    """Enqueue, 'crash' before processing (no pool), restart: the event is processed."""
    path = tmp_path / "ledger.db"
    first = SqliteLedger(path)
    _client(first).post(
        "/events/distribution", content=GOOD, headers={"Authorization": "Bearer t0ken"}
    )
    first.close()
    restarted = SqliteLedger(path)
    done: list[bytes] = []
    pool = WorkerPool(restarted, lambda e: done.append(e.body), workers=1, poll=0.02)
    pool.start()
    try:
        _wait(pool.idle)
    finally:
        pool.stop()
    assert done == [GOOD]
