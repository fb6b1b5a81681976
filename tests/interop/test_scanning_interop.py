"""Scan parsers over reports made by the real tools (../shared/fixtures; skipped if absent).

Every expectation is computed here by walking the raw JSON independently of the parser.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regwarden.model import ScanReport, Severity
from regwarden.scanning import detect_format, parse_cosign_vuln, parse_grype, parse_trivy

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
TRIVY_DIR = FIXTURES / "trivy"
GRYPE_FILE = FIXTURES / "grype" / "grype-0.94.0-busybox-1.32.1.json"
COSIGN_FILE = TRIVY_DIR / "trivy-v0.30.1-cosign-vuln.alpine-3.10.json"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is not present"),
]

# Scanner spellings → severity, written out here rather than taken from Severity.parse.
SPELLING = {
    "CRITICAL": Severity.CRITICAL,
    "HIGH": Severity.HIGH,
    "MEDIUM": Severity.MEDIUM,
    "LOW": Severity.LOW,
    "NEGLIGIBLE": Severity.NEGLIGIBLE,
    "UNKNOWN": Severity.UNKNOWN,
}


def trivy_goldens() -> list[Path]:
    if not TRIVY_DIR.is_dir():
        return []
    return sorted(p for p in TRIVY_DIR.glob("*.json") if p != COSIGN_FILE)


def walk_trivy(doc: dict[str, Any]) -> list[dict[str, Any]]:
    vulns: list[dict[str, Any]] = []
    for result in doc.get("Results") or []:
        vulns.extend(result.get("Vulnerabilities") or [])
    return vulns


def severity_counts(report: ScanReport) -> Counter[Severity]:
    return Counter({sev: n for sev, n in report.counts().items() if n})


def trivy_time(value: Any) -> datetime:
    if isinstance(value, int):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(value).astimezone(UTC)


@pytest.mark.parametrize("path", trivy_goldens(), ids=lambda p: p.stem)
def test_trivy_golden_counts_and_fixes(path: Path) -> None:
    doc = json.loads(path.read_text())
    vulns = walk_trivy(doc)
    report = parse_trivy(path.read_bytes())
    assert detect_format(path.read_bytes()) == "trivy"
    assert severity_counts(report) == Counter(SPELLING[v["Severity"]] for v in vulns)
    assert [f.id for f in report.findings] == [v["VulnerabilityID"] for v in vulns]
    assert [f.package for f in report.findings] == [v["PkgName"] for v in vulns]
    assert [f.fixed_version for f in report.findings] == [
        v.get("FixedVersion") or None for v in vulns
    ]
    assert sum(f.fixable for f in report.findings) == sum(
        bool(v.get("FixedVersion")) for v in vulns
    )
    for finding, vuln in zip(report.findings, vulns, strict=True):
        nvd = vuln.get("CVSS", {}).get("nvd", {})
        if "V3Score" in nvd:
            assert finding.cvss == nvd["V3Score"]
    metadata = doc["Metadata"]
    repo_digests = {d.split("@", 1)[1] for d in metadata.get("RepoDigests") or []}
    assert report.digest == (repo_digests.pop() if repo_digests else metadata["ImageID"])
    assert report.scanned_at == trivy_time(doc["CreatedAt"])
    assert report.scanner == f"trivy {doc['Trivy']['Version']}"


def test_trivy_goldens_are_present() -> None:
    names = {p.stem for p in trivy_goldens()}
    assert len(names) >= 6
    assert "sl-micro-rancher5.4" in names


def test_trivy_report_without_vulnerabilities() -> None:
    path = TRIVY_DIR / "sl-micro-rancher5.4.json"
    doc = json.loads(path.read_text())
    assert doc["Results"]  # results exist, they just list no vulnerabilities
    assert walk_trivy(doc) == []
    report = parse_trivy(path.read_bytes(), digest="sha256:" + "0" * 64)
    assert report.findings == ()
    assert sum(report.counts().values()) == 0
    assert report.digest == "sha256:" + "0" * 64


def test_trivy_mixed_os_and_language_results() -> None:
    path = TRIVY_DIR / "spring4shell-jre11.json"
    doc = json.loads(path.read_text())
    classes = {r.get("Class") for r in doc["Results"]}
    assert {"os-pkgs", "lang-pkgs"} <= classes
    report = parse_trivy(path.read_bytes())
    lang = [
        v for r in doc["Results"] if r.get("Class") == "lang-pkgs" for v in r["Vulnerabilities"]
    ]
    assert {f.package for f in report.findings} >= {v["PkgName"] for v in lang}


def test_grype_counts_fixes_and_digest() -> None:
    doc = json.loads(GRYPE_FILE.read_text())
    matches = doc["matches"]
    report = parse_grype(GRYPE_FILE.read_bytes())
    assert detect_format(GRYPE_FILE.read_bytes()) == "grype"
    assert len(report.findings) == len(matches)
    assert severity_counts(report) == Counter(
        SPELLING[m["vulnerability"]["severity"].upper()] for m in matches
    )
    expected_fixes = [
        ", ".join(m["vulnerability"]["fix"]["versions"])
        if m["vulnerability"]["fix"]["state"] == "fixed" and m["vulnerability"]["fix"]["versions"]
        else None
        for m in matches
    ]
    assert [f.fixed_version for f in report.findings] == expected_fixes
    assert any(expected_fixes) and not all(expected_fixes)  # the file exercises both cases
    assert [(f.package, f.installed_version) for f in report.findings] == [
        (m["artifact"]["name"], m["artifact"]["version"]) for m in matches
    ]
    for finding, match in zip(report.findings, matches, strict=True):
        nvd_v3 = [
            c["metrics"]["baseScore"]
            for c in match["vulnerability"]["cvss"]
            if c["source"] == "nvd@nist.gov" and c["version"].startswith("3")
        ]
        if nvd_v3:
            assert finding.cvss == max(nvd_v3)
        else:
            assert finding.cvss is not None
    assert report.digest == doc["source"]["target"]["manifestDigest"]
    assert report.scanned_at == datetime.fromisoformat(doc["descriptor"]["timestamp"])
    assert report.scanner == f"grype {doc['descriptor']['version']}"


def test_cosign_vuln_predicate_from_trivy() -> None:
    doc = json.loads(COSIGN_FILE.read_text())
    result = doc["scanner"]["result"]
    vulns = walk_trivy(result)
    digest = result["Metadata"]["RepoDigests"][0].split("@", 1)[1]
    report = parse_cosign_vuln(COSIGN_FILE.read_bytes(), digest=digest)
    assert detect_format(COSIGN_FILE.read_bytes()) == "cosign-vuln"
    assert report.digest == digest
    assert report.source == "cosign-vuln"
    assert severity_counts(report) == Counter(SPELLING[v["Severity"]] for v in vulns)
    assert [f.fixed_version for f in report.findings] == [
        v.get("FixedVersion") or None for v in vulns
    ]
    finished = datetime.fromisoformat(doc["metadata"]["scanFinishedOn"])
    assert report.scanned_at == finished
    assert doc["scanner"]["version"] in report.scanner


def test_cosign_vuln_statement_wrapping_the_real_predicate() -> None:
    doc = json.loads(COSIGN_FILE.read_text())
    digest = doc["scanner"]["result"]["Metadata"]["RepoDigests"][0].split("@", 1)[1]
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://cosign.sigstore.dev/attestation/vuln/v1",
        "subject": [{"name": "index.docker.io/library/alpine", "digest": {"sha256": digest[7:]}}],
        "predicate": doc,
    }
    report = parse_cosign_vuln(json.dumps(statement).encode())
    bare = parse_cosign_vuln(COSIGN_FILE.read_bytes(), digest=digest)
    assert report == bare
