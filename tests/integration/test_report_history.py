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

from regwarden.report import record_report, report_summaries
from regwarden.store import open_ledger
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
