"""The ledger contract: what `store.Ledger` promises, held to every store with the same
assertions (SQLite in a file; DynamoDB in moto's server mode on loopback, boto3 over the
wire; Firestore on `support.fake_firestore`, the GAPIC client over REST; Table Storage on
Azurite, azure-data-tables over the wire; PostgreSQL 15, a throwaway cluster per test
process from `support.postgres`, a fresh database per test). Each store is opened by its
URL, as `--ledger` names it.

The atomic unit is one delivery's outcome (`Ledger.commit_outcome`, see
`store/_protocol.py`): its verdict, verdict-log entry, delivery marker and outbox rows are
committed together or not at all, and only once while the marker lives. Everything else is
one write that stands alone. A new store (Firestore, Table Storage, PostgreSQL) joins the
`ledger` fixture's parameters and must pass unchanged.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from support import fake_firestore as firestore_support
from support import moto_server as support
from support.azurite import Azurite
from support.cli import run_cli
from support.moto_server import MotoServer
from support.postgres import PostgresServer
from support.registries import PushImage

from regwarden.devtools import LocalRegistry, free_port
from regwarden.store import (
    AccessWindow,
    Ledger,
    OutboxItem,
    Outcome,
    PullTally,
    QuarantineRecord,
    VerdictReader,
    VerdictRecord,
    open_ledger,
)
from regwarden.store._dynamo import table_definition

moto_server = support.moto_server
moto = support.moto
fake_firestore = firestore_support.fake_firestore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
TABLE = "regwarden-contract"
TTL = timedelta(days=7)
STORES = ("sqlite", "dynamodb", "firestore", "azuretable", "postgresql")


class AuditedLedger(Ledger, Protocol):
    """What the contract reads besides the protocol: every store keeps these for audits."""

    def verdict_log(
        self, registry: str, repository: str, digest: str
    ) -> list[tuple[str | None, str, datetime]]: ...

    def outbox_unsent(self) -> int: ...


def store_url(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if store == "sqlite":
        return f"sqlite://{tmp_path}/state/ledger.db"  # sqlite:// + an absolute path
    if store == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        return postgres.fresh_database()  # postgresql://postgres@127.0.0.1:PORT/t_…
    if store == "firestore":
        request.getfixturevalue("fake_firestore")  # and REGWARDEN_GCP_ENDPOINT_FIRESTORE
        return "firestore://demo-proj?prefix=contract"
    if store == "azuretable":
        azurite: Azurite = request.getfixturevalue("azurite")
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        for name, value in azurite.env().items():
            monkeypatch.setenv(name, value)
        return f"azuretable://{azurite.account}?prefix=c{uuid.uuid4().hex[:12]}"
    server: MotoServer = request.getfixturevalue("moto")
    server.client("dynamodb").create_table(**table_definition(TABLE))
    return f"dynamodb://{TABLE}?region={server.region}&endpoint={server.endpoint_url}"


@pytest.fixture(params=STORES)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditedLedger]:
    led: Any = open_ledger(store_url(request.param, request, tmp_path))
    yield led
    led.close()


def item(key: str, channel: str = "hook") -> OutboxItem:
    return OutboxItem(f"{key}:{channel}", channel, json.dumps({"dedup_key": key}))


def outcome(
    delivery: str | None,
    *alerts: OutboxItem,
    digest: str = A,
    verdict: str | None = "FAILED",
    recheck_at: datetime | None = None,
) -> Outcome:
    image = f"r/app@{digest}" if recheck_at else None
    return Outcome(
        delivery,
        "r",
        "app",
        digest,
        verdict,
        recheck_at=recheck_at,
        recheck_image=image,
        alerts=alerts,
    )


def pending(ledger: Ledger, now: datetime) -> list[str]:
    return [i.key for i in ledger.outbox_pending(now=now)]


# -- the atomic unit: one delivery's outcome --------------------------------------------------


def test_an_outcome_commits_its_verdict_log_marker_and_outbox_together(
    ledger: AuditedLedger,
) -> None:
    recheck = T0 + timedelta(minutes=30)
    assert ledger.delivery_outcome("d1", now=T0) is None
    added = ledger.commit_outcome(
        outcome("d1", item("k1"), item("k1", "topic"), verdict="PENDING", recheck_at=recheck),
        now=T0,
        ttl=TTL,
    )
    assert added == ["k1:hook", "k1:topic"]
    done = ledger.delivery_outcome("d1", now=T0 + TTL - timedelta(seconds=1))
    assert done is not None
    assert (done.delivery_id, done.handled_at, done.recheck_at) == ("d1", T0, recheck)
    assert done.recheck_image == f"r/app@{A}"
    assert ledger.delivery_outcome("d1", now=T0 + TTL) is None  # the marker expired
    assert ledger.last_verdict("r", "app", A) == "PENDING"
    assert ledger.verdict_log("r", "app", A) == [("d1", "PENDING", T0)]
    assert pending(ledger, T0) == ["k1:hook", "k1:topic"]


def test_a_delivery_commits_only_once(ledger: AuditedLedger) -> None:
    assert ledger.commit_outcome(outcome("d1", item("k1")), now=T0, ttl=TTL) == ["k1:hook"]
    # the same delivery handled again side by side: nothing of it is written, not its
    # verdict, not its log entry, not its alerts
    later = T0 + timedelta(seconds=5)
    again = outcome("d1", item("k2"), verdict="ERROR")
    assert ledger.commit_outcome(again, now=later, ttl=TTL) is None
    assert ledger.last_verdict("r", "app", A) == "FAILED"
    assert ledger.verdict_log("r", "app", A) == [("d1", "FAILED", T0)]
    assert pending(ledger, later) == ["k1:hook"]
    done = ledger.delivery_outcome("d1", now=later)
    assert done is not None and done.handled_at == T0
    # once its marker expired, the same id is a new delivery
    assert ledger.commit_outcome(again, now=T0 + TTL, ttl=TTL) == ["k2:hook"]
    assert ledger.last_verdict("r", "app", A) == "ERROR"
    assert [e[1] for e in ledger.verdict_log("r", "app", A)] == ["FAILED", "ERROR"]


def test_concurrent_commits_of_one_delivery_write_it_once(ledger: AuditedLedger) -> None:
    results: list[list[str] | None] = []
    start = threading.Barrier(4)

    def commit(n: int) -> None:
        start.wait()
        result = ledger.commit_outcome(outcome("d1", item(f"k{n}")), now=T0, ttl=TTL)
        results.append(result)

    threads = [threading.Thread(target=commit, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 4
    (won,) = [r for r in results if r is not None]  # exactly one commit went through
    assert len(won) == 1
    assert len(ledger.verdict_log("r", "app", A)) == 1
    assert pending(ledger, T0) == won  # and only its alert


def test_a_commit_that_fails_part_way_leaves_nothing(ledger: AuditedLedger) -> None:
    naive = datetime(2026, 11, 27, 12, 30)  # refused once verdict and log are under way
    broken = outcome("d1", item("k1"), recheck_at=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.commit_outcome(broken, now=T0, ttl=TTL)
    assert ledger.delivery_outcome("d1", now=T0) is None
    assert ledger.last_verdict("r", "app", A) is None
    assert ledger.verdict_log("r", "app", A) == []
    assert pending(ledger, T0) == [] and ledger.outbox_unsent() == 0
    # the retry commits all of it
    assert ledger.commit_outcome(outcome("d1", item("k1")), now=T0, ttl=TTL) == ["k1:hook"]
    assert ledger.delivery_outcome("d1", now=T0) is not None


def test_outcomes_without_a_verdict_or_without_a_delivery(ledger: AuditedLedger) -> None:
    # nothing judged: the delivery is handled, no verdict is written
    assert ledger.commit_outcome(outcome("d1", digest=B, verdict=None), now=T0, ttl=TTL) == []
    assert ledger.delivery_outcome("d1", now=T0) is not None
    assert ledger.last_verdict("r", "app", B) is None
    assert ledger.verdict_log("r", "app", B) == []
    # the recovery sweep's outcome has no delivery of its own: each commit is written
    ledger.commit_outcome(outcome(None), now=T0, ttl=TTL)
    ledger.commit_outcome(outcome(None, verdict="PASSED"), now=T0 + timedelta(seconds=1), ttl=TTL)
    assert ledger.verdict_log("r", "app", A) == [
        (None, "FAILED", T0),
        (None, "PASSED", T0 + timedelta(seconds=1)),
    ]
    assert ledger.last_verdict("r", "app", A) == "PASSED"


def test_an_alert_in_the_outbox_is_not_added_again_until_its_window_ends(
    ledger: AuditedLedger,
) -> None:
    assert ledger.commit_outcome(outcome("d1", item("k1")), now=T0, ttl=TTL) == ["k1:hook"]
    # the same alert from another delivery: the rest of that outcome commits
    day = T0 + timedelta(days=1)
    again = outcome("d2", item("k1"), item("k2"), item("k1"))
    assert ledger.commit_outcome(again, now=day, ttl=TTL) == ["k2:hook"]
    assert ledger.delivery_outcome("d2", now=day) is not None
    assert len(ledger.verdict_log("r", "app", A)) == 2
    ledger.outbox_sent("k1:hook", now=day)
    # past the 30-day window the same alert is new again, due at once
    later = T0 + timedelta(days=31)
    assert ledger.commit_outcome(outcome("d3", item("k1")), now=later, ttl=TTL) == ["k1:hook"]
    (row,) = [i for i in ledger.outbox_pending(now=later) if i.key == "k1:hook"]
    assert (row.attempts, row.next_attempt, row.error) == (0, later, None)


# -- the alert outbox -------------------------------------------------------------------------


def test_outbox_pending_sent_and_retry(ledger: AuditedLedger) -> None:
    ledger.commit_outcome(outcome("d1", item("k1"), item("k2")), now=T0, ttl=TTL)
    ledger.commit_outcome(outcome("d2", item("k3")), now=T0 + timedelta(seconds=5), ttl=TTL)
    assert pending(ledger, T0) == ["k1:hook", "k2:hook"]  # k3 is not due yet
    minute = T0 + timedelta(minutes=1)
    due = ledger.outbox_pending(now=minute)
    assert [i.key for i in due] == ["k1:hook", "k2:hook", "k3:hook"]
    assert (due[0].channel, json.loads(due[0].alert)) == ("hook", {"dedup_key": "k1"})
    assert [i.key for i in ledger.outbox_pending(now=minute, limit=2)] == ["k1:hook", "k2:hook"]
    ledger.outbox_sent("k1:hook", now=minute)
    ledger.outbox_retry("k2:hook", at=T0 + timedelta(minutes=10), error="503 from the hook")
    assert pending(ledger, T0 + timedelta(minutes=5)) == ["k3:hook"]
    assert ledger.outbox_unsent() == 2
    (k2,) = [i for i in ledger.outbox_pending(now=T0 + timedelta(minutes=10)) if i.key == "k2:hook"]
    assert (k2.attempts, k2.next_attempt, k2.error) == (
        1,
        T0 + timedelta(minutes=10),
        "503 from the hook",
    )
    ledger.outbox_retry("k1:hook", at=T0 + timedelta(hours=1), error="late")  # sent stays sent
    ledger.outbox_retry("nope", at=T0, error="x")  # unknown keys: nothing appears
    ledger.outbox_sent("nope", now=T0)
    assert pending(ledger, T0 + timedelta(days=1)) == ["k3:hook", "k2:hook"]  # soonest due first
    assert ledger.outbox_unsent() == 2


# -- deliveries seen (de-duplication) ---------------------------------------------------------


def test_seen_delivery_until_it_expires_or_is_forgotten(ledger: AuditedLedger) -> None:
    ttl = timedelta(hours=1)
    assert ledger.seen_delivery("d1", now=T0, ttl=ttl) is False
    assert ledger.seen_delivery("d1", now=T0 + timedelta(minutes=59), ttl=ttl) is True
    assert ledger.seen_delivery("d2", now=T0, ttl=ttl) is False
    assert ledger.seen_delivery("d1", now=T0 + timedelta(hours=2), ttl=ttl) is False  # expired
    assert ledger.seen_delivery("d1", now=T0 + timedelta(hours=2), ttl=ttl) is True
    ledger.forget_delivery("d1")  # a failed attempt: its retry is processed again
    assert ledger.seen_delivery("d1", now=T0 + timedelta(hours=2), ttl=ttl) is False
    ledger.forget_delivery("never-seen")
    # a seen delivery is not a handled one: no outcome is implied
    assert ledger.delivery_outcome("d2", now=T0) is None


# -- images, tags, first-seen times -----------------------------------------------------------


def test_first_seen_is_kept_and_pulls_only_move_forward(ledger: AuditedLedger) -> None:
    ledger.record_push("r", "app", A, ("v1",), now=T0)
    ledger.record_push("r", "app", A, ("v1",), now=T0 + timedelta(days=3))
    assert ledger.image_times("r", "app") == {A: (T0, None)}
    ledger.record_pull("r", "app", A, now=T0 + timedelta(days=5))
    ledger.record_pull("r", "app", A, now=T0 + timedelta(days=4))  # late, out of order
    # a pull of an image never seen pushed: first seen at that pull
    ledger.record_pull("r", "app", B, now=T0 + timedelta(days=6))
    assert ledger.image_times("r", "app") == {
        A: (T0, T0 + timedelta(days=5)),
        B: (T0 + timedelta(days=6), T0 + timedelta(days=6)),
    }
    assert ledger.image_times("r", "other") == {}
    assert ledger.image_times("elsewhere", "app") == {}


def test_a_push_answers_the_digests_first_seen_time(ledger: AuditedLedger) -> None:
    # the pipeline takes a push's clock from this answer, with no read after the write
    later = T0 + timedelta(days=3)
    assert ledger.record_push("r", "app", A, ("v1",), now=T0) == T0
    assert ledger.record_push("r", "app", A, ("v2",), now=later) == T0  # the first is kept
    ledger.record_pull("r", "app", B, now=later)  # first seen through a pull
    assert ledger.record_push("r", "app", B, (), now=later + timedelta(hours=1)) == later
    assert ledger.record_push("r", "other", A, (), now=later) == later  # its own repository
    assert ledger.image_times("r", "app")[A] == (T0, None)


def test_tag_history(ledger: AuditedLedger) -> None:
    minute = timedelta(minutes=1)
    ledger.record_push("r", "app", A, ("v1", "latest"), now=T0)
    ledger.record_push("r", "app", B, ("latest",), now=T0 + minute)
    ledger.record_push("r", "app", C, ("latest", "v3"), now=T0 + 2 * minute)
    ledger.record_push("r", "app", A, ("latest",), now=T0 + 3 * minute)  # seen before: kept
    assert ledger.previous_digest("r", "app", "latest", before=C) == B
    assert ledger.previous_digest("r", "app", "latest", before=B) == C  # newest other digest
    assert ledger.previous_digest("r", "app", "v1", before=A) is None  # never guessed
    assert ledger.previous_digest("r", "other", "latest", before=C) is None
    assert ledger.tag_digests("r", "app", "latest") == [A, B, C]
    assert ledger.tags_for("r", "app", C) == ["latest", "v3"]
    assert ledger.tags_for("r", "app", A) == ["v1"]
    assert ledger.tags_for("r", "app", B) == []
    # what judging a push reads, both answers at once; the same as asked one by one
    assert ledger.tags_for_push("r", "app", C, "latest") == (["latest", "v3"], [A, B, C])
    assert ledger.tags_for_push("r", "app", A, "v1") == (["v1"], [A])
    assert ledger.tags_for_push("r", "app", B, "v3") == ([], [C])
    assert ledger.tags_for_push("r", "app", B, "never") == ([], [])
    assert ledger.tags_for_push("r", "app", A, None) == (["v1"], [])
    assert ledger.tags_for_push("r", "other", A, "latest") == ([], [])
    assert ledger.tag_history("r", "app") == [
        ("latest", A, T0),
        ("v1", A, T0),
        ("latest", B, T0 + minute),
        ("latest", C, T0 + 2 * minute),
        ("v3", C, T0 + 2 * minute),
    ]


def test_verdicts_are_replaced(ledger: AuditedLedger) -> None:
    assert ledger.last_verdict("r", "app", A) is None
    ledger.record_verdict("r", "app", A, "PENDING", now=T0)
    ledger.record_verdict("r", "app", A, "PASSED", now=T0 + timedelta(minutes=1))
    assert ledger.last_verdict("r", "app", A) == "PASSED"
    assert ledger.last_verdict("r", "other", A) is None


def test_a_verdict_keeps_its_findings_and_a_repository_reads_back_in_one_call(
    ledger: AuditedLedger,
) -> None:
    assert isinstance(ledger, VerdictReader)
    assert ledger.repository_verdicts("r", "app") == {}
    found = (("critical", 2), ("high", 5), ("low", 1))
    minute = timedelta(minutes=1)
    ledger.commit_outcome(Outcome("d1", "r", "app", A, "FAILED", findings=found), now=T0, ttl=TTL)
    ledger.commit_outcome(Outcome("d2", "r", "app", B, "PASSED", findings=()), now=T0, ttl=TTL)
    ledger.commit_outcome(Outcome("d3", "r", "app", C, "PENDING"), now=T0 + minute, ttl=TTL)
    ledger.commit_outcome(
        Outcome("d4", "r", "other", A, "WARN", findings=(("medium", 1),)), now=T0, ttl=TTL
    )
    ledger.commit_outcome(Outcome("d5", "r", "app", "sha256:" + "d" * 64, None), now=T0, ttl=TTL)
    assert ledger.repository_verdicts("r", "app") == {
        A: VerdictRecord("FAILED", T0, found),  # in the order written: worst first
        B: VerdictRecord("PASSED", T0, ()),  # scanned, nothing found
        C: VerdictRecord("PENDING", T0 + minute, None),  # judged without a scan report
    }
    assert ledger.repository_verdicts("r", "other") == {
        A: VerdictRecord("WARN", T0, (("medium", 1),))
    }
    assert ledger.repository_verdicts("q", "app") == {}
    assert ledger.last_verdict("r", "app", A) == "FAILED"  # unchanged by the findings
    # a verdict recorded on its own (the standing ERROR of a retry) has no findings: those
    # there were the replaced verdict's
    ledger.record_verdict("r", "app", A, "ERROR", now=T0 + 2 * minute)
    assert ledger.repository_verdicts("r", "app")[A] == VerdictRecord("ERROR", T0 + 2 * minute)
    ledger.commit_outcome(
        Outcome("d6", "r", "app", A, "FAILED", findings=found), now=T0 + 3 * minute, ttl=TTL
    )
    assert ledger.repository_verdicts("r", "app")[A] == VerdictRecord(
        "FAILED", T0 + 3 * minute, found
    )


# -- actions: the audit and resumable intents -------------------------------------------------


def test_an_action_intent_is_resumed_not_restarted(ledger: AuditedLedger) -> None:
    common: dict[str, Any] = dict(registry="r", repository="app", kind="quarantine")
    first = ledger.begin_action(
        "q:a", digest=A, reason="critical CVE", state={"step": "start"}, now=T0, **common
    )
    assert (first.key, first.at, first.status, first.state) == (
        "q:a",
        T0,
        "intent",
        {"step": "start"},
    )
    ledger.finish_action("q:a", status="intent", state={"step": "copied"})
    # a retry begins the same key: it gets the recorded intent, with its progress
    again = ledger.begin_action(
        "q:a", digest=A, reason="other", state={"step": "start"}, now=T0 + timedelta(1), **common
    )
    assert (again.at, again.reason, again.state) == (T0, "critical CVE", {"step": "copied"})
    ledger.begin_action(
        "q:b", digest=B, reason="r", state={}, now=T0 + timedelta(seconds=1), **common
    )
    ledger.begin_action(
        "q:c", digest=C, reason="r", state={}, now=T0 + timedelta(seconds=2), **common
    )
    assert [a.key for a in ledger.actions(status="intent")] == ["q:a", "q:b", "q:c"]
    ledger.finish_action("q:b", status="done", state={"step": "deleted"})
    ledger.finish_action("q:c", status="failed")
    assert [a.key for a in ledger.actions(status="intent")] == ["q:a"]
    assert [a.key for a in ledger.actions(status="done")] == ["q:b"]
    assert [(a.key, a.status) for a in ledger.actions()] == [
        ("q:a", "intent"),
        ("q:b", "done"),
        ("q:c", "failed"),
    ]
    done = ledger.action("q:b")
    assert done is not None and done.state == {"step": "deleted"}
    failed = ledger.action("q:c")
    assert failed is not None and failed.state == {}  # no state given: kept
    assert ledger.action("q:nope") is None
    ledger.finish_action("q:nope", status="done")  # an unknown key: nothing appears
    assert ledger.action("q:nope") is None


def test_a_begun_action_is_the_record_read_back(ledger: AuditedLedger) -> None:
    # begin_action answers with the record (new or found) without the caller reading it
    state: dict[str, Any] = {"step": "start", "tags": ("v1", "v2"), "retry": {"attempts": 0}}
    common: dict[str, Any] = dict(registry="r", repository="app", digest=A, kind="quarantine")
    begun = ledger.begin_action("q:a", reason="why", state=state, now=T0, **common)
    assert begun == ledger.action("q:a")
    assert begun.state == {"step": "start", "tags": ["v1", "v2"], "retry": {"attempts": 0}}
    ledger.finish_action("q:a", status="done", state={"step": "untagged"})
    found = ledger.begin_action("q:a", reason="again", state={}, now=T0 + timedelta(1), **common)
    assert found == ledger.action("q:a")
    assert (found.status, found.reason, found.state) == ("done", "why", {"step": "untagged"})


# -- quarantine -------------------------------------------------------------------------------


def test_quarantine_record_roundtrip_and_release(ledger: AuditedLedger) -> None:
    record = QuarantineRecord(
        "r", "app", A, "move", "quarantine/app", ("v1", "latest"), "critical CVE", T0, None
    )
    ledger.record_quarantine(record)
    assert ledger.quarantined("r", "app", A) == record
    assert ledger.quarantined("r", "app", B) is None
    ledger.mark_released("r", "app", A, now=T0 + timedelta(days=2))
    released = ledger.quarantined("r", "app", A)
    assert released is not None and released.released_at == T0 + timedelta(days=2)
    assert released.tags == ("v1", "latest")
    ledger.mark_released("r", "app", B, now=T0)  # never quarantined: nothing appears
    assert ledger.quarantined("r", "app", B) is None


def test_quarantines_lists_standing_released_or_all_in_one_order(ledger: AuditedLedger) -> None:
    def rec(registry: str, repository: str, digest: str, at: datetime) -> QuarantineRecord:
        return QuarantineRecord(
            registry, repository, digest, "tag", repository, ("v1",), "x", at, None
        )

    assert ledger.quarantines() == []
    later = T0 + timedelta(hours=1)
    # written out of order, across registries and repositories; two at the same instant
    records = [
        rec("r", "web", B, later),
        rec("r2", "app", A, T0),
        rec("r", "web", A, later),
        rec("r", "app", C, T0 - timedelta(days=3)),
        rec("r", "app", A, T0),
    ]
    for r in records:
        ledger.record_quarantine(r)
    ledger.mark_released("r", "web", A, now=later + timedelta(days=1))
    ledger.mark_released("r", "app", C, now=T0)
    names = [(q.registry, q.repository, q.digest) for q in ledger.quarantines()]
    assert names == [
        ("r", "app", C),
        ("r", "app", A),
        ("r2", "app", A),
        ("r", "web", A),
        ("r", "web", B),
    ]
    standing = ledger.quarantines(released=False)
    assert [(q.repository, q.digest) for q in standing] == [("app", A), ("app", A), ("web", B)]
    assert [q.registry for q in standing] == ["r", "r2", "r"]
    assert all(q.released_at is None for q in standing)
    gone = ledger.quarantines(released=True)
    assert [(q.repository, q.digest, q.released_at) for q in gone] == [
        ("app", C, T0),
        ("web", A, later + timedelta(days=1)),
    ]
    assert gone[0] == ledger.quarantined("r", "app", C)  # the same record either way


# -- access monitoring: pull tallies, tracking, alert windows ---------------------------------


def tally(
    digest: str, principal: str, at: datetime, count: int = 1, repo: str = "app"
) -> PullTally:
    return PullTally("r", repo, digest, principal, at, count)


def test_pull_tallies_add_up_per_digest_and_principal(ledger: AuditedLedger) -> None:
    hour = timedelta(hours=1)
    ledger.record_push("r", "app", A, ("v1",), now=T0)
    ledger.record_pulls([])  # nothing to add: nothing written
    assert ledger.pull_tallies("r", "app") == []
    ledger.record_pulls(
        [
            tally(A, "ci-bot", T0 + 2 * hour, 3),
            tally(A, "", T0 + hour),  # the event named nobody
            tally(B, "arn:aws:iam::1:role/deployer", T0 + 3 * hour, 2),
            tally(A, "alice", T0 + hour, 1, repo="other"),
        ]
    )
    ledger.record_pulls(
        [
            tally(A, "ci-bot", T0 + hour, 4),  # late, out of order: counted, time kept
            tally(B, "arn:aws:iam::1:role/deployer", T0 + 5 * hour, 1),
        ]
    )
    assert ledger.pull_tallies("r", "app") == [
        tally(A, "", T0 + hour, 1),
        tally(A, "ci-bot", T0 + 2 * hour, 7),
        tally(B, "arn:aws:iam::1:role/deployer", T0 + 5 * hour, 3),
    ]
    assert ledger.pull_tallies("r", "other") == [tally(A, "alice", T0 + hour, 1, repo="other")]
    assert ledger.pull_tallies("elsewhere", "app") == []
    # the images' last pulls move forward only; a pull of an image never seen pushed is its
    # first sighting, as with record_pull
    assert ledger.image_times("r", "app") == {
        A: (T0, T0 + 2 * hour),
        B: (T0 + 3 * hour, T0 + 5 * hour),
    }
    ledger.record_pull("r", "app", A, now=T0 + 4 * hour)  # both paths keep one last-pulled
    ledger.record_pulls([tally(A, "ci-bot", T0 + 3 * hour)])
    assert ledger.image_times("r", "app")[A] == (T0, T0 + 4 * hour)


def test_pulls_recorded_side_by_side_all_count(ledger: AuditedLedger) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def record(n: int) -> None:
        start.wait()
        try:
            for i in range(10):
                at = T0 + timedelta(seconds=10 * i + n)
                ledger.record_pulls([tally(A, "p", at, 2), tally(B, f"p{n}", at)])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    tallies = ledger.pull_tallies("r", "app")
    assert [(t.digest, t.principal, t.count) for t in tallies] == [
        (A, "p", 80),
        *[(B, f"p{n}", 10) for n in range(4)],
    ]
    assert tallies[0].last_pulled == T0 + timedelta(seconds=93)
    assert ledger.image_times("r", "app")[A][1] == T0 + timedelta(seconds=93)


def test_pull_tracking_keeps_its_earliest_start(ledger: AuditedLedger) -> None:
    assert ledger.pull_tracking_since("r", "app") is None
    later = T0 + timedelta(days=1)
    assert ledger.start_pull_tracking("r", "app", now=later) == later
    assert ledger.start_pull_tracking("r", "app", now=later + timedelta(days=1)) == later
    assert ledger.pull_tracking_since("r", "app") == later
    assert ledger.start_pull_tracking("r", "app", now=T0) == T0  # an earlier start wins
    assert ledger.pull_tracking_since("r", "app") == T0
    assert ledger.pull_tracking_since("r", "other") is None
    assert ledger.pull_tracking_since("elsewhere", "app") is None


def window(key: str, opened: datetime, minutes: int = 10, digest: str = A) -> AccessWindow:
    alert = json.dumps({"dedup_key": key, "opened": opened.isoformat()})
    return AccessWindow(
        key, "r", "app", digest, opened, opened + timedelta(minutes=minutes), 0, None, alert
    )


def test_an_access_window_opens_once_counts_and_is_replaced_or_dropped(
    ledger: AuditedLedger,
) -> None:
    key = "blocked-pull:" + "f" * 64
    assert ledger.access_window(key) is None
    assert ledger.count_access(key, opened_at=T0, add=1, last_seen=T0) is False  # none open
    first = window(key, T0)
    assert ledger.open_access_window(first) is True
    assert ledger.access_window(key) == first
    assert ledger.open_access_window(window(key, T0 + timedelta(seconds=1))) is False  # taken
    assert ledger.access_window(key) == first
    s = timedelta(seconds=1)
    assert ledger.count_access(key, opened_at=T0, add=5, last_seen=T0 + 30 * s) is True
    assert ledger.count_access(key, opened_at=T0, add=2, last_seen=T0 + 20 * s) is True  # late
    assert ledger.count_access(key, opened_at=T0 + s, add=9, last_seen=T0 + 40 * s) is False
    counted = ledger.access_window(key)
    assert counted is not None
    assert (counted.count, counted.last_seen, counted.alert) == (7, T0 + 30 * s, first.alert)
    # the window closed and the next access reopens it: only over the window it saw
    reopened = window(key, T0 + timedelta(minutes=11))
    assert ledger.open_access_window(reopened, replacing=T0 + s) is False
    assert ledger.access_window(key) == counted
    assert ledger.open_access_window(reopened, replacing=T0) is True
    assert ledger.access_window(key) == reopened
    assert ledger.open_access_window(reopened, replacing=T0) is False  # that one is gone
    assert ledger.drop_access_window(key, opened_at=T0) is False
    assert ledger.access_window(key) == reopened
    assert ledger.drop_access_window(key, opened_at=reopened.opened_at) is True
    assert ledger.access_window(key) is None
    assert ledger.drop_access_window(key, opened_at=reopened.opened_at) is False
    assert ledger.open_access_window(first) is True  # the key is free again


def test_access_windows_due_by_closing_time_then_key(ledger: AuditedLedger) -> None:
    assert ledger.access_windows_due(now=T0 + timedelta(days=1)) == []
    m = timedelta(minutes=1)
    windows = [
        window("k-late", T0, minutes=30),
        window("k-b", T0, minutes=10),
        window("k-a", T0, minutes=10, digest=B),
        window("k-first", T0 - 5 * m, minutes=10),
        window("k-open", T0 + 20 * m, minutes=60),
    ]
    for w in windows:
        assert ledger.open_access_window(w)
    ledger.count_access("k-b", opened_at=T0, add=3, last_seen=T0 + m)
    assert ledger.access_windows_due(now=T0) == []
    due = ledger.access_windows_due(now=T0 + 10 * m)  # closes_at <= now
    assert [w.key for w in due] == ["k-first", "k-a", "k-b"]
    assert (due[2].count, due[2].last_seen, due[1].digest) == (3, T0 + m, B)
    assert [w.key for w in ledger.access_windows_due(now=T0 + 10 * m, limit=2)] == [
        "k-first",
        "k-a",
    ]
    later = [w.key for w in ledger.access_windows_due(now=T0 + 2 * 60 * m)]
    assert later == ["k-first", "k-a", "k-b", "k-late", "k-open"]
    ledger.drop_access_window("k-a", opened_at=T0)
    assert [w.key for w in ledger.access_windows_due(now=T0 + 10 * m)] == ["k-first", "k-b"]


def test_processes_racing_to_open_one_window_open_it_once(ledger: AuditedLedger) -> None:
    start = threading.Barrier(4)
    won: list[int] = []
    errors: list[BaseException] = []

    def race(n: int) -> None:
        start.wait()
        try:
            if ledger.open_access_window(window("k", T0 + timedelta(seconds=n))):
                won.append(n)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(won) == 1
    found = ledger.access_window("k")
    assert found is not None and found.opened_at == T0 + timedelta(seconds=won[0])
    # and of two reopening it over the same closed window, one wins
    over = found.opened_at
    results = []
    for n in (100, 101):
        results.append(
            ledger.open_access_window(window("k", T0 + timedelta(seconds=n)), replacing=over)
        )
    assert results == [True, False]


def test_counts_and_tracking_starts_side_by_side_all_land(ledger: AuditedLedger) -> None:
    assert ledger.open_access_window(window("k", T0))
    start = threading.Barrier(4)
    errors: list[BaseException] = []
    answers: list[tuple[datetime, datetime]] = []

    def work(n: int) -> None:
        start.wait()
        try:
            mine = T0 + timedelta(hours=n)
            answers.append((mine, ledger.start_pull_tracking("r", "app", now=mine)))
            for i in range(10):
                seen = T0 + timedelta(seconds=10 * i + n)
                assert ledger.count_access("k", opened_at=T0, add=n + 1, last_seen=seen)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    counted = ledger.access_window("k")
    assert counted is not None
    assert (counted.count, counted.last_seen) == (100, T0 + timedelta(seconds=93))
    # each start answered the earliest stored when it ran (its own or before); the
    # earliest of all is what stays
    assert ledger.pull_tracking_since("r", "app") == T0
    assert len(answers) == 4 and all(T0 <= stored <= mine for mine, stored in answers)


def test_access_records_refuse_what_a_store_cannot_keep(ledger: AuditedLedger) -> None:
    naive = datetime(2026, 11, 27, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.record_pulls([tally(A, "p", naive)])
    with pytest.raises(ValueError, match="at least one"):
        ledger.record_pulls([tally(A, "p", T0, 0)])
    assert ledger.pull_tallies("r", "app") == []
    with pytest.raises(ValueError, match="access window key"):
        ledger.open_access_window(window("a/b", T0))
    with pytest.raises(ValueError, match="access window key"):
        ledger.open_access_window(window("k" * 129, T0))
    assert ledger.open_access_window(window("k" * 128, T0)) is True
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.start_pull_tracking("r", "app", now=naive)
    assert ledger.pull_tracking_since("r", "app") is None


# -- every store ------------------------------------------------------------------------------


def test_naive_times_are_refused(ledger: AuditedLedger) -> None:
    naive = datetime(2026, 11, 27, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.seen_delivery("d1", now=naive, ttl=TTL)
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.record_push("r", "app", A, ("v1",), now=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.commit_outcome(outcome("d1"), now=naive, ttl=TTL)
    assert ledger.delivery_outcome("d1", now=T0) is None


# -- a ledger that is not a queue, as `serve` uses it ----------------------------------------


def wait_for(cond: Callable[[], object], *, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def test_serve_keeps_its_queue_where_queue_says_when_the_ledger_has_none(
    moto: MotoServer,
    registry: LocalRegistry,
    push: PushImage,
    repo: str,
    tmp_path: Path,
) -> None:
    dynamodb = moto.client("dynamodb")
    dynamodb.create_table(**table_definition(TABLE))
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "repositories:\n  - {match: 't/**', team: t}\n"
        f"registries:\n  - {{host: '{registry.host}', kind: distribution}}\n"
    )
    (tmp_path / "tokens").write_text("t0ken\n")
    home = tmp_path / "home"  # where the default ledger would go: never made
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGWARDEN_")}
    env |= {
        "HOME": str(home),
        "REGWARDEN_LEDGER": f"dynamodb://{TABLE}?region={moto.region}&endpoint={moto.endpoint_url}",
    }
    serve = ["serve", "--policy", str(tmp_path / "regwarden.yaml")]
    serve += ["--auth-token-file", str(tmp_path / "tokens")]
    refused = run_cli(*serve, "--port", "0", env=env, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "has no work queue" in refused.stderr
    assert "--queue sqlite:///PATH" in " ".join(refused.stderr.split())

    queue = tmp_path / "queue.db"
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "regwarden", *serve, "--port", str(port), "--workers", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env | {"REGWARDEN_QUEUE": f"sqlite://{queue}"},
        )
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, what="serve to start")
        digest = push(repo, "v1").manifest_digest
        event = {
            "id": "contract-1",
            "timestamp": "2026-11-27T10:00:00Z",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "repository": repo,
                "tag": "v1",
            },
            "request": {"host": registry.host, "useragent": "containers/5.23.1"},
        }
        answer = httpx.post(
            f"{url}/events/distribution",
            json={"events": [event]},
            headers={"Authorization": "Bearer t0ken"},
        )
        assert answer.status_code == 202, answer.text

        def verdicts() -> list[dict[str, Any]]:
            found = dynamodb.scan(TableName=TABLE, ConsistentRead=True)["Items"]
            return [i for i in found if i["sk"]["S"] == f"verdict#{digest}"]

        # the verdict is in the DynamoDB ledger; the event went through the SQLite queue
        wait_for(verdicts, what=f"a verdict for {digest} in DynamoDB\n{log.read_text()}")
        with sqlite3.connect(queue) as db:
            rows = db.execute("SELECT source, done_at, error FROM queue").fetchall()
        assert len(rows) == 1 and rows[0][0] == "distribution" and rows[0][2] is None
        wait_for(lambda: httpx.get(f"{url}/healthz").json()["pending"] == 0, what="queue empty")
    finally:
        proc.terminate()
        proc.wait(30)
    assert not home.exists()  # no ledger file was made beside the DynamoDB one
    assert "Traceback" not in log.read_text()
