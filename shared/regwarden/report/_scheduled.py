"""The scheduled report a cloud function writes to object storage (S3, GCS, Blob
Storage): what `regwarden report` does for one registry, the object keys of a day's
report, and its JSON. The clouds' adapters keep only their settings and their upload."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..report_scope import prefix_globs
from ._collect import collect, registry_pull_times
from ._history import record_report
from ._model import Report
from ._summarise import summarise

__all__ = ["PLAN_NOTE", "make_report", "prefix_globs", "report_json", "report_keys"]

PLAN_NOTE = (
    "retention plan: not made by the scheduled report (the retention functions plan and "
    "log it, RETENTION_MODE=plan)"
)


def report_keys(prefix: str, now: datetime) -> tuple[str, str]:
    """(html key, json key) of the report made at `now` (its UTC date): one pair a day, a
    second run that day replaces it. `prefix` ends with `/` (or is empty)."""
    day = now.astimezone(UTC).strftime("%Y/%m/%d")
    return f"{prefix}{day}/report.html", f"{prefix}{day}/report.json"


def report_json(report: Report) -> str:
    """The same JSON as `regwarden report --output json`."""
    return json.dumps(report.model_dump(mode="json", by_alias=True), indent=2) + "\n"


def make_report(
    provider: Any,
    ledger: Any,
    *,
    registry: str,
    policy: Any,
    globs: Sequence[str],
    now: datetime,
    top: int = 10,
    stale_days: int = 90,
) -> Report:
    """Collect (the provider's repositories matching `globs`), summarise, and keep the
    summary in the ledger for the next report's trends; no retention plan (PLAN_NOTE)."""
    inventory = collect(
        provider.data_plane(),
        ledger,
        registry=registry,
        globs=globs,
        repositories=provider.list_repositories(),
        policy=policy,
        registry_pull_times=registry_pull_times(provider),
    )
    inventory = inventory.model_copy(update={"notes": (*inventory.notes, PLAN_NOTE)})
    report = summarise(inventory, now=now, top=top, stale_days=stale_days)
    record_report(ledger, report.summary(), now=now)
    return report
