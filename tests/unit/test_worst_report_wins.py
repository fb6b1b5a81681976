"""Several scan sources: every available report is judged on its own against the policy and
the worst outcome wins. Pure: facts in, verdict out, `now` passed. The last part runs the
real `gather_evidence` with stand-in sources registered for the test, to show every
source's report reaches the facts (none is dropped for being older).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from regwarden.gate import (
    AllowEntry,
    Facts,
    GateRules,
    VulnerabilityRules,
    check_vulnerabilities,
    evaluate,
    gate_rules,
    gather_evidence,
)
from regwarden.model import CheckOutcome, CheckResult, Finding, Outcome, ScanReport, Severity
from regwarden.policy import load_policy_text
from regwarden.reference import ImageRef
from regwarden.scanning import SCAN_SOURCES, ScanContext, ScanReader

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "5e" * 32
IMAGE = ImageRef(registry="reg.example.com", repository="team/app", digest=DIGEST, tag="1.0.0")
RULES = VulnerabilityRules(
    enabled=True, max_severity=Severity.HIGH, scan_timeout=timedelta(minutes=30)
)


def cve(id: str, severity: Severity, fixed: str | None = "1.2.4") -> Finding:
    return Finding(
        id=id, severity=severity, package="openssl", installed_version="1.2.3", fixed_version=fixed
    )


def report(
    source: str, *findings: Finding, at: datetime = NOW, scanner: str | None = None
) -> ScanReport:
    return ScanReport(
        digest=DIGEST,
        scanner=scanner or source.split("-", 1)[0],
        source=source,
        scanned_at=at,
        findings=findings,
    )


CRITICAL_TRIVY = report("trivy-referrer", cve("CVE-2024-6119", Severity.CRITICAL))
CLEAN_GRYPE = report("grype-referrer", at=NOW + timedelta(minutes=5))  # the newer one


def facts(*scans: ScanReport, **kw: Any) -> Facts:
    pushed = kw.pop("pushed_at", NOW - timedelta(minutes=10))
    return Facts(image=IMAGE, tags=("1.0.0",), pushed_at=pushed, scans=scans, **kw)


def check(f: Facts, rules: VulnerabilityRules = RULES) -> CheckResult:
    return check_vulnerabilities(f, rules, NOW)


def sources(result: CheckResult) -> list[dict[str, object]]:
    entries = result.details["sources"]
    assert isinstance(entries, list)
    return entries


# -- the worst outcome wins ---------------------------------------------------------------------


@pytest.mark.parametrize("order", ["trivy first", "grype first"])
def test_a_clean_grype_report_does_not_hide_a_critical_trivy_finding(order: str) -> None:
    scans = (CRITICAL_TRIVY, CLEAN_GRYPE)
    if order == "grype first":
        scans = scans[::-1]

    verdict = evaluate(facts(*scans), GateRules(vulnerabilities=RULES), NOW)

    (vuln,) = [c for c in verdict.checks if c.name == "vulnerabilities"]
    assert verdict.outcome is Outcome.FAILED and vuln.outcome is CheckOutcome.FAIL
    # The failing source first, named with what it found; the clean one said clean.
    assert vuln.reason == (
        "trivy-referrer: 1 finding(s) above high: "
        "CVE-2024-6119 (critical, openssl 1.2.3, fixed in 1.2.4); "
        "grype-referrer: within policy (no findings)"
    )
    assert vuln.details["top"] == [
        "trivy-referrer: CVE-2024-6119 (critical, openssl 1.2.3, fixed in 1.2.4)"
    ]
    by_source = {e["source"]: e for e in sources(vuln)}
    assert by_source["trivy-referrer"] == {
        "source": "trivy-referrer",
        "scanner": "trivy",
        "scanned_at": NOW.isoformat(),
        "counts": {"critical": 1},
        "outcome": "fail",
        "reason": "1 finding(s) above high: "
        "CVE-2024-6119 (critical, openssl 1.2.3, fixed in 1.2.4)",
    }
    assert by_source["grype-referrer"]["outcome"] == "pass"
    assert by_source["grype-referrer"]["counts"] == {}


def test_two_clean_reports_pass_and_both_are_listed() -> None:
    low = report("clair", cve("CVE-2023-1", Severity.LOW))

    result = check(facts(CLEAN_GRYPE, low))

    assert result.outcome is CheckOutcome.PASS
    assert result.reason == (
        "grype-referrer: within policy (no findings); clair: within policy (1 low)"
    )
    assert [(e["source"], e["outcome"]) for e in sources(result)] == [
        ("grype-referrer", "pass"),
        ("clair", "pass"),
    ]
    assert result.details["findings"] == 1


def test_the_allowlist_applies_to_every_source() -> None:
    accepted = AllowEntry("CVE-2024-6119", date(2027, 1, 31), "not reachable")
    rules = VulnerabilityRules(
        enabled=True, max_severity=Severity.HIGH, allow=(accepted,), scan_timeout=timedelta(hours=1)
    )
    grype_sees_it_too = report("grype-referrer", cve("CVE-2024-6119", Severity.CRITICAL))

    assert check(facts(CRITICAL_TRIVY, grype_sees_it_too), rules).outcome is CheckOutcome.PASS


def test_an_allowlisted_cve_in_one_source_does_not_excuse_another_cve_in_the_other() -> None:
    accepted = AllowEntry("CVE-2024-6119", date(2027, 1, 31), "not reachable")
    rules = VulnerabilityRules(enabled=True, max_severity=Severity.HIGH, allow=(accepted,))
    other = report("grype-referrer", cve("CVE-2024-9999", Severity.CRITICAL))

    result = check(facts(CRITICAL_TRIVY, other), rules)

    assert result.outcome is CheckOutcome.FAIL
    assert result.reason.startswith("grype-referrer: 1 finding(s) above high: CVE-2024-9999")
    assert "trivy-referrer: within policy (1 critical)" in result.reason
    assert result.details["allowed"] == ["CVE-2024-6119"]


def test_an_expired_allowlist_entry_is_named_once_for_all_sources() -> None:
    lapsed = AllowEntry("CVE-2024-6119", date(2026, 12, 1), "was not reachable")
    rules = VulnerabilityRules(enabled=True, max_severity=Severity.HIGH, allow=(lapsed,))
    grype_sees_it_too = report("grype-referrer", cve("CVE-2024-6119", Severity.CRITICAL))

    result = check(facts(CRITICAL_TRIVY, grype_sees_it_too), rules)

    assert result.outcome is CheckOutcome.FAIL
    assert result.reason.count("expired allowlist entries no longer count: CVE-2024-6119") == 1
    # The same CVE from two sources: reported once per source, nothing merged away.
    assert result.details["top"] == [
        "grype-referrer: CVE-2024-6119 (critical, openssl 1.2.3, fixed in 1.2.4)",
        "trivy-referrer: CVE-2024-6119 (critical, openssl 1.2.3, fixed in 1.2.4)",
    ]


def test_fixable_only_is_applied_to_each_report() -> None:
    rules = VulnerabilityRules(enabled=True, max_severity=Severity.HIGH, fixable_only=True)
    unfixed = report("trivy-referrer", cve("CVE-2024-1", Severity.CRITICAL, fixed=None))
    fixed = report("grype-referrer", cve("CVE-2024-1", Severity.CRITICAL))

    assert check(facts(unfixed), rules).outcome is CheckOutcome.PASS
    result = check(facts(unfixed, fixed), rules)
    assert result.outcome is CheckOutcome.FAIL
    assert result.reason.startswith("grype-referrer: 1 finding(s) above high: CVE-2024-1")


def test_each_report_is_counted_on_its_own_against_max_counts() -> None:
    """`maxCounts` limits what one scanner found: two scanners that each find two
    different mediums are each within `medium: 2`; a third medium in one is not."""
    rules = VulnerabilityRules(enabled=True, max_counts={Severity.MEDIUM: 2})
    a = report("trivy-referrer", cve("CVE-1", Severity.MEDIUM), cve("CVE-2", Severity.MEDIUM))
    b = report("grype-referrer", cve("CVE-3", Severity.MEDIUM), cve("CVE-4", Severity.MEDIUM))
    c = report("clair", *(cve(f"CVE-{i}", Severity.MEDIUM) for i in range(5, 8)))

    assert check(facts(a, b), rules).outcome is CheckOutcome.PASS
    result = check(facts(a, b, c), rules)
    assert result.outcome is CheckOutcome.FAIL
    assert result.reason.startswith("clair: 3 medium finding(s), at most 2 allowed")


# -- age, waiting and failed scans --------------------------------------------------------------


def test_a_stale_report_fails_even_beside_a_fresh_clean_one() -> None:
    rules = VulnerabilityRules(
        enabled=True, max_severity=Severity.HIGH, max_scan_age=timedelta(days=7)
    )
    stale = report("clair", at=NOW - timedelta(days=8))

    result = check(facts(stale, CLEAN_GRYPE), rules)

    assert result.outcome is CheckOutcome.FAIL
    assert result.reason == (
        "clair: scan is 8d old; policy allows 7d; grype-referrer: within policy (no findings)"
    )
    assert check(facts(CLEAN_GRYPE), rules).outcome is CheckOutcome.PASS


def test_a_source_with_no_report_yet_does_not_hold_the_report_another_source_has() -> None:
    """Documented: `sources` lists what may judge, not what must all report."""
    waiting = "clair: not indexed yet"

    clean = check(facts(CLEAN_GRYPE, scan_waiting=waiting))
    failing = check(facts(CRITICAL_TRIVY, scan_waiting=waiting))

    assert clean.outcome is CheckOutcome.PASS and failing.outcome is CheckOutcome.FAIL
    assert check(facts(scan_waiting=waiting)).outcome is CheckOutcome.PENDING
    assert "not indexed yet" in check(facts(scan_waiting=waiting)).reason
    # Past the scan timeout the missing one still does not fail what was judged.
    late = facts(CLEAN_GRYPE, scan_waiting=waiting, pushed_at=NOW - timedelta(hours=2))
    assert check(late).outcome is CheckOutcome.PASS


def test_a_waiting_source_is_named_in_the_details_when_several_report() -> None:
    result = check(facts(CRITICAL_TRIVY, CLEAN_GRYPE, scan_waiting="clair: not indexed yet"))

    assert result.details["waiting"] == "clair: not indexed yet"


@pytest.mark.parametrize(
    ("fail_open", "outcome"), [(False, CheckOutcome.FAIL), (True, CheckOutcome.WARN)]
)
def test_a_failed_scan_counts_beside_a_clean_report(fail_open: bool, outcome: CheckOutcome) -> None:
    rules = VulnerabilityRules(enabled=True, max_severity=Severity.HIGH, fail_open=fail_open)

    result = check(facts(CLEAN_GRYPE, scan_error="scan FAILED: unsupported image"), rules)

    assert result.outcome is outcome
    assert result.reason.startswith("scan failed: scan FAILED: unsupported image")
    assert result.reason.endswith("grype-referrer: within policy (no findings)")


def test_a_finding_still_fails_beside_a_failed_scan_under_fail_open() -> None:
    rules = VulnerabilityRules(enabled=True, max_severity=Severity.HIGH, fail_open=True)

    result = check(facts(CRITICAL_TRIVY, scan_error="unsupported image"), rules)

    assert result.outcome is CheckOutcome.FAIL


def test_an_unreadable_source_beside_a_report_is_an_error_verdict() -> None:
    f = facts(CLEAN_GRYPE, unavailable=("clair: 503 Service Unavailable",))

    verdict = evaluate(f, GateRules(vulnerabilities=RULES), NOW)

    assert verdict.outcome is Outcome.ERROR  # retried: the missing report may be the worst


# -- one report: as it always was ---------------------------------------------------------------


def test_one_report_keeps_its_reason_and_gains_a_sources_entry() -> None:
    result = check(facts(CRITICAL_TRIVY))

    assert result.reason == (
        "1 finding(s) above high: CVE-2024-6119 (critical, openssl 1.2.3, fixed in 1.2.4)"
    )
    assert [e["source"] for e in sources(result)] == ["trivy-referrer"]


def test_cosign_attestations_of_two_scanners_are_told_apart() -> None:
    trivy = report("cosign-vuln", cve("CVE-2024-6119", Severity.CRITICAL), scanner="trivy 0.50")
    grype = report("cosign-vuln", scanner="grype 0.74")

    result = check(facts(trivy, grype))

    assert result.reason.startswith("cosign-vuln (trivy 0.50): 1 finding(s) above high")
    assert "cosign-vuln (grype 0.74): within policy" in result.reason


# -- Facts: `scans`, and `scan` for callers that show one report ---------------------------------


def test_scan_alone_is_the_one_report_shorthand() -> None:
    f = Facts(image=IMAGE, tags=(), pushed_at=NOW, scan=CRITICAL_TRIVY)

    assert f.scans == (CRITICAL_TRIVY,) and f.scan == CRITICAL_TRIVY


def test_scan_is_the_newest_of_scans_and_every_one_is_judged() -> None:
    f = facts(CRITICAL_TRIVY, CLEAN_GRYPE)

    assert f.scan == CLEAN_GRYPE  # newer, and clean: yet the check fails on the older one
    assert check(f).outcome is CheckOutcome.FAIL


# -- gather_evidence keeps every source's report -----------------------------------------------


@dataclass
class StandInRegistry:
    """`gather_evidence` without signature rules reads only the host."""

    host: str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    kind: str = "ecr"

    def data_plane(self) -> Any:
        raise AssertionError("no signature lookup is configured")


@pytest.fixture
def two_sources() -> Iterator[None]:
    """`ecr` answers the critical report, `inspector` a newer clean one; the built-in
    factories are put back after."""
    saved = {name: SCAN_SOURCES.get(name) for name in SCAN_SOURCES.names()}

    def answering(answer: ScanReport) -> Any:
        def factory(context: ScanContext) -> ScanReader:
            return lambda registry, image: answer

        return factory

    for name, answer in (("ecr", CRITICAL_TRIVY), ("inspector", CLEAN_GRYPE)):
        SCAN_SOURCES.unregister(name)
        SCAN_SOURCES.add(name, answering(answer))
    yield
    for name in SCAN_SOURCES.names():
        SCAN_SOURCES.unregister(name)
    for name, factory in saved.items():
        SCAN_SOURCES.add(name, factory)


@pytest.mark.usefixtures("two_sources")
def test_every_sources_report_reaches_the_facts_and_the_worst_wins() -> None:
    text = (
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "defaults:\n  vulnerabilities: {maxSeverity: high, sources: [ecr, inspector]}\n"
    )
    policy = load_policy_text(text, source="t.yaml", base_dir=".")
    image = ImageRef(registry=StandInRegistry.host, repository="app", digest=DIGEST)
    rules = gate_rules(policy.for_repository("app"))

    found = gather_evidence(policy, StandInRegistry(), image, rules, env={}, now=NOW)  # type: ignore[arg-type]

    assert found.scans == (CRITICAL_TRIVY, CLEAN_GRYPE)
    assert found.scan == CLEAN_GRYPE  # the newest, for callers that show one
    f = Facts(image=image, tags=(), pushed_at=NOW - timedelta(minutes=1), scans=found.scans)
    assert evaluate(f, rules, NOW).outcome is Outcome.FAILED
