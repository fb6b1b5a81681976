"""Companion models for scan results that carry counts but no findings."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ..model import Severity

__all__ = ["HarborScanOverview", "ScanStatus", "ScanSummary"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScanStatus(enum.StrEnum):
    """How a scanner run ended, as the event sender reports it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    PENDING = "pending"  # queued or still running


class ScanSummary(_Frozen):
    """Per-severity counts of a completed scan, without the findings themselves.

    Harbor's SCANNING_COMPLETED webhook carries only these counts. A summary is never
    turned into an empty `ScanReport`: "no findings listed" must not read as "none found".
    Like `ScanReport`, `counts()` returns every severity (zero-filled).
    """

    digest: str
    scanner: str = Field(description="scanner name and version as reported, 'unknown' when absent")
    source: str = Field(description="where the counts came from, e.g. 'harbor-overview'")
    scanned_at: datetime | None = None
    by_severity: dict[Severity, int] = Field(
        default_factory=dict, description="counts as reported (severities absent are zero)"
    )
    total: int = Field(ge=0, description="number of vulnerabilities the sender reports")
    fixable: int | None = Field(default=None, ge=0)

    def counts(self) -> dict[Severity, int]:
        out = dict.fromkeys(Severity, 0)
        out.update(self.by_severity)
        return out

    @property
    def highest(self) -> Severity | None:
        """The highest severity with a non-zero count, or None when nothing was found."""
        found = [sev for sev, n in self.by_severity.items() if n > 0]
        return max(found) if found else None


class HarborScanOverview(_Frozen):
    """Harbor's `scan_overview` for one artifact: how the scan ended and, if it
    succeeded, the counts."""

    status: ScanStatus
    report_id: str | None = None
    summary: ScanSummary | None = Field(
        default=None, description="set exactly when status is SUCCEEDED"
    )
