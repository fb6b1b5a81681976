"""A verdict's findings by severity (`gate.verdict_findings`), which the pipeline commits
with the verdict for the report, and the SQLite ledger written before verdicts kept them."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from regwarden.gate import Facts, GateRules, VulnerabilityRules, evaluate, verdict_findings
from regwarden.model import Finding, ScanReport, Severity
from regwarden.reference import ImageRef
from regwarden.store import Outcome, SqliteLedger, VerdictRecord

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
D = "sha256:" + "1" * 64
RULES = GateRules(vulnerabilities=VulnerabilityRules(enabled=True, max_severity=Severity.HIGH))


def facts(*scans: ScanReport) -> Facts:
    return Facts(
        image=ImageRef.parse(f"reg.io/payments/api:1.2.3@{D}"),
        tags=("1.2.3",),
        pushed_at=NOW - timedelta(minutes=1),
        scans=scans,
    )


def report(scanner: str, *severities: Severity) -> ScanReport:
    found = tuple(
        Finding(id=f"CVE-2026-{i:04d}", severity=s, package="p", installed_version="1")
        for i, s in enumerate(severities)
    )
    return ScanReport(digest=D, scanner=scanner, source="cosign-vuln", findings=found)


def test_one_report_counts_its_findings_worst_first() -> None:
    scan = report("trivy", Severity.LOW, Severity.CRITICAL, Severity.LOW, Severity.HIGH)
    verdict = evaluate(facts(scan), RULES, NOW)
    assert verdict.outcome.value == "FAILED"  # the critical one
    assert verdict_findings(verdict) == (("critical", 1), ("high", 1), ("low", 2))


def test_a_clean_scan_is_no_findings_and_no_scan_is_none() -> None:
    assert verdict_findings(evaluate(facts(report("trivy")), RULES, NOW)) == ()
    pending = evaluate(facts(), RULES, NOW)  # no scan yet: judged without one
    assert pending.outcome.value == "PENDING"
    assert verdict_findings(pending) is None
    no_rules = evaluate(facts(report("trivy", Severity.HIGH)), GateRules(), NOW)
    assert verdict_findings(no_rules) is None  # the check was skipped: nothing read


def test_two_sources_count_a_severity_by_the_one_that_found_more() -> None:
    trivy = report("trivy", Severity.HIGH, Severity.HIGH, Severity.MEDIUM)
    grype = report("grype", Severity.HIGH, Severity.MEDIUM, Severity.MEDIUM, Severity.LOW)
    verdict = evaluate(facts(trivy, grype), RULES, NOW)
    assert verdict_findings(verdict) == (("high", 2), ("medium", 2), ("low", 1))


def test_an_older_sqlite_ledger_gains_the_findings_column(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as db:  # the verdicts table as regwarden wrote it before
        db.execute(
            "CREATE TABLE verdicts (registry TEXT NOT NULL, repository TEXT NOT NULL, "
            "digest TEXT NOT NULL, outcome TEXT NOT NULL, at TEXT NOT NULL, "
            "PRIMARY KEY (registry, repository, digest))"
        )
        db.execute("INSERT INTO verdicts VALUES ('r', 'app', ?, 'PASSED', ?)", (D, NOW.isoformat()))
    db.close()
    ledger = SqliteLedger(path)
    try:
        assert ledger.last_verdict("r", "app", D) == "PASSED"
        assert ledger.repository_verdicts("r", "app") == {D: VerdictRecord("PASSED", NOW)}
        later = NOW + timedelta(minutes=1)
        found = (("high", 3),)
        ledger.commit_outcome(
            replace(Outcome("d1", "r", "app", D, "FAILED"), findings=found),
            now=later,
            ttl=timedelta(days=1),
        )
        assert ledger.repository_verdicts("r", "app") == {D: VerdictRecord("FAILED", later, found)}
    finally:
        ledger.close()
    SqliteLedger(path).close()  # opened again: migrated once, nothing to do
