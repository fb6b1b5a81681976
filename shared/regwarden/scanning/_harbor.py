"""Harbor: the pluggable scanner adapter report and the webhook's scan overview."""

from __future__ import annotations

from collections.abc import Mapping

from ..jsondoc import Node, load_json
from ..model import Finding, ScanReport, Severity
from ._common import (
    best_score,
    checked_digest,
    clip,
    make_finding,
    node_digest,
    severity,
)
from ._errors import ScanFormatError
from ._model import HarborScanOverview, ScanStatus, ScanSummary

REPORT_LABEL = "Harbor scanner report"
OVERVIEW_LABEL = "Harbor scan overview"

#: Report media types whose overview carries vulnerability counts, preferred first.
VULN_REPORT_TYPES = (
    "application/vnd.security.vulnerability.report; version=1.1",
    "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0",
)

_STATUS = {
    "success": ScanStatus.SUCCEEDED,
    "error": ScanStatus.FAILED,
    "stopped": ScanStatus.STOPPED,
    "pending": ScanStatus.PENDING,
    "running": ScanStatus.PENDING,
    "scheduled": ScanStatus.PENDING,
}


def parse_harbor_report(data: bytes, *, digest: str | None = None) -> ScanReport:
    """Normalise a pluggable scanner adapter vulnerability report
    (`application/vnd.security.vulnerability.report; version=1.1`) into a ScanReport.

    The digest is `digest` if given, else `artifact.digest`. The CVSS score is the NVD v3
    score from `vendor_attributes.CVSS` when the adapter supplies it (Trivy's does), else
    `preferred_cvss.score_v3` (or `cvss.score_v3`), else the v2 score. Raises ScanFormatError.
    """
    root = load_json(data, label=REPORT_LABEL, error=ScanFormatError)
    root.mapping()
    if not root.has("vulnerabilities") and not root.has("generated_at"):
        root.fail(
            "a scanner report (an object with 'generated_at' and 'vulnerabilities')",
            got="an object without them",
        )
    if digest is not None:
        image_digest = checked_digest(digest, what="digest argument")
    else:
        artifact = root.field("artifact")
        if not artifact.present:
            raise root.error("no image digest: 'artifact' is absent; pass digest=")
        image_digest = node_digest(artifact.field("digest"))
    return ScanReport(
        digest=image_digest,
        scanner=_scanner_name(root.field("scanner")),
        source="harbor-scanner",
        scanned_at=root.field("generated_at").opt_timestamp(),
        findings=tuple(_finding(v) for v in root.field("vulnerabilities").opt_array()),
    )


def _scanner_name(node: Node) -> str:
    if not node.present:
        return "unknown"
    name = node.field("name").opt_text() or "unknown"
    version = node.field("version").opt_text()
    return f"{name} {version}" if version else name


def _finding(vuln: Node) -> Finding:
    vuln.mapping()
    links = [link.text() for link in vuln.field("links").opt_array()]
    return make_finding(
        vuln,
        id=vuln.field("id").text(),
        severity=severity(vuln.field("severity")),
        package=vuln.field("package").text(),
        installed_version=vuln.field("version").opt_text() or "",
        fixed_version=vuln.field("fix_version").opt_text(),
        cvss=_cvss(vuln),
        title=clip(vuln.field("description").opt_text()),
        url=links[0] if links else None,
    )


def _cvss(vuln: Node) -> float | None:
    def pick(holder: Node, key: str) -> float | None:
        if not holder.present:
            return None
        return holder.field(key).opt_number(low=0.0, high=10.0)

    nvd_v3: float | None = None
    attrs = vuln.field("vendor_attributes")
    if attrs.present:
        vendor_cvss = attrs.field("CVSS")
        if vendor_cvss.present:
            nvd = vendor_cvss.field("nvd")
            nvd_v3 = pick(nvd, "V3Score")
    preferred = vuln.field("preferred_cvss")
    legacy = vuln.field("cvss")
    return best_score(
        [
            nvd_v3,
            pick(preferred, "score_v3"),
            pick(legacy, "score_v3"),
            pick(preferred, "score_v2"),
            pick(legacy, "score_v2"),
        ]
    )


def parse_harbor_overview(
    overview: bytes | Mapping[str, object], *, digest: str, where: str = "scan_overview"
) -> HarborScanOverview | None:
    """Read Harbor's `scan_overview` (keyed by report media type) from a scan webhook.

    Returns None when the overview holds no vulnerability report (e.g. only an SBOM).
    The summary counts are set only when `scan_status` is `Success`; any other status
    (`Error`, `Stopped`, `Running`, …) yields a summary of None, so a failed scan can never
    read as a clean one. `where` prefixes paths in error messages. Raises ScanFormatError.
    """
    if isinstance(overview, Mapping):
        root = Node(dict(overview), where, label=OVERVIEW_LABEL, error=ScanFormatError)
    else:
        root = load_json(overview, label=OVERVIEW_LABEL, error=ScanFormatError)
    root.mapping()
    checked = checked_digest(digest, what="digest argument")
    entry = next((root.field(t) for t in VULN_REPORT_TYPES if root.has(t)), None)
    if entry is None or not entry.present:
        return None
    entry.mapping()
    status_node = entry.field("scan_status")
    status = _STATUS.get(status_node.text().lower())
    if status is None:
        status_node.fail("a scan status, one of " + ", ".join(s.title() for s in _STATUS))
    report_id = entry.field("report_id").opt_text()
    if status is not ScanStatus.SUCCEEDED:
        return HarborScanOverview(status=status, report_id=report_id)
    summary = entry.field("summary")
    summary.mapping()
    counts: dict[Severity, int] = {}
    per_severity = summary.field("summary")
    if per_severity.present:
        for name, count in per_severity.items():
            try:
                sev = Severity.parse(name)
            except ValueError:
                per_severity.fail(
                    "severity names, one of " + ", ".join(s.name.title() for s in Severity),
                    got=repr(name),
                )
            counts[sev] = counts.get(sev, 0) + count.integer(minimum=0)
    fixable = summary.field("fixable")
    return HarborScanOverview(
        status=status,
        report_id=report_id,
        summary=ScanSummary(
            digest=checked,
            scanner=_scanner_name(entry.field("scanner")),
            source="harbor-overview",
            scanned_at=entry.field("end_time").opt_timestamp(),
            by_severity=counts,
            total=summary.field("total").integer(minimum=0),
            fixable=fixable.integer(minimum=0) if fixable.present else None,
        ),
    )
