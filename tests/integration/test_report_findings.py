"""Findings by severity in `regwarden report`, end to end on the real local registry:
images pushed with Trivy and Grype reports attached as OCI referrers, judged by the real
pipeline (the verdict's findings committed with it in the ledger), then the report (a
child process, as a user runs it) counts them per team and repository, in its JSON and
its HTML."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli

from regwarden.devtools import LocalRegistry, Vuln, make_image, push_image, trivy_report
from regwarden.model import EventKind, ImageEvent, Outcome
from regwarden.oci import RegistryClient
from regwarden.reference import ImageRef
from regwarden.runtime import load_runtime
from regwarden.scanning.referrer_reports import KINDS, attach_report

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HIGH = Vuln("CVE-2099-8001", "HIGH", "openssl", "3.0.1", "3.0.15", 8.1)
MEDIUM = Vuln("CVE-2099-8002", "MEDIUM", "curl", "8.0", "8.1")
LOW = Vuln("CVE-2099-8003", "LOW", "zlib", "1.3", None)
CRITICAL = Vuln("CVE-2099-8004", "CRITICAL", "glibc", "2.36", "2.37", 9.8)


def _trivy(host: str, repo: str, digest: str, vulns: list[Vuln]) -> bytes:
    doc = trivy_report(f"{host}/{repo}:1.0.0", vulns, created=T0 - timedelta(minutes=5))
    doc["Metadata"]["RepoDigests"] = [f"{host}/{repo}@{digest}"]
    return json.dumps(doc).encode()


def _grype(digest: str, vulns: list[Vuln]) -> bytes:
    matches = [
        {
            "vulnerability": {"id": v.id, "severity": v.severity.title(), "fix": {"state": ""}},
            "artifact": {"name": v.package, "version": v.installed},
        }
        for v in vulns
    ]
    return json.dumps(
        {
            "matches": matches,
            "source": {"type": "image", "target": {"manifestDigest": digest}},
            "descriptor": {"name": "grype", "version": "0.94", "timestamp": "2026-12-01T11:55:00Z"},
        }
    ).encode()


def _push(client: RegistryClient, repo: str, seed: int, **reports: bytes) -> str:
    digest = push_image(client, repo, make_image(seed=seed), tag="1.0.0")
    subject = client.head_manifest(repo, digest)
    assert subject is not None
    for kind, data in reports.items():
        attach_report(client, repo, KINDS[kind], subject, data, created=T0 - timedelta(minutes=4))
    return digest


def test_the_report_counts_the_last_verdicts_findings_per_team_and_repository(
    registry: LocalRegistry, client: RegistryClient, repo: str, tmp_path: Path
) -> None:
    host = registry.host
    pay, web = f"{repo}/pay", f"{repo}/web"
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n"
        f"  - match: '{pay}'\n    team: payments\n"
        "    vulnerabilities: {maxSeverity: high, scanTimeout: 10m, "
        "sources: [trivy-referrer, grype-referrer], referrers: {requireSigned: false}}\n"
        f"  - match: '{web}'\n    team: web\n"
        "    vulnerabilities: {maxSeverity: critical, scanTimeout: 10m, "
        "sources: [trivy-referrer], referrers: {requireSigned: false}}\n"
    )
    # pay: Trivy finds 1 high, 2 medium; Grype 1 high, 1 medium, 1 low → per severity the
    # most one scanner found: 1 high, 2 medium, 1 low (PASSED: nothing above high)
    second_medium = Vuln("CVE-2099-8005", "MEDIUM", "expat", "2.5", "2.6")
    a = _push(client, pay, 1501)
    subject = client.head_manifest(pay, a)
    assert subject is not None
    attach_report(
        client, pay, KINDS["trivy"], subject, _trivy(host, pay, a, [HIGH, MEDIUM, second_medium]),
        created=T0 - timedelta(minutes=4),
    )  # fmt: skip
    attach_report(
        client, pay, KINDS["grype"], subject, _grype(a, [HIGH, MEDIUM, LOW]),
        created=T0 - timedelta(minutes=4),
    )  # fmt: skip
    b = _push(client, web, 1502, trivy=_trivy(host, web, "", [CRITICAL, LOW]))
    clean = _push(client, web, 1503, trivy=_trivy(host, web, "", []))
    waiting = _push(client, web, 1504)  # no report yet: PENDING, no findings

    rt = load_runtime(tmp_path / "regwarden.yaml", ledger=tmp_path / "ledger.db")
    try:
        pipeline = rt.pipeline()
        outcomes = {}
        for r, digest in ((pay, a), (web, b), (web, clean), (web, waiting)):
            event = ImageEvent(
                kind=EventKind.PUSHED, source="distribution",
                image=ImageRef(registry=host, repository=r, tag="1.0.0", digest=digest),
                time=T0, delivery_id=f"push-{digest}", user_agent="ci/1.0",
            )  # fmt: skip
            handled = pipeline.handle(event, now=T0)
            assert handled.verdict is not None, handled.ignored
            outcomes[digest] = handled.verdict.outcome
    finally:
        rt.close()
    assert outcomes == {
        a: Outcome.PASSED, b: Outcome.PASSED, clean: Outcome.PASSED, waiting: Outcome.PENDING
    }  # fmt: skip

    def report(*args: str) -> Any:
        proc = run_cli(
            "--ledger", str(tmp_path / "ledger.db"), "report", "--registry", host,
            "--repository", f"{repo}/*", "--policy", str(tmp_path / "regwarden.yaml"), *args,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc

    doc = json.loads(report("-o", "json").stdout)
    sec = doc["security"]
    assert sec["findings_images"] == 3  # the waiting image was judged without a report
    assert sec["findings_by_severity"] == {
        "critical": 1, "high": 1, "medium": 2, "low": 2, "negligible": 0, "unknown": 0,
    }  # fmt: skip
    teams = {t["name"]: (t["images"], t["counts"]) for t in sec["findings_by_team"]}
    assert teams["payments"] == (
        1, {"critical": 0, "high": 1, "medium": 2, "low": 1, "negligible": 0, "unknown": 0}
    )  # fmt: skip
    assert teams["web"][0] == 2 and teams["web"][1]["critical"] == 1
    assert [r["name"] for r in sec["findings_by_repository"]] == [web, pay]  # worst first
    assert doc["security"]["verdicts"] == {"PASSED": 3, "PENDING": 1}

    out = tmp_path / "report.html"
    report("--out", str(out))
    page = out.read_text()
    assert "Findings by team" in page and "Findings by repository" in page
    assert "from the last verdicts of the 3 images judged with a scan report: 6 in all" in page
