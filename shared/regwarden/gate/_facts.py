"""Facts the checks judge: gathered by the shell (registry, ledger, scanners), judged by
pure functions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from ..model import ScanReport, SignatureResult
from ..reference import ImageRef


@dataclass(frozen=True, slots=True)
class ProvenanceFact:
    verified: bool
    builder_id: str | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Facts:
    image: ImageRef
    """By digest; `tag` is the tag this push wrote, if any."""
    tags: tuple[str, ...]
    """Every tag that points at the digest now."""
    pushed_at: datetime
    signatures: tuple[SignatureResult, ...] = ()
    signatures_unmet: tuple[str, ...] = ()
    """Configured verifiers (keys, identities, trust policies) with no valid signature."""
    signature_error: str | None = None
    """Discovery failed (registry error): fail closed, retry later."""
    scan: ScanReport | None = None
    """The newest of `scans` (what an alert or a caller that shows one report reads). Given
    alone, it is the one-report shorthand: `scans` becomes `(scan,)`. When `scans` is
    given, `scan` is derived from it and whatever was passed is replaced."""
    scans: tuple[ScanReport, ...] = ()
    """Every available report: each scan source's, and each scanner's newest verified
    cosign vuln attestation. The vulnerability check judges every one (the worst wins)."""
    scan_error: str | None = None
    """A scanner reported a failure for this image."""
    scan_waiting: str | None = None
    """Why there is no scan yet, where a scan source said (shown while PENDING and at the
    scan timeout)."""
    moved_tags: dict[str, str] = field(default_factory=dict)
    """tag → digest it pointed at before this push (from the ledger)."""
    size: int | None = None
    layer_count: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    provenance: tuple[ProvenanceFact, ...] = ()
    unavailable: tuple[str, ...] = ()
    """Evidence that could not be gathered (`source: cause`): the verdict is ERROR."""

    def __post_init__(self) -> None:
        # Frozen: the two views of the reports are settled once, here.
        if self.scans:
            object.__setattr__(self, "scan", newest(self.scans))
        elif self.scan is not None:
            object.__setattr__(self, "scans", (self.scan,))


def newest(reports: Iterable[ScanReport]) -> ScanReport | None:
    """The newest report; a dated one beats an undated one, and of equals the first."""
    found: ScanReport | None = None
    for report in reports:
        if found is None or newer(report, found):
            found = report
    return found


def newer(a: ScanReport, b: ScanReport) -> bool:
    if a.scanned_at is None:
        return False
    return b.scanned_at is None or a.scanned_at > b.scanned_at
