"""Every check, and `evaluate` over a table of cases, with a fixed clock."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from regwarden.gate import (
    AllowEntry,
    Facts,
    GateRules,
    HygieneRules,
    ProvenanceFact,
    ProvenanceRules,
    SignatureRules,
    TagRules,
    VulnerabilityRules,
    allow_active,
    check_hygiene,
    check_provenance,
    check_signatures,
    check_tags,
    check_vulnerabilities,
    evaluate,
)
from regwarden.model import CheckOutcome, Finding, Outcome, ScanReport, Severity, SignatureResult
from regwarden.reference import ImageRef

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
D = "sha256:" + "1" * 64
OLD = "sha256:" + "2" * 64
SEMVER = re.compile(r"v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?")


def facts(**kw: object) -> Facts:
    base = Facts(
        image=ImageRef.parse(f"reg.io/payments/api:1.2.3@{D}"),
        tags=("1.2.3",),
        pushed_at=NOW - timedelta(minutes=1),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def sig(verified: bool, reason: str = "", fmt: str = "cosign-legacy") -> SignatureResult:
    return SignatureResult(
        format=fmt,
        digest="sha256:" + "9" * 64,
        verified=verified,  # type: ignore[arg-type]
        signer="key:ab12" if verified else None,
        reason=reason,
    )


def finding(
    id: str,
    sev: Severity,
    fixed: str | None = "1.0.1",
    cvss: float | None = None,
) -> Finding:
    return Finding(
        id=id,
        severity=sev,
        package="pkg",
        installed_version="1.0.0",
        fixed_version=fixed,
        cvss=cvss,
    )


def scan(*findings: Finding, at: datetime | None = NOW) -> ScanReport:
    return ScanReport(digest=D, scanner="trivy", source="test", scanned_at=at, findings=findings)


# -- signatures --------------------------------------------------------------------------

SIG = SignatureRules(required=True, grace_period=timedelta(minutes=5))


@pytest.mark.parametrize(
    ("kw", "rules", "outcome", "reason"),
    [
        ({}, SignatureRules(), CheckOutcome.SKIP, "not required"),
        ({"signatures": (sig(True),)}, SIG, CheckOutcome.PASS, "cosign-legacy by key:ab12"),
        ({"signatures": (sig(False, "wrong key"), sig(True))}, SIG, CheckOutcome.PASS, "verified"),
        ({}, SIG, CheckOutcome.PENDING, "grace period 5m"),
        ({"pushed_at": NOW - timedelta(minutes=5)}, SIG, CheckOutcome.FAIL, "not signed"),
        (
            {"pushed_at": NOW - timedelta(minutes=6), "signatures": (sig(False, "bad sig"),)},
            SIG,
            CheckOutcome.FAIL,
            "rejected 1: .*bad sig",
        ),
        ({"signature_error": "registry 503"}, SIG, CheckOutcome.ERROR, "registry 503"),
    ],
)
def test_check_signatures(
    kw: dict[str, object], rules: SignatureRules, outcome: CheckOutcome, reason: str
) -> None:
    result = check_signatures(facts(**kw), rules, NOW)
    assert result.outcome is outcome
    assert re.search(reason, result.reason), result.reason


# -- vulnerabilities --------------------------------------------------------------------------

VULN = VulnerabilityRules(
    enabled=True, max_severity=Severity.HIGH, scan_timeout=timedelta(minutes=30)
)


@pytest.mark.parametrize(
    ("kw", "rules", "outcome", "reason"),
    [
        ({}, VulnerabilityRules(), CheckOutcome.SKIP, "no vulnerability rules"),
        ({}, VULN, CheckOutcome.PENDING, "no scan yet"),
        (
            {"pushed_at": NOW - timedelta(minutes=31)},
            VULN,
            CheckOutcome.FAIL,
            "no scan within 30m .*fail closed",
        ),
        (
            {"pushed_at": NOW - timedelta(minutes=31)},
            replace(VULN, fail_open=True),
            CheckOutcome.WARN,
            "failOpen",
        ),
        ({"scan_error": "unsupported image"}, VULN, CheckOutcome.FAIL, "scan failed"),
        ({"scan": scan()}, VULN, CheckOutcome.PASS, "no findings"),
        ({"scan": scan(finding("CVE-1", Severity.HIGH))}, VULN, CheckOutcome.PASS, "1 high"),
        (
            {"scan": scan(finding("CVE-1", Severity.CRITICAL))},
            VULN,
            CheckOutcome.FAIL,
            r"1 finding\(s\) above high: CVE-1 \(critical, pkg 1.0.0, fixed in 1.0.1\)",
        ),
        (
            {"scan": scan(finding("CVE-1", Severity.CRITICAL, fixed=None))},
            replace(VULN, fixable_only=True),
            CheckOutcome.PASS,
            "within policy",
        ),
        (
            {"scan": scan(*[finding(f"CVE-{i}", Severity.MEDIUM) for i in range(3)])},
            replace(VULN, max_counts={Severity.MEDIUM: 2}),
            CheckOutcome.FAIL,
            r"3 medium finding\(s\), at most 2",
        ),
        (
            {"scan": scan(finding("CVE-1", Severity.MEDIUM, cvss=9.1))},
            replace(VULN, max_cvss=7.0),
            CheckOutcome.FAIL,
            "CVSS above 7.0",
        ),
        (
            {"scan": scan(at=NOW - timedelta(days=8))},
            replace(VULN, max_scan_age=timedelta(days=7)),
            CheckOutcome.FAIL,
            "8d old",
        ),
        (
            {"scan": scan(finding("CVE-1", Severity.CRITICAL))},
            replace(VULN, allow=(AllowEntry("CVE-1", date(2026, 11, 27), "no TLS"),)),
            CheckOutcome.PASS,
            "within policy",
        ),
        (
            {"scan": scan(finding("CVE-1", Severity.CRITICAL))},
            replace(VULN, allow=(AllowEntry("CVE-1", date(2026, 11, 26), "no TLS"),)),
            CheckOutcome.FAIL,
            "expired allowlist entries no longer count: CVE-1",
        ),
    ],
)
def test_check_vulnerabilities(
    kw: dict[str, object], rules: VulnerabilityRules, outcome: CheckOutcome, reason: str
) -> None:
    result = check_vulnerabilities(facts(**kw), rules, NOW)
    assert result.outcome is outcome
    assert re.search(reason, result.reason), result.reason


@pytest.mark.parametrize(
    ("now", "active"),
    [
        (datetime(2027, 1, 31, 0, 0, tzinfo=UTC), True),
        (datetime(2027, 1, 31, 23, 59, 59, 999999, tzinfo=UTC), True),
        (datetime(2027, 2, 1, 0, 0, tzinfo=UTC), False),
        (datetime(2027, 2, 1, 0, 59, tzinfo=UTC) - timedelta(hours=1), True),
    ],
)
def test_allowlist_until_is_inclusive_through_end_of_day_utc(now: datetime, active: bool) -> None:
    assert allow_active(AllowEntry("CVE-2024-6119", date(2027, 1, 31), "r"), now) is active


def test_top_findings_are_ordered_by_severity_then_cvss() -> None:
    result = check_vulnerabilities(
        facts(
            scan=scan(
                finding("CVE-B", Severity.CRITICAL, cvss=9.0),
                finding("CVE-A", Severity.CRITICAL, cvss=9.8),
                finding("CVE-C", Severity.LOW),
            )
        ),
        replace(VULN, max_severity=Severity.NEGLIGIBLE),
        NOW,
    )
    top = result.details["top"]
    assert isinstance(top, list)
    assert [t.split()[0] for t in top] == ["CVE-A", "CVE-B", "CVE-C"]


# -- tags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "rules", "outcome", "reason"),
    [
        ({}, TagRules(), CheckOutcome.SKIP, "no tag rules"),
        ({}, TagRules(pattern=SEMVER, pattern_name="semver"), CheckOutcome.PASS, "1.2.3"),
        (
            {"tags": ("latest",), "image": ImageRef.parse(f"reg.io/a:latest@{D}")},
            TagRules(forbidden=frozenset({"latest"})),
            CheckOutcome.FAIL,
            "forbidden tag",
        ),
        (
            {"tags": ("nightly",), "image": ImageRef.parse(f"reg.io/a:nightly@{D}")},
            TagRules(pattern=SEMVER, pattern_name="semver"),
            CheckOutcome.FAIL,
            "nightly do not match semver",
        ),
        (
            {"moved_tags": {"1.2.3": OLD}},
            TagRules(immutable=True),
            CheckOutcome.FAIL,
            "immutable tag.*1.2.3 \\(was 222222222222\\)",
        ),
        (
            {"moved_tags": {"1.2.3": OLD}},
            TagRules(immutable=False, pattern=SEMVER),
            CheckOutcome.PASS,
            "tags ok",
        ),
        (
            {"tags": (), "image": ImageRef.parse(f"reg.io/a@{D}")},
            TagRules(pattern=SEMVER),
            CheckOutcome.PASS,
            "untagged",
        ),
    ],
)
def test_check_tags(
    kw: dict[str, object], rules: TagRules, outcome: CheckOutcome, reason: str
) -> None:
    result = check_tags(facts(**kw), rules)
    assert result.outcome is outcome
    assert re.search(reason, result.reason), result.reason


# -- hygiene and provenance -------------------------------------------------------------------

LABELS = {
    "org.opencontainers.image.source": "https://git.example/api",
    "org.opencontainers.image.revision": "abc",
    "org.opencontainers.image.base.name": "cgr.dev/chainguard/static:latest",
}
HYG = HygieneRules(
    max_size=100,
    max_layers=3,
    allowed_base_images=(re.compile(r"cgr\.dev/chainguard/.*"),),
    required_labels=("org.opencontainers.image.source", "org.opencontainers.image.revision"),
)


@pytest.mark.parametrize(
    ("kw", "outcome", "reason"),
    [
        ({"size": 50, "layer_count": 2, "labels": LABELS}, CheckOutcome.PASS, "within policy"),
        ({"size": 101, "layer_count": 2, "labels": LABELS}, CheckOutcome.FAIL, "exceeds 100"),
        ({"size": 50, "layer_count": 4, "labels": LABELS}, CheckOutcome.FAIL, "4 layers"),
        (
            {"labels": {**LABELS, "org.opencontainers.image.base.name": "docker.io/ubuntu"}},
            CheckOutcome.FAIL,
            "base image docker.io/ubuntu is not allowed",
        ),
        (
            {"labels": {"org.opencontainers.image.base.name": "cgr.dev/chainguard/x"}},
            CheckOutcome.FAIL,
            "missing required label.*source.*revision",
        ),
    ],
)
def test_check_hygiene(kw: dict[str, object], outcome: CheckOutcome, reason: str) -> None:
    result = check_hygiene(facts(**kw), HYG)
    assert result.outcome is outcome
    assert re.search(reason, result.reason), result.reason


PROV = ProvenanceRules(required=True, builder_ids=("https://github.com/actions/runner",))


@pytest.mark.parametrize(
    ("prov", "pushed_ago", "outcome", "reason"),
    [
        (
            (ProvenanceFact(True, "https://github.com/actions/runner"),),
            1,
            CheckOutcome.PASS,
            "built by",
        ),
        (
            (ProvenanceFact(True, "https://evil.example/builder"),),
            1,
            CheckOutcome.FAIL,
            "not one of",
        ),
        ((), 1, CheckOutcome.PENDING, "no signed provenance"),
        ((ProvenanceFact(False, None, "bad signature"),), 10, CheckOutcome.FAIL, "bad signature"),
    ],
)
def test_check_provenance(
    prov: tuple[ProvenanceFact, ...], pushed_ago: int, outcome: CheckOutcome, reason: str
) -> None:
    result = check_provenance(
        facts(provenance=prov, pushed_at=NOW - timedelta(minutes=pushed_ago)),
        PROV,
        timedelta(minutes=5),
        NOW,
    )
    assert result.outcome is outcome
    assert re.search(reason, result.reason), result.reason


# -- evaluate -------------------------------------------------------------------------------

STRICT = GateRules(
    signatures=SIG,
    vulnerabilities=VULN,
    tags=TagRules(pattern=SEMVER, forbidden=frozenset({"latest"}), immutable=True),
    team="payments",
)
CLEAN = {"signatures": (sig(True),), "scan": scan(finding("CVE-1", Severity.LOW))}


def test_the_ledger_keeps_an_audit_failure_as_failed_and_a_fail_open_warn_as_warn() -> None:
    critical = {**CLEAN, "scan": scan(finding("CVE-9", Severity.CRITICAL))}
    audit = evaluate(facts(**critical), replace(STRICT, mode="audit"), NOW)
    assert (audit.outcome, audit.policy_outcome) == (Outcome.WARN, Outcome.FAILED)
    fail_open = evaluate(
        facts(pushed_at=NOW - timedelta(hours=1)),
        replace(
            STRICT,
            mode="audit",
            vulnerabilities=replace(VULN, fail_open=True),
            signatures=SignatureRules(),
        ),
        NOW,
    )
    assert (fail_open.outcome, fail_open.policy_outcome) == (Outcome.WARN, Outcome.WARN)
    enforced = evaluate(facts(**critical), STRICT, NOW)
    assert enforced.policy_outcome is enforced.outcome is Outcome.FAILED


@pytest.mark.parametrize(
    ("kw", "rules", "outcome"),
    [
        (CLEAN, STRICT, Outcome.PASSED),
        ({**CLEAN, "scan": scan(finding("CVE-9", Severity.CRITICAL))}, STRICT, Outcome.FAILED),
        (
            {**CLEAN, "scan": scan(finding("CVE-9", Severity.CRITICAL))},
            replace(STRICT, mode="audit"),
            Outcome.WARN,
        ),
        ({"scan": CLEAN["scan"]}, STRICT, Outcome.PENDING),  # signature still in grace
        ({"signatures": CLEAN["signatures"]}, STRICT, Outcome.PENDING),  # no scan yet
        ({"scan": scan(finding("CVE-9", Severity.CRITICAL))}, STRICT, Outcome.FAILED),
        ({**CLEAN, "signature_error": "timeout"}, STRICT, Outcome.ERROR),
        ({**CLEAN, "moved_tags": {"1.2.3": OLD}}, STRICT, Outcome.FAILED),
        (
            {"pushed_at": NOW - timedelta(hours=1)},
            replace(
                STRICT, vulnerabilities=replace(VULN, fail_open=True), signatures=SignatureRules()
            ),
            Outcome.WARN,
        ),
        ({}, GateRules(), Outcome.PASSED),
    ],
)
def test_evaluate_table(kw: dict[str, object], rules: GateRules, outcome: Outcome) -> None:
    verdict = evaluate(facts(**kw), rules, NOW)
    assert verdict.outcome is outcome, [c.reason for c in verdict.checks]
    assert verdict.evaluated_at == NOW
    assert verdict.team == rules.team
    assert [c.name for c in verdict.checks] == [
        "signatures",
        "vulnerabilities",
        "tags",
        "hygiene",
        "provenance",
    ]


def test_signatures_require_all_and_threshold() -> None:
    two = (
        sig(True),
        SignatureResult(
            format="cosign-bundle", digest="sha256:" + "8" * 64, verified=True, signer="key:cd34"
        ),
    )
    all_rules = SignatureRules(required=True, require="all")
    r = check_signatures(
        facts(
            signatures=two[:1], signatures_unmet=("key cd34",), pushed_at=NOW - timedelta(hours=1)
        ),
        all_rules,
        NOW,
    )
    assert r.outcome is CheckOutcome.FAIL and "no valid signature from key cd34" in r.reason
    r = check_signatures(
        facts(signatures=two[:1], signatures_unmet=("key cd34",)),
        replace(all_rules, grace_period=timedelta(minutes=5)),
        NOW,
    )
    assert r.outcome is CheckOutcome.PENDING
    r = check_signatures(
        facts(
            signatures=two[:1], signatures_unmet=("key cd34",), pushed_at=NOW - timedelta(hours=1)
        ),
        SignatureRules(required=True, require="any"),
        NOW,
    )
    assert r.outcome is CheckOutcome.PASS
    thr = SignatureRules(required=True, threshold=2)
    assert check_signatures(facts(signatures=two), thr, NOW).outcome is CheckOutcome.PASS
    r = check_signatures(
        facts(signatures=two[:1] * 2, pushed_at=NOW - timedelta(hours=1)), thr, NOW
    )
    assert r.outcome is CheckOutcome.FAIL and "1 distinct signer(s), 2 required" in r.reason
