"""The checks never build a FAIL or PENDING on evidence that could not be gathered
(`Facts.unavailable`): they say ERROR with the cause, and the verdict is ERROR."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from regwarden.gate import Facts, GateRules, evaluate
from regwarden.gate._rules import ProvenanceRules, VulnerabilityRules
from regwarden.model import CheckOutcome, Finding, Outcome, ScanReport, Severity
from regwarden.reference import ImageRef

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "cd" * 32
IMAGE = ImageRef(registry="r.example.com", repository="app", digest=DIGEST)
RULES = GateRules(
    vulnerabilities=VulnerabilityRules(enabled=True, max_severity=Severity.HIGH),
    provenance=ProvenanceRules(required=True, builder_ids=("https://ci.example/b",)),
)


def facts(*unavailable: str, pushed: timedelta, scan: ScanReport | None = None) -> Facts:
    return Facts(image=IMAGE, tags=(), pushed_at=NOW - pushed, scan=scan, unavailable=unavailable)


def outcome_of(f: Facts, name: str) -> tuple[CheckOutcome, str]:
    (found,) = [c for c in evaluate(f, RULES, NOW).checks if c.name == name]
    return found.outcome, found.reason


@pytest.mark.parametrize("pushed", [timedelta(minutes=1), timedelta(hours=3)])
@pytest.mark.parametrize(
    "entry",
    [
        "ecr: ThrottlingException",
        "ecr+inspector: ThrottlingException",
        "harbor: got HTTP 503",
        "cosign-vuln: signature discovery failed: got HTTP 503",
        "evidence: got HTTP 503",
    ],
)
def test_an_unreadable_scan_source_is_an_error_before_and_after_the_timeout(
    entry: str, pushed: timedelta
) -> None:
    f = facts(entry, pushed=pushed)
    assert outcome_of(f, "vulnerabilities") == (
        CheckOutcome.ERROR,
        f"could not read the scan: {entry}",
    )
    assert evaluate(f, RULES, NOW).outcome is Outcome.ERROR


def test_without_missing_evidence_the_checks_wait_then_fail_as_before() -> None:
    assert outcome_of(facts(pushed=timedelta(minutes=1)), "vulnerabilities")[0] is (
        CheckOutcome.PENDING
    )
    late = facts(pushed=timedelta(hours=3))
    assert outcome_of(late, "vulnerabilities") == (
        CheckOutcome.FAIL,
        "no scan within 30m of the push (fail closed)",
    )
    assert outcome_of(late, "provenance")[0] is CheckOutcome.FAIL
    # provenance is not a scan: its loss does not touch the vulnerability check
    only = facts("provenance: got HTTP 503", pushed=timedelta(hours=3))
    assert outcome_of(only, "vulnerabilities")[0] is CheckOutcome.FAIL
    assert outcome_of(only, "provenance") == (
        CheckOutcome.ERROR,
        "could not read provenance attestations: provenance: got HTTP 503",
    )


def test_a_scan_that_was_read_is_judged_and_the_verdict_still_errors() -> None:
    finding = Finding(id="CVE-2099-0002", severity=Severity.CRITICAL, package="zlib")
    scan = ScanReport(digest=DIGEST, scanner="trivy", source="cosign-vuln", findings=(finding,))
    f = facts("ecr: ThrottlingException", pushed=timedelta(hours=3), scan=scan)
    outcome, reason = outcome_of(f, "vulnerabilities")
    assert outcome is CheckOutcome.FAIL and "CVE-2099-0002" in reason
    verdict = evaluate(f, RULES, NOW)
    assert verdict.outcome is Outcome.ERROR  # one source is missing: retried, never acted on
