"""`regwarden deadletters list | retry` as an operator runs it, on a ledger whose receiver
queue gave up on some events: what failed, why, how often, and queueing them again."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.cli import run_cli

from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
IMAGE = f"127.0.0.1:5000/team/api:1.0.0@{DIGEST}"
PUSH = {
    "events": [
        {
            "id": "e1",
            "timestamp": "2026-03-01T12:00:00Z",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": DIGEST,
                "repository": "team/api",
                "tag": "1.0.0",
                "size": 1,
            },
            "request": {"host": "127.0.0.1:5000", "useragent": "ci/1.0", "method": "PUT"},
        }
    ]
}
RECHECK_IMAGE = f"127.0.0.1:5000/team/web@{DIGEST}"


def run(ledger: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGWARDEN_")}
    return run_cli("--ledger", str(ledger), "deadletters", *args, env=env)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """Three dead letters (a push, a recheck, a body that does not parse), one event done,
    one pending."""
    path = tmp_path / "ledger.db"
    store = SqliteLedger(path)
    bodies = [
        ("distribution", json.dumps(PUSH).encode(), "RegistryError: 503 [bold]from[/] upstream"),
        ("recheck", json.dumps({"image": RECHECK_IMAGE}).encode(), "RuntimeError: boom"),
        ("harbor", b"not json", "IntakeError: body is not JSON"),
        ("distribution", b"{}", None),
    ]
    for source, body, _ in bodies:
        store.enqueue(source, body, "application/json", now=T0)
    store.enqueue("recheck", b"{}", None, now=T0, not_before=T0 + timedelta(days=1))
    for attempt in range(3):  # three attempts each, then the end
        now = T0 + timedelta(minutes=attempt)
        for event in store.lease(now=now, owner="host:8080", timeout=timedelta(seconds=1), limit=4):
            if attempt == 2:
                error = bodies[event.id - 1][2]
                store.complete(event.id, now=now, error=error, owner="host:8080")
    store.close()
    return path


def _pending(path: Path) -> list[tuple[int, int]]:
    """(id, attempts) of the events the receiver would still hand out."""
    store = SqliteLedger(path)
    try:
        far = T0 + timedelta(days=2)
        got = store.lease(now=far, owner="check", timeout=timedelta(seconds=1), limit=10)
    finally:
        store.close()
    return [(e.id, e.attempts) for e in got]


def test_list_shows_what_failed_why_and_how_often(ledger: Path) -> None:
    proc = run(ledger, "list", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["id"], r["source"], r["attempts"], r["images"]) for r in rows] == [
        (1, "distribution", 3, [IMAGE]),
        (2, "recheck", 3, [RECHECK_IMAGE]),
        (3, "harbor", 3, []),  # the body does not parse: no image to name
    ]
    assert rows[0]["error"] == "RegistryError: 503 [bold]from[/] upstream"
    assert rows[0]["receivedAt"] == T0.isoformat()
    assert rows[0]["failedAt"] == (T0 + timedelta(minutes=2)).isoformat()

    text = run(ledger, "list")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[:3] == [
        "1  distribution  received 2026-03-01 12:00:00Z, failed 2026-03-01 12:02:00Z after "
        "3 attempt(s)",
        f"    image: {IMAGE}",
        "    error: RegistryError: 503 [bold]from[/] upstream",  # data, not markup
    ]
    assert "    image: - (the body names none it can read)" in lines
    assert f"3 dead letter(s) in {ledger}" in lines


def test_retry_queues_the_named_dead_letters_again_with_attempts_reset(ledger: Path) -> None:
    dry = run(ledger, "retry", "1", "3", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would queue again: 2 event(s)" in dry.stdout and IMAGE in dry.stdout
    assert len(json.loads(run(ledger, "list", "-o", "json").stdout)) == 3  # nothing changed

    proc = run(ledger, "retry", "1", "3", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dryRun"] is False and [r["id"] for r in out["requeued"]] == [1, 3]
    left = json.loads(run(ledger, "list", "-o", "json").stdout)
    assert [r["id"] for r in left] == [2]
    # handed out again as new: first attempt (the done event 4 stays done)
    assert _pending(ledger) == [(1, 1), (3, 1), (5, 1)]


def test_retry_all_and_nothing_left(ledger: Path) -> None:
    proc = run(ledger, "retry", "--all")
    assert proc.returncode == 0, proc.stderr
    assert "queued again: 3 event(s)" in proc.stdout
    assert "no dead letters: nothing queued again" in run(ledger, "retry", "--all").stdout
    assert json.loads(run(ledger, "list", "-o", "json").stdout) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("retry", "1", "99"), "no dead letter with id 99 in "),
        (("retry", "4"), "no dead letter with id 4 in "),  # done, not failed
        (("retry", "5"), "no dead letter with id 5 in "),  # still pending
        (("retry",), "give their ids, or --all (not both)"),
        (("retry", "1", "--all"), "give their ids, or --all (not both)"),
        (("retry", "abc"), "no dead letter with id abc in "),
        (("list", "--source", "aws"), "name the AWS dead-letter queues: --stack NAME"),
    ],
)
def test_a_wrong_request_exits_2_and_queues_nothing(
    ledger: Path, args: tuple[str, ...], message: str
) -> None:
    proc = run(ledger, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in " ".join(proc.stderr.split())
    assert len(json.loads(run(ledger, "list", "-o", "json").stdout)) == 3


def test_a_ledger_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ledger.db"
    proc = run(missing, "list")
    assert proc.returncode == 2
    assert f"no ledger at {missing}" in " ".join(proc.stderr.split())
    assert not missing.parent.exists()  # looking did not create one
