"""Trivy JSON reports (`trivy image --format json`, SchemaVersion 2)."""

from __future__ import annotations

from datetime import datetime

from ..jsondoc import Node, load_json
from ..model import Finding, ScanReport
from ._common import (
    best_score,
    checked_digest,
    clip,
    digest_from_repo_digests,
    highest,
    make_finding,
    node_digest,
    severity,
)
from ._errors import ScanFormatError

LABEL = "Trivy report"


def parse_trivy(data: bytes, *, digest: str | None = None) -> ScanReport:
    """Normalise a Trivy JSON report (SchemaVersion 2) into a ScanReport.

    The image digest is, in order: `digest` (the caller knows which image it asked about),
    the one digest in `Metadata.RepoDigests`, then `Metadata.ImageID`. `ImageID` is the
    image *config* digest, not the manifest digest, so a gate looking reports up by
    manifest digest will not match it; pass `digest=` whenever you know it.
    `scanned_at` is `CreatedAt` (absent in Trivy before 0.48). Raises ScanFormatError.
    """
    root = load_json(data, label=LABEL, error=ScanFormatError)
    return trivy_report(root, digest=digest, source="trivy-json")


def trivy_report(
    root: Node,
    *,
    digest: str | None,
    source: str,
    scanned_at: datetime | None = None,
    scanner: str | None = None,
) -> ScanReport:
    """Build a ScanReport from a decoded Trivy report at `root` (also used for the
    Trivy result embedded in a cosign vuln attestation)."""
    root.mapping()
    version = root.field("SchemaVersion")
    if version.value != 2 or isinstance(version.value, bool):
        version.fail("2 (Trivy JSON SchemaVersion 2)")
    image_digest = _digest(root, digest)
    created = root.field("CreatedAt").opt_timestamp()
    findings: list[Finding] = []
    for result in root.field("Results").opt_array():
        result.mapping()
        for vuln in result.field("Vulnerabilities").opt_array():
            findings.append(_finding(vuln))
    if scanner is None:
        trivy = root.field("Trivy")
        trivy_version = trivy.field("Version").opt_text() if trivy.present else None
        scanner = f"trivy {trivy_version}" if trivy_version else "trivy"
    return ScanReport(
        digest=image_digest,
        scanner=scanner,
        source=source,
        scanned_at=scanned_at if scanned_at is not None else created,
        findings=tuple(findings),
    )


def _digest(root: Node, explicit: str | None) -> str:
    if explicit is not None:
        return checked_digest(explicit, what="digest argument")
    metadata = root.field("Metadata")
    if metadata.present:
        found = digest_from_repo_digests(metadata.field("RepoDigests"))
        if found is not None:
            return found
        image_id = metadata.field("ImageID")
        if image_id.present:
            return node_digest(image_id)
    raise root.error(
        "no image digest: Metadata.RepoDigests and Metadata.ImageID are absent; pass digest="
    )


def _finding(vuln: Node) -> Finding:
    vuln.mapping()
    # A FixedVersion (possibly a list or range) means a fix exists, whatever `Status` says:
    # reading it as "no fix" would make a fixable-only policy more lenient.
    fixed = vuln.field("FixedVersion").opt_text()
    url = vuln.field("PrimaryURL").opt_text()
    if url is None:
        refs = vuln.field("References").opt_array()
        url = refs[0].opt_text() if refs else None
    return make_finding(
        vuln,
        id=vuln.field("VulnerabilityID").text(),
        severity=severity(vuln.field("Severity")),
        package=vuln.field("PkgName").text(),
        installed_version=vuln.field("InstalledVersion").opt_text() or "",
        fixed_version=fixed,
        cvss=_cvss(vuln),
        title=clip(vuln.field("Title").opt_text() or vuln.field("Description").opt_text()),
        url=url,
    )


def _cvss(vuln: Node) -> float | None:
    """Best CVSS base score: NVD v3, then the severity source's v3, then the highest other
    vendor v3; then the same for CVSS v4 and v2."""
    cvss = vuln.field("CVSS")
    if not cvss.present:
        return None
    vendors = dict(cvss.items())
    source = vuln.field("SeveritySource").opt_text()

    def score(vendor: str, key: str) -> float | None:
        node = vendors.get(vendor)
        if node is None or not node.present:
            return None
        return node.field(key).opt_number(low=0.0, high=10.0)

    candidates: list[float | None] = []
    for key in ("V3Score", "V40Score", "V2Score"):
        candidates.append(score("nvd", key))
        if source is not None and source != "nvd":
            candidates.append(score(source, key))
        candidates.append(highest(score(v, key) for v in vendors if v != "nvd"))
    return best_score(candidates)
