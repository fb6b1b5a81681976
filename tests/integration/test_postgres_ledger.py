"""The PostgreSQL ledger and queue: what the contract suite (test_ledger_contract.py) does
not cover — the harness itself, concurrent leasing, NOTIFY, migrations, the URL's password,
and a database restart. Real PostgreSQL 15 (tests/support/postgres.py), no fakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.cli import run_cli
from support.postgres import PASSWORD_USER, PostgresServer

from regwarden.errors import UsageError
from regwarden.store import Outcome, VerdictRecord, open_ledger, open_queue
from regwarden.store._postgres import PostgresLedger
from regwarden.store._postgres_schema import MIGRATIONS, Migration, migrate

pytestmark = pytest.mark.integration

# -- the harness -------------------------------------------------------------------------


def test_harness_gives_each_test_its_own_database(postgres: PostgresServer) -> None:
    first, second = postgres.fresh_database(), postgres.fresh_database()
    assert first != second
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE mine (x int)")
    with psycopg.connect(second) as conn:
        found = conn.execute("SELECT to_regclass('mine')").fetchone()
    assert found == (None,)


def test_harness_password_user_must_give_its_password(postgres: PostgresServer) -> None:
    db = postgres.fresh_database().rpartition("/")[2]
    dsn = f"host=127.0.0.1 port={postgres.port} dbname={db} user={PASSWORD_USER}"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(dsn, connect_timeout=5).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn + " password=wrong", connect_timeout=5).close()
    with psycopg.connect(dsn + f" password={postgres.password}") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (PASSWORD_USER,)


def test_harness_runs_postgres_unprivileged(postgres: PostgresServer) -> None:
    rows = postgres.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    assert rows == [(True,)]  # superuser inside the cluster, ...
    owner = postgres.data_dir.stat().st_uid
    assert os.geteuid() != 0 or owner != 0  # ... but never root on the machine


# -- helpers -----------------------------------------------------------------------------

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def wait_for(cond: Callable[[], object], *, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[PostgresLedger]:
    led = open_ledger(postgres_url)
    assert isinstance(led, PostgresLedger)
    yield led
    led.close()


def opened(url: str) -> PostgresLedger:
    led = open_ledger(url)
    assert isinstance(led, PostgresLedger)
    return led


# -- the queue across connections and processes -------------------------------------------


def test_concurrent_leases_never_hand_out_one_row_twice(postgres_url: str) -> None:
    # two ledgers (two pools, as two replicas), four threads each, hammering lease()
    replicas = [opened(postgres_url), opened(postgres_url)]
    try:
        ids = {
            replicas[0].enqueue("distribution", b"{}", None, now=T0 + timedelta(microseconds=n))
            for n in range(300)
        }
        taken: list[int] = []
        lock = threading.Lock()
        start = threading.Barrier(8)

        def work(led: PostgresLedger, owner: str) -> None:
            start.wait()
            while batch := led.lease(now=T0 + LEASE / 2, owner=owner, timeout=LEASE, limit=3):
                for event in batch:
                    assert event.reclaimed_from is None and event.attempts == 1
                    assert led.complete(event.id, now=T0 + LEASE / 2, owner=owner)
                with lock:
                    taken.extend(e.id for e in batch)

        threads = [threading.Thread(target=work, args=(replicas[n % 2], f"w{n}")) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(taken) == sorted(ids)  # every row once: none twice, none left out
        assert replicas[1].pending_count() == 0
    finally:
        for led in replicas:
            led.close()


_HOLDER = """
import sys
from datetime import datetime, timedelta, UTC
from regwarden.store import open_ledger
led = open_ledger(sys.argv[1])
if sys.argv[2] == "lease":
    (event,) = led.lease(now=datetime.fromisoformat(sys.argv[3]), owner="dead",
                         timeout=timedelta(seconds=30))
    print(event.id, flush=True)
    sys.stdin.read()
else:
    with led.exclusive("sweep") as held:
        print(held, flush=True)
        sys.stdin.read()
"""


def holder(url: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """A separate process that leases an event (or holds the sweep lock) and then waits
    to be killed: its first line of output says what it got."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def test_a_killed_processs_lease_goes_stale_and_another_owner_takes_it(
    ledger: PostgresLedger, postgres_url: str
) -> None:
    event_id = ledger.enqueue("distribution", b'{"events": []}', "application/json", now=T0)
    proc, got = holder(postgres_url, "lease", T0.isoformat())
    try:
        assert got == str(event_id)
    finally:
        proc.kill()
        proc.wait()
    # its heartbeat stopped at T0: not stale a moment before the timeout, stale at it
    assert ledger.lease(now=T0 + LEASE - timedelta(seconds=1), owner="live", timeout=LEASE) == []
    (event,) = ledger.lease(now=T0 + LEASE, owner="live", timeout=LEASE)
    assert (event.id, event.reclaimed_from, event.attempts) == (event_id, "dead", 2)
    assert event.body == b'{"events": []}' and event.content_type == "application/json"
    # the dead owner, were it to come back, holds nothing and can finish nothing
    assert ledger.heartbeat("dead", [event_id], now=T0 + LEASE) == []
    assert not ledger.complete(event_id, now=T0 + LEASE, owner="dead")
    assert ledger.heartbeat("live", [event_id], now=T0 + LEASE) == [event_id]
    assert ledger.complete(event_id, now=T0 + LEASE, owner="live")
    assert ledger.pending_count() == 0


def test_queue_semantics_retry_dead_letters_requeue_and_release(ledger: PostgresLedger) -> None:
    later = T0 + timedelta(minutes=5)
    first = ledger.enqueue("distribution", b"1", None, now=T0)
    planned = ledger.enqueue("recheck", b"2", None, now=T0, not_before=later)
    assert ledger.oldest_due(now=T0) == T0
    (got,) = ledger.lease(now=T0, owner="a", timeout=LEASE, limit=5)  # the planned one waits
    assert got.id == first
    assert ledger.retry_at(first, at=T0 + timedelta(seconds=10), error="503", owner="a")
    assert not ledger.retry_at(first, at=T0, error="x", owner="a")  # no longer held
    assert ledger.lease(now=T0 + timedelta(seconds=9), owner="a", timeout=LEASE) == []
    (again,) = ledger.lease(now=T0 + timedelta(seconds=10), owner="a", timeout=LEASE)
    assert (again.id, again.attempts) == (first, 2)
    assert ledger.release_owner("a") == 1  # restarted: its lease freed at once
    (back,) = ledger.lease(now=T0 + timedelta(seconds=11), owner="b", timeout=LEASE)
    assert back.reclaimed_from is None and back.attempts == 3
    assert ledger.complete(first, now=T0 + timedelta(seconds=12), error="gave up", owner="b")
    (dead,) = ledger.dead_letter_events()
    assert (dead.id, dead.error, dead.attempts, dead.body) == (first, "gave up", 3, b"1")
    assert dead.failed_at == T0 + timedelta(seconds=12) and ledger.dead_letters() == [
        (first, "distribution", "gave up")
    ]
    assert ledger.dead_letter_events([planned]) == []
    assert ledger.requeue_dead([first, planned, 999]) == [first]
    assert ledger.dead_letter_events() == []
    assert ledger.oldest_due(now=later) == T0  # the re-queued one, received at T0
    events = ledger.lease(now=later, owner="c", timeout=LEASE, limit=5)
    assert [(e.id, e.attempts) for e in events] == [(first, 1), (planned, 1)]
    assert ledger.pending_count() == 2
    ledger.probe(timeout=2)


# -- NOTIFY wakes waiters ------------------------------------------------------------------


def test_an_enqueue_in_one_process_wakes_a_waiter_in_another(postgres_url: str) -> None:
    sender, waiter = opened(postgres_url), opened(postgres_url)
    other_schema = opened(postgres_url + "?schema=elsewhere")
    try:
        assert waiter.wait_for_work(0.05) is False  # listening from here on
        woke: list[bool] = []
        thread = threading.Thread(target=lambda: woke.append(waiter.wait_for_work(60)))
        began = time.monotonic()
        thread.start()
        sender.enqueue("distribution", b"{}", None, now=T0)
        thread.join(60)
        assert woke == [True] and time.monotonic() - began < 30
        # not due yet, or another schema's queue: nothing to wake for
        sender.enqueue("recheck", b"{}", None, now=T0, not_before=T0 + timedelta(hours=1))
        other_schema.enqueue("distribution", b"{}", None, now=T0)
        assert waiter.wait_for_work(0.5) is False
        assert other_schema.pending_count() == 1 and waiter.pending_count() == 2
    finally:
        for led in (sender, waiter, other_schema):
            led.close()


# -- one process at a time: the advisory lock --------------------------------------------


def test_exclusive_is_held_by_one_process_and_freed_when_it_dies(
    ledger: PostgresLedger, postgres_url: str
) -> None:
    with ledger.exclusive("sweep") as held:
        assert held is True
        with opened(postgres_url).exclusive("sweep") as other:
            assert other is False
        with ledger.exclusive("other-name") as different:
            assert different is True
    proc, got = holder(postgres_url, "lock")
    try:
        assert got == "True"

        def held_elsewhere() -> bool:
            with ledger.exclusive("sweep") as mine:
                return not mine

        assert held_elsewhere()
    finally:
        proc.kill()
        proc.wait()

    def free_again() -> bool:
        with ledger.exclusive("sweep") as mine:
            return mine

    wait_for(free_again, what="the killed process's lock to be released", timeout=30)


# -- migrations ----------------------------------------------------------------------------


def schema_versions(postgres: PostgresServer, url: str) -> list[Any]:
    return [
        r[0]
        for r in postgres.execute(
            "SELECT version FROM regwarden.regwarden_schema ORDER BY version",
            database=url.rpartition("/")[2],
        )
    ]


def test_migrations_are_applied_once_and_recorded(
    postgres: PostgresServer, postgres_url: str
) -> None:
    results: list[list[int]] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        led = opened(postgres_url)  # four replicas starting together
        results.append(led.migrated)
        led.close()

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    last = MIGRATIONS[-1].version
    assert sorted(results) == [[], [], [], list(range(1, last + 1))]
    assert schema_versions(postgres, postgres_url) == list(range(1, last + 1))
    led = opened(postgres_url)
    assert led.migrated == []
    led.close()


def test_a_later_migration_applies_only_the_new_step(postgres_url: str) -> None:
    led = opened(postgres_url)
    led.close()
    step = Migration(
        MIGRATIONS[-1].version + 1, "a test column", ("ALTER TABLE queue ADD COLUMN note TEXT",)
    )
    with psycopg.connect(postgres_url) as conn:
        assert migrate(conn, "regwarden", (*MIGRATIONS, step)) == [step.version]
        assert migrate(conn, "regwarden", (*MIGRATIONS, step)) == []
        conn.execute("SELECT note FROM regwarden.queue")  # the column is there


def test_a_database_of_version_1_keeps_its_verdicts_and_gains_their_findings(
    postgres_url: str,
) -> None:
    at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    digest = "sha256:" + "a" * 64
    with psycopg.connect(postgres_url) as conn:  # a database an older regwarden made
        assert migrate(conn, "regwarden", MIGRATIONS[:1]) == [1]
        conn.execute(
            "INSERT INTO regwarden.verdicts VALUES ('r', 'app', %s, 'PASSED', %s)", (digest, at)
        )
    led = opened(postgres_url)
    try:
        assert led.migrated == [v.version for v in MIGRATIONS[1:]]
        assert led.repository_verdicts("r", "app") == {digest: VerdictRecord("PASSED", at)}
        found = (("high", 3),)
        led.commit_outcome(
            Outcome("d1", "r", "app", digest, "FAILED", findings=found),
            now=at + timedelta(minutes=1),
            ttl=timedelta(days=1),
        )
        assert led.repository_verdicts("r", "app")[digest].findings == found
    finally:
        led.close()


def test_a_schema_from_a_newer_regwarden_is_refused(
    postgres: PostgresServer, postgres_url: str
) -> None:
    opened(postgres_url).close()
    postgres.execute(
        "INSERT INTO regwarden.regwarden_schema (version, description) VALUES (999, 'future')",
        database=postgres_url.rpartition("/")[2],
    )
    with pytest.raises(UsageError, match="at version 999, this regwarden knows up to"):
        open_ledger(postgres_url)


# -- the URL: passwords and masking --------------------------------------------------------


def password_url(postgres: PostgresServer, url: str, query: str) -> str:
    return (
        f"postgresql://{PASSWORD_USER}@127.0.0.1:{postgres.port}/{url.rpartition('/')[2]}?{query}"
    )


def test_a_password_from_a_file_or_a_secret_logs_in(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text(postgres.password + "\n")
    by_file = opened(password_url(postgres, postgres_url, f"password_file={tmp_path / 'pw'}"))
    try:
        by_file.record_verdict("r", "app", "sha256:" + "a" * 64, "PASSED", now=T0)
        assert by_file._rows("SELECT current_user") == [(PASSWORD_USER,)]
        assert postgres.password not in by_file.display and postgres.password not in repr(
            vars(by_file).get("display")
        )
    finally:
        by_file.close()
    monkeypatch.setenv("REGWARDEN_SECRET_PG_PASSWORD", postgres.password)
    by_secret = opened(password_url(postgres, postgres_url, "password=secret://pg-password"))
    try:
        assert by_secret.last_verdict("r", "app", "sha256:" + "a" * 64) == "PASSED"
        assert "secret://" not in by_secret.display  # parameter values masked
    finally:
        by_secret.close()
    (tmp_path / "wrong").write_text("not-the-password\n")
    with pytest.raises(UsageError, match="password authentication failed") as caught:
        open_ledger(password_url(postgres, postgres_url, f"password_file={tmp_path / 'wrong'}"))
    assert "not-the-password" not in str(caught.value)
    # no password at all: libpq asks for one, and none is there to give
    with pytest.raises(UsageError, match="cannot connect"):
        open_ledger(password_url(postgres, postgres_url, "schema=regwarden"))


def test_open_queue_gives_the_ledger_itself_for_its_own_url(postgres_url: str) -> None:
    led = opened(postgres_url)
    try:
        assert open_queue(ledger=led) is led
        assert open_queue(postgres_url, ledger=led) is led
    finally:
        led.close()


# -- the database restarting under a running ledger ----------------------------------------


def test_a_database_restart_loses_the_transaction_under_way_and_the_next_call_works(
    postgres: PostgresServer, ledger: PostgresLedger, postgres_url: str
) -> None:
    digest = "sha256:" + "b" * 64
    ledger.record_verdict("r", "app", digest, "PENDING", now=T0)
    ledger.wait_for_work(0.01)  # the listener connected
    # another session holds the verdict's row, so the ledger's update waits in flight
    blocker = psycopg.connect(postgres_url)
    blocker.execute("SELECT 1 FROM regwarden.verdicts FOR UPDATE")
    failures: list[BaseException] = []

    def in_flight() -> None:
        try:
            ledger.record_verdict("r", "app", digest, "FAILED", now=T0 + timedelta(seconds=1))
        except BaseException as exc:  # what the caller sees, kept for the test
            failures.append(exc)

    thread = threading.Thread(target=in_flight)
    thread.start()
    db = postgres_url.rpartition("/")[2]
    wait_for(
        lambda: postgres.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (db,),
        ),
        what="the ledger's update to wait on the row lock",
    )
    postgres.restart()
    thread.join(60)
    blocker.close()
    # the caller got the connection's error; the server rolled the transaction back
    assert len(failures) == 1 and isinstance(failures[0], psycopg.OperationalError)
    assert ledger.last_verdict("r", "app", digest) == "PENDING"  # a fresh pooled connection
    ledger.record_verdict("r", "app", digest, "FAILED", now=T0 + timedelta(seconds=2))
    assert ledger.last_verdict("r", "app", digest) == "FAILED"
    # the listener's connection died too: one call says so, the next listens again
    with pytest.raises(psycopg.OperationalError):
        ledger.wait_for_work(0.5)
    assert ledger.wait_for_work(0.05) is False
    ledger.enqueue("distribution", b"{}", None, now=T0)
    assert ledger.wait_for_work(30) is True


# -- the CLI on a PostgreSQL ledger ---------------------------------------------------------


def test_deadletters_list_and_retry_through_the_cli(
    ledger: PostgresLedger, postgres_url: str
) -> None:
    event_id = ledger.enqueue("harbor", b"not json", "application/json", now=T0)
    (held,) = ledger.lease(now=T0, owner="w", timeout=LEASE)
    ledger.complete(held.id, now=T0, error="IntakeError: body is not JSON", owner="w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGWARDEN_")}
    listed = run_cli("--ledger", postgres_url, "deadletters", "list", "-o", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["id"] == event_id and "body is not JSON" in row["error"]
    retried = run_cli("--ledger", postgres_url, "deadletters", "retry", str(event_id), env=env)
    assert retried.returncode == 0, retried.stderr
    assert ledger.dead_letter_events() == [] and ledger.pending_count() == 1
