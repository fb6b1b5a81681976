"""Each report's summary kept in the ledger, so the next report draws trends.

Stored as an action record of kind `report` (key `report:REGISTRY:TIME`, the summary as
its state): every store already keeps, lists and round-trips action records with the same
contract (`tests/integration/test_ledger_contract.py`), so the summaries live wherever the
ledger lives (SQLite, DynamoDB, Firestore, Table Storage) without a new table or a new
method on each store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = ["REPORT_KIND", "record_report", "report_summaries"]

REPORT_KIND = "report"


def record_report(ledger: Any, summary: dict[str, Any], *, now: datetime) -> str:
    """Keep `summary` (a `Report.summary()`); returns its key."""
    registry = str(summary.get("registry", ""))
    key = f"{REPORT_KIND}:{registry}:{now.isoformat()}"
    ledger.begin_action(
        key,
        registry=registry,
        repository="*",
        digest="",
        kind=REPORT_KIND,
        reason="registry report",
        state=summary,
        now=now,
    )
    ledger.finish_action(key, status="done")
    return key


def report_summaries(
    ledger: Any, registry: str, *, limit: int = 30, actions: Sequence[Any] | None = None
) -> list[dict[str, Any]]:
    """The newest `limit` summaries kept for `registry`, oldest first. `actions`:
    `ledger.actions()` already read (every status; the finished ones are taken)."""
    done = ledger.actions(status="done") if actions is None else actions
    records = [
        a for a in done if a.kind == REPORT_KIND and a.registry == registry and a.status == "done"
    ]
    records.sort(key=lambda a: a.at)
    return [dict(a.state) for a in records[-limit:]] if limit > 0 else []
