"""Report summaries kept in the ledger (`report.record_report` / `report_summaries`) on
SQLite and on DynamoDB (moto's server over the wire): kept per registry, read back
oldest first, the newest `limit` only — what the next report's trend draws from."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import moto_server as support
from support.moto_server import MotoServer

from regwarden.devtools import LocalRegistry
from regwarden.oci import RegistryClient
from regwarden.report import collect, record_report, report_summaries
from regwarden.store import QuarantineRecord, open_ledger
from regwarden.store._dynamo import table_definition

moto_server = support.moto_server
moto = support.moto

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(params=("sqlite", "dynamodb"))
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path}/ledger.db"
    else:
        server: MotoServer = request.getfixturevalue("moto")
        server.client("dynamodb").create_table(**table_definition("regwarden-report"))
        url = f"dynamodb://regwarden-report?region={server.region}&endpoint={server.endpoint_url}"
    led: Any = open_ledger(url)
    yield led
    led.close()


def test_summaries_are_kept_per_registry_and_read_oldest_first(ledger: Any) -> None:
    for n in range(4):
        at = T0 + timedelta(days=n)
        summary = {"registry": "r.example", "at": at.isoformat(), "bytes": 100 * n, "images": n}
        record_report(ledger, summary, now=at)
    record_report(ledger, {"registry": "other", "at": T0.isoformat(), "bytes": 1}, now=T0)
    kept = report_summaries(ledger, "r.example", limit=3)
    assert [s["bytes"] for s in kept] == [100, 200, 300]  # the newest three, oldest first
    assert kept[-1] == {
        "registry": "r.example",
        "at": (T0 + timedelta(days=3)).isoformat(),
        "bytes": 300,
        "images": 3,
    }
    assert [s["bytes"] for s in report_summaries(ledger, "other")] == [1]
    assert report_summaries(ledger, "nowhere") == []


def test_a_report_reads_the_ledger_s_action_records_once(
    ledger: Any, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quarantine log, the retention history and the trend each come from the action
    records: one read serves all three (on DynamoDB it is a Scan)."""
    host = registry.host
    record_report(ledger, {"registry": host, "at": T0.isoformat(), "images": 7}, now=T0)
    ledger.begin_action(
        "retention-run:r1",
        registry=host,
        repository="*",
        digest="",
        kind="retention-run",
        reason="retention",
        state={"run_id": "r1", "deleted": 2, "bytes_freed": 2048},
        now=T0,
    )
    ledger.finish_action("retention-run:r1", status="done")
    ledger.record_quarantine(
        QuarantineRecord(
            registry=host,
            repository="t/held",
            digest="sha256:" + "c3" * 32,
            strategy="move",
            location="quarantine/t/held",
            tags=("1.0",),
            reason="critical CVE",
            quarantined_at=T0,
            released_at=None,
        )
    )
    reads: list[str | None] = []
    every = ledger.actions
    monkeypatch.setattr(
        ledger, "actions", lambda status=None: reads.append(status) or every(status=status)
    )
    with RegistryClient(host, insecure=True) as client:
        inventory = collect(client, ledger, registry=host, repositories=())
    assert reads == [None]
    assert [s["images"] for s in inventory.previous] == [7]
    assert [(r.run_id, r.deleted, r.bytes_freed) for r in inventory.retention_runs] == [
        ("r1", 2, 2048)
    ]
    assert [q.repository for q in inventory.quarantines] == ["t/held"]
