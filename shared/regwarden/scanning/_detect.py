"""Pick the right parser for a report by its shape."""

from __future__ import annotations

from ..jsondoc import load_json
from ..model import ScanReport
from ._cosign import parse_cosign_vuln
from ._errors import ScanFormatError
from ._grype import parse_grype
from ._harbor import parse_harbor_report
from ._trivy import parse_trivy

FORMATS = ("trivy", "grype", "harbor", "cosign-vuln")


def detect_format(data: bytes) -> str:
    """Name the report format of `data`: one of `FORMATS`; raise ScanFormatError if none.

    trivy: has `SchemaVersion`; grype: has `matches`; harbor: has `generated_at` or
    `vulnerabilities`; cosign-vuln: an in-toto statement or a predicate with `scanner(s)`.
    """
    root = load_json(data, label="scan report", error=ScanFormatError)
    root.mapping()
    if root.has("SchemaVersion"):
        return "trivy"
    if root.has("matches"):
        return "grype"
    if root.has("predicateType") or root.has("_type") or root.has("payloadType"):
        return "cosign-vuln"
    if root.has("scanner") and (root.has("invocation") or root.has("metadata")):
        return "cosign-vuln"
    if root.has("scanners"):
        return "cosign-vuln"
    if root.has("generated_at") or root.has("vulnerabilities"):
        return "harbor"
    root.fail(
        "a scan report; valid formats: " + ", ".join(FORMATS),
        got="an object of none of these shapes (keys: "
        + ", ".join(sorted(root.mapping())[:8])
        + ")",
    )


def parse_report(data: bytes, *, digest: str | None = None) -> ScanReport:
    """Parse any supported report (see `detect_format`) into a ScanReport."""
    parsers = {
        "trivy": parse_trivy,
        "grype": parse_grype,
        "harbor": parse_harbor_report,
        "cosign-vuln": parse_cosign_vuln,
    }
    return parsers[detect_format(data)](data, digest=digest)
