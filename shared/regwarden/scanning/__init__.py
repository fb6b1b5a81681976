"""Scan reports from any scanner, normalised into `regwarden.model.ScanReport`.

Pure parsers (bytes in, models out; no I/O, no clock):

- `parse_trivy`: Trivy JSON, SchemaVersion 2
- `parse_grype`: Grype JSON
- `parse_harbor_report`: Harbor pluggable scanner adapter report (vulnerability report 1.1)
- `parse_harbor_overview`: the counts-only scan overview in Harbor's scan webhooks
  (a `HarborScanOverview` whose `ScanSummary` exists only for a successful scan)
- `parse_cosign_vuln`: cosign vuln attestation, as in-toto statement or bare predicate
- `parse_report` / `detect_format`: pick one of the above by the document's shape

Malformed or unknown input raises `ScanFormatError` (an `IntakeError`) naming the path.

The push gate's scan sources (the registry's own scanner, a scanner's API) are factories in
`SCAN_SOURCES`, keyed by the policy's `vulnerabilities.sources` names; `scan_readers` turns
the names into calls.
"""

from ._cosign import parse_cosign_vuln
from ._detect import FORMATS, detect_format, parse_report
from ._errors import ScanFormatError
from ._grype import parse_grype
from ._harbor import parse_harbor_overview, parse_harbor_report
from ._model import HarborScanOverview, ScanStatus, ScanSummary
from ._sources import (
    SCAN_SOURCES,
    NoScanYet,
    ScanContext,
    ScanReader,
    ScanSourceFactory,
    scan_readers,
)
from ._trivy import parse_trivy

__all__ = [
    "FORMATS",
    "SCAN_SOURCES",
    "HarborScanOverview",
    "NoScanYet",
    "ScanContext",
    "ScanFormatError",
    "ScanReader",
    "ScanSourceFactory",
    "ScanStatus",
    "ScanSummary",
    "detect_format",
    "parse_cosign_vuln",
    "parse_grype",
    "parse_harbor_overview",
    "parse_harbor_report",
    "parse_report",
    "parse_trivy",
    "scan_readers",
]
