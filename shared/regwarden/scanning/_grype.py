"""Grype JSON reports (`grype IMAGE -o json`)."""

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

LABEL = "Grype report"
_NVD_SOURCE = "nvd@nist.gov"


def parse_grype(data: bytes, *, digest: str | None = None) -> ScanReport:
    """Normalise a Grype JSON report into a ScanReport.

    The image digest is, in order: `digest`, `source.target.manifestDigest`, the one digest
    in `source.target.repoDigests`, then `source.target.imageID` (a config digest).
    A finding has a fixed version only when `fix.state` is `fixed`; several fix versions
    are joined with ", ". `scanned_at` is `descriptor.timestamp`. Raises ScanFormatError.
    """
    root = load_json(data, label=LABEL, error=ScanFormatError)
    return grype_report(root, digest=digest, source="grype-json")


def grype_report(
    root: Node, *, digest: str | None, source: str, scanned_at: datetime | None = None
) -> ScanReport:
    root.mapping()
    if not root.has("matches"):
        root.fail("a Grype report (an object with 'matches')", got="an object without it")
    descriptor = root.field("descriptor")
    version, created = None, None
    if descriptor.present:
        name = descriptor.field("name")
        if name.opt_text() not in (None, "grype"):
            name.fail("'grype'")
        version = descriptor.field("version").opt_text()
        created = descriptor.field("timestamp").opt_timestamp()
    findings: list[Finding] = [_finding(m) for m in root.field("matches").opt_array()]
    return ScanReport(
        digest=_digest(root, digest),
        scanner=f"grype {version}" if version else "grype",
        source=source,
        scanned_at=scanned_at if scanned_at is not None else created,
        findings=tuple(findings),
    )


def _digest(root: Node, explicit: str | None) -> str:
    if explicit is not None:
        return checked_digest(explicit, what="digest argument")
    src = root.field("source")
    target = src.field("target") if src.present else src
    if target.present:
        target.mapping()
        manifest = target.field("manifestDigest")
        if manifest.present:
            return node_digest(manifest)
        found = digest_from_repo_digests(target.field("repoDigests"))
        if found is not None:
            return found
        image_id = target.field("imageID")
        if image_id.present:
            return node_digest(image_id)
    raise root.error(
        "no image digest: source.target has no manifestDigest, repoDigests or imageID; pass digest="
    )


def _finding(match: Node) -> Finding:
    match.mapping()
    vuln = match.field("vulnerability")
    vuln.mapping()
    artifact = match.field("artifact")
    artifact.mapping()
    fix = vuln.field("fix")
    fixed: str | None = None
    if fix.present:
        state = fix.field("state").opt_text()
        versions = [v.text() for v in fix.field("versions").opt_array()]
        if state == "fixed" and versions:
            fixed = ", ".join(versions)
    urls = [u.text() for u in vuln.field("urls").opt_array()]
    url = vuln.field("dataSource").opt_text() or (urls[0] if urls else None)
    kev = vuln.field("knownExploited").opt_array()
    return make_finding(
        match,
        id=vuln.field("id").text(),
        severity=severity(vuln.field("severity")),
        package=artifact.field("name").text(),
        installed_version=artifact.field("version").opt_text() or "",
        fixed_version=fixed,
        cvss=_cvss(vuln, match.field("relatedVulnerabilities").opt_array()),
        title=clip(vuln.field("description").opt_text()),
        url=url,
        exploit_available=bool(kev),
    )


def _cvss(vuln: Node, related: list[Node]) -> float | None:
    """NVD v3 base score, else the highest other v3, then v4, then v2 (NVD first)."""
    by_version: dict[str, list[tuple[bool, float]]] = {"3": [], "4": [], "2": []}
    for record in [vuln, *related]:
        record.mapping()
        namespace = record.field("namespace").opt_text() or ""
        for entry in record.field("cvss").opt_array():
            entry.mapping()
            major = (entry.field("version").opt_text() or "").split(".", 1)[0]
            if major not in by_version:
                continue
            metrics = entry.field("metrics")
            if not metrics.present:
                continue
            score = metrics.field("baseScore").opt_number(low=0.0, high=10.0)
            if score is None:
                continue
            source = entry.field("source").opt_text() or ""
            is_nvd = source == _NVD_SOURCE or (
                namespace.startswith("nvd") and entry.field("type").opt_text() == "Primary"
            )
            by_version[major].append((is_nvd, score))
    candidates: list[float | None] = []
    for major in ("3", "4", "2"):
        entries = by_version[major]
        candidates.append(highest(s for nvd, s in entries if nvd))
        candidates.append(highest(s for _, s in entries))
    return best_score(candidates)
