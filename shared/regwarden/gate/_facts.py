"""Facts the checks judge: gathered by the shell (registry, ledger, scanners), judged by
pure functions."""

from __future__ import annotations

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
    scan_error: str | None = None
    """The scanner reported a failure for this image."""
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
