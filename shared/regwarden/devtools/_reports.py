"""Scan reports for the demo and tests, in the formats real tools write: a Trivy JSON
report (SchemaVersion 2) and the cosign vuln attestation predicate that wraps it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Vuln:
    id: str
    severity: str
    package: str
    installed: str
    fixed: str | None = None
    score: float | None = None


def trivy_report(artifact: str, vulns: Sequence[Vuln], *, created: datetime) -> dict[str, Any]:
    """A `trivy image --format json` report (only the fields consumers read)."""
    results: list[dict[str, Any]] = []
    if vulns:
        entries = []
        for v in vulns:
            entry: dict[str, Any] = {
                "VulnerabilityID": v.id,
                "PkgName": v.package,
                "InstalledVersion": v.installed,
                "Severity": v.severity.upper(),
                "Title": f"{v.package}: {v.id}",
                "Status": "fixed" if v.fixed else "affected",
            }
            if v.fixed:
                entry["FixedVersion"] = v.fixed
            if v.score is not None:
                entry["CVSS"] = {"nvd": {"V3Score": v.score}}
            entries.append(entry)
        results.append(
            {
                "Target": f"{artifact} (alpine 3.20)",
                "Class": "os-pkgs",
                "Type": "alpine",
                "Vulnerabilities": entries,
            }
        )
    return {
        "SchemaVersion": 2,
        "CreatedAt": created.isoformat().replace("+00:00", "Z"),
        "ArtifactName": artifact,
        "ArtifactType": "container_image",
        "Metadata": {"OS": {"Family": "alpine", "Name": "3.20.0"}},
        "Results": results,
    }


def vuln_predicate(
    report: dict[str, Any], *, started: datetime, finished: datetime
) -> dict[str, Any]:
    """The predicate `trivy image --format cosign-vuln` writes around a report."""
    return {
        "invocation": {"parameters": None, "uri": "", "event_id": "", "builder.id": ""},
        "scanner": {
            "uri": "pkg:github/aquasecurity/trivy@0.50.1",
            "version": "0.50.1",
            "db": {"uri": "", "version": ""},
            "result": report,
        },
        "metadata": {
            "scanStartedOn": started.isoformat().replace("+00:00", "Z"),
            "scanFinishedOn": finished.isoformat().replace("+00:00", "Z"),
        },
    }
