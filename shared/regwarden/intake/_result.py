"""What the intake parsers return besides plain events."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from ..errors import IntakeError
from ..model import ImageEvent
from ..scanning import ScanStatus, ScanSummary


class IntakeResult(BaseModel):
    """One event plus what the sender said about a scan (Harbor scan webhooks).

    For SCANNED events `scan_status` says how the scan ended; `scan_summary` holds the
    sender's counts and is set only for a successful scan. A SCANNED event with status
    FAILED or STOPPED means "no usable report": the gate must not read it as clean.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: ImageEvent
    scan_status: ScanStatus | None = Field(default=None, description="set for SCANNED events")
    scan_summary: ScanSummary | None = None


@dataclass(frozen=True, slots=True)
class IntakeBatch:
    """The events read from one delivery, and one error per record that could not be read.

    A bad record never hides the good ones: handlers process `events` and report `errors`
    (dead-letter, partial-batch failure) instead of failing the whole delivery.
    """

    events: tuple[ImageEvent, ...]
    errors: tuple[IntakeError, ...]
    skipped: int = 0
    """Valid records that are not image events (blob pushes, mounts): nothing to do."""
