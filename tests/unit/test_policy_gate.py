"""The push-gate keys of the policy (vulnerability limits, hygiene, provenance, promotion)
and `gate_rules`: every key valid and invalid with its path and line, and the rules the
gate receives, checked through the real checks."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from regwarden.gate import (
    AllowEntry,
    Facts,
    GateRules,
    HygieneRules,
    Promotion,
    ProvenanceFact,
    ProvenanceRules,
    SignatureRules,
    TagRules,
    VulnerabilityRules,
    check_hygiene,
    check_tags,
    evaluate,
)
from regwarden.gate._from_policy import SEMVER_TAG, gate_rules
from regwarden.model import CheckOutcome, Finding, Outcome, ScanReport, Severity
from regwarden.policy import (
    SECTIONS,
    EffectiveRepositoryPolicy,
    ImageGlob,
    Policy,
    Problem,
    Vulnerabilities,
    is_semver_tag,
    load_policy_text,
    parse_size,
    policy_json_schema,
    validate_text,
)
from regwarden.reference import ImageRef

HEAD = "apiVersion: regwarden/v1\nkind: Policy\n"
REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "1" * 64


def load(text: str) -> Policy:
    return load_policy_text(text, source="test.yaml", base_dir="/policies")


def effective(text: str, repository: str = "payments/api") -> EffectiveRepositoryPolicy:
    return load(text).for_repository(repository)


def only(text: str) -> Problem:
    found = validate_text(text)
    assert len(found) == 1, found
    return found[0]


FULL = (
    HEAD
    + """\
defaults:
  team: platform
  mode: audit
  quarantine: {strategy: retag}
repositories:
  - match: "payments/**"
    team: payments
    mode: enforce
    quarantine: {repository: "held/{repository}"}
    signatures:
      cosign: {keys: ["file://keys/release.pub"]}
      require: all
      threshold: 1
      gracePeriod: 10m
    vulnerabilities:
      maxSeverity: high
      maxCounts: {critical: 0, high: 5, low: 100}
      maxCvss: 8.5
      fixableOnly: true
      scanTimeout: 1h
      maxScanAge: 7d
      failOpen: true
      sources: [cosign-vuln, trivy-referrer]
      allow:
        - {id: CVE-2024-6119, until: 2027-01-31, reason: "no TLS name checks"}
    tags: {pattern: "^release-[0-9]+$", forbidden: [latest, dev], immutable: true}
    hygiene:
      maxSize: 1.5GiB
      maxLayers: 40
      allowedBaseImages: ["docker.io/library/debian:12*", "cgr.dev/chainguard/**"]
      requiredLabels: [org.opencontainers.image.source]
    provenance:
      builderIds: ["https://github.com/acme/builder@v1", "https://ci.acme.dev/b"]
    promotion: {tag: verified, repository: "release/{repository}"}
"""
)


# -- gate_rules: every section mapped ----------------------------------------------------------


def test_gate_rules_map_every_section() -> None:
    rules = gate_rules(effective(FULL))

    assert (rules.mode, rules.team) == ("enforce", "payments")
    assert rules.quarantine_strategy == "move"  # the entry's section replaced the defaults'
    assert rules.quarantine_repository == "held/{repository}"

    assert rules.signatures == SignatureRules(
        required=True, grace_period=timedelta(minutes=10), require="all", threshold=1
    )
    assert rules.vulnerabilities == VulnerabilityRules(
        enabled=True,
        max_severity=Severity.HIGH,
        max_counts={Severity.CRITICAL: 0, Severity.HIGH: 5, Severity.LOW: 100},
        max_cvss=8.5,
        fixable_only=True,
        allow=(AllowEntry("CVE-2024-6119", date(2027, 1, 31), "no TLS name checks"),),
        scan_timeout=timedelta(hours=1),
        max_scan_age=timedelta(days=7),
        fail_open=True,
    )
    assert all(isinstance(k, Severity) for k in rules.vulnerabilities.max_counts)

    assert rules.tags.pattern is not None
    assert rules.tags.pattern.pattern == "^release-[0-9]+$"
    assert rules.tags.pattern_name == "regex"
    assert rules.tags.forbidden == frozenset({"latest", "dev"})
    assert rules.tags.immutable is True

    hygiene = rules.hygiene
    assert hygiene.max_size == 1610612736
    assert hygiene.max_layers == 40
    assert hygiene.required_labels == ("org.opencontainers.image.source",)
    assert len(hygiene.allowed_base_images) == 2
    assert hygiene.allowed_base_images[0].fullmatch("docker.io/library/debian:12-slim")
    assert not hygiene.allowed_base_images[0].fullmatch("docker.io/library/debian:11")
    assert hygiene.allowed_base_images[1].fullmatch("cgr.dev/chainguard/static@sha256:ab")

    assert rules.provenance == ProvenanceRules(
        required=True, builder_ids=("https://github.com/acme/builder@v1", "https://ci.acme.dev/b")
    )
    assert rules.promotion == Promotion(tag="verified", repository="release/payments/api")


def test_absent_sections_become_disabled_rules() -> None:
    rules = gate_rules(effective(HEAD, "any/repo"))
    assert rules == GateRules(
        mode="enforce",
        team=None,
        signatures=SignatureRules(),
        vulnerabilities=VulnerabilityRules(),
        tags=TagRules(),
        hygiene=HygieneRules(),
        provenance=ProvenanceRules(),
        promotion=None,
        quarantine_strategy="move",
        quarantine_repository="quarantine/{repository}",
    )
    assert rules.signatures.required is False and rules.vulnerabilities.enabled is False
    facts = Facts(image=ImageRef.parse(f"reg.io/any/repo:1@{DIGEST}"), tags=("1",), pushed_at=NOW)
    verdict = evaluate(facts, rules, NOW)
    assert verdict.outcome is Outcome.PASSED
    assert {c.outcome for c in verdict.checks} == {CheckOutcome.SKIP}


def test_defaults_sections_reach_repositories_without_an_entry() -> None:
    rules = gate_rules(effective(FULL, "web/app"))
    assert (rules.mode, rules.team, rules.quarantine_strategy) == ("audit", "platform", "retag")
    assert rules.promotion is None and rules.hygiene == HygieneRules()


def test_signature_rules_keep_required_false_and_a_zero_grace_period() -> None:
    text = HEAD + "defaults:\n  signatures: {required: false, gracePeriod: 0s}\n"
    assert gate_rules(effective(text)).signatures == SignatureRules(
        required=False, grace_period=timedelta(0), require="any", threshold=1
    )


def test_vulnerability_rules_with_only_counts_or_only_cvss() -> None:
    counts = gate_rules(
        effective(HEAD + "defaults:\n  vulnerabilities: {maxCounts: {critical: 0}}\n")
    )
    assert counts.vulnerabilities.enabled
    assert counts.vulnerabilities.max_severity is None
    assert counts.vulnerabilities.max_counts == {Severity.CRITICAL: 0}
    cvss = gate_rules(effective(HEAD + "defaults:\n  vulnerabilities: {maxCvss: 7}\n"))
    assert cvss.vulnerabilities.max_cvss == 7.0
    assert cvss.vulnerabilities.max_severity is None and cvss.vulnerabilities.max_counts == {}


def test_promotion_tag_only_and_fixed_repository() -> None:
    tag_only = HEAD + "defaults:\n  promotion: {tag: verified}\n"
    assert gate_rules(effective(tag_only)).promotion == Promotion(tag="verified", repository=None)
    fixed = HEAD + "defaults:\n  promotion: {repository: release}\n"
    assert gate_rules(effective(fixed, "a/b")).promotion == Promotion(
        tag=None, repository="release"
    )


# -- the rules behave as the docs say, through the real checks ---------------------------------


def facts(*tags: str, **kw: object) -> Facts:
    image = ImageRef.parse(
        f"reg.io/payments/api:{tags[0]}@{DIGEST}" if tags else f"reg.io/x@{DIGEST}"
    )
    return Facts(image=image, tags=tags, pushed_at=NOW - timedelta(minutes=1), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pattern", "tag", "passes"),
    [
        ("semver", "1.2.3", True),
        ("semver", "v1.2.3-rc.1", True),
        ("semver", "1.2", False),
        ("semver", "latest", False),
        ("semver", "x1.2.3", False),  # anchored: not found inside another tag
        ("semver", "1.2.3.4", False),
        ("semver", "01.2.3", False),
        ("'^release-[0-9]+$'", "release-12", True),
        ("'^release-[0-9]+$'", "prerelease-12", False),
        ("'^release-[0-9]+$'", "release-12b", False),
        ("rc", "1.0.0-rc.1", True),  # searched, as documented: no implicit anchors
        ("rc", "1.0.0", False),
        ("'[0-9]$'", "build-7", True),
    ],
)
def test_tag_patterns_in_the_gate_follow_the_documented_semantics(
    pattern: str, tag: str, passes: bool
) -> None:
    eff = effective(HEAD + f"defaults:\n  tags: {{pattern: {pattern}}}\n")
    assert eff.tags is not None and eff.tags.pattern is not None
    result = check_tags(facts(tag), gate_rules(eff).tags)
    assert (result.outcome is CheckOutcome.PASS) is passes, result.reason
    # the gate and the policy model agree on every tag
    assert eff.tags.pattern.matches(tag) is passes
    if not passes:
        name = "semver" if pattern == "semver" else "regex"
        assert f"do not match {name}" in result.reason


_NUM = st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,3}", fullmatch=True), st.just("01"))
_IDENT = st.from_regex(r"[0-9A-Za-z-]{1,6}", fullmatch=True)
_TAGLIKE = st.builds(
    lambda v, a, b, c, pre, build, junk: (
        f"{v}{a}.{b}.{c}"
        + (f"-{'.'.join(pre)}" if pre else "")
        + (f"+{'.'.join(build)}" if build else "")
        + junk
    ),
    st.sampled_from(["", "v", "V", "x"]),
    _NUM,
    _NUM,
    _NUM,
    st.lists(_IDENT | _NUM, max_size=3),
    st.lists(_IDENT, max_size=2),
    st.sampled_from(["", "", "", ".4", "-", "_x", "\n"]),
)


@settings(max_examples=400, deadline=None)
@given(tag=_TAGLIKE | st.text(alphabet="v0123456789.-+abcXYZ_", max_size=14))
def test_semver_regex_agrees_with_is_semver_tag(tag: str) -> None:
    assert (SEMVER_TAG.search(tag) is not None) is is_semver_tag(tag)


def test_vulnerability_limits_from_the_policy_fail_images() -> None:
    text = HEAD + (
        "defaults:\n  vulnerabilities:\n    maxCounts: {critical: 0, high: 1}\n"
        "    maxCvss: 9.0\n    maxScanAge: 1d\n"
    )
    rules = gate_rules(effective(text))

    def verdict(*findings: Finding, at: datetime = NOW) -> tuple[Outcome, str]:
        scan = ScanReport(digest=DIGEST, scanner="t", source="t", scanned_at=at, findings=findings)
        result = evaluate(facts("1.0.0", scan=scan), rules, NOW)
        (vuln,) = [c for c in result.checks if c.name == "vulnerabilities"]
        return result.outcome, vuln.reason

    def f(i: str, sev: Severity, cvss: float | None = None) -> Finding:
        return Finding(id=i, severity=sev, package="p", installed_version="1", cvss=cvss)

    assert verdict(f("A", Severity.HIGH, 7.0))[0] is Outcome.PASSED
    outcome, reason = verdict(f("A", Severity.HIGH), f("B", Severity.HIGH))
    assert outcome is Outcome.FAILED and "2 high finding(s), at most 1 allowed" in reason
    outcome, reason = verdict(f("C", Severity.CRITICAL))
    assert outcome is Outcome.FAILED and "1 critical finding(s), at most 0 allowed" in reason
    outcome, reason = verdict(f("D", Severity.MEDIUM, 9.8))
    assert outcome is Outcome.FAILED and "CVSS above 9.0" in reason
    outcome, reason = verdict(at=NOW - timedelta(days=2))
    assert outcome is Outcome.FAILED and "scan is 2d old" in reason


def test_fail_open_from_the_policy_turns_a_missing_scan_into_a_warning() -> None:
    base = "defaults:\n  vulnerabilities: {maxSeverity: high, scanTimeout: 5m%s}\n"
    late = Facts(
        image=ImageRef.parse(f"reg.io/a/b:1@{DIGEST}"),
        tags=("1",),
        pushed_at=NOW - timedelta(hours=1),
    )
    closed = evaluate(late, gate_rules(effective(HEAD + base % "")), NOW)
    opened = evaluate(late, gate_rules(effective(HEAD + base % ", failOpen: true")), NOW)
    assert closed.outcome is Outcome.FAILED
    assert opened.outcome is Outcome.WARN


def test_hygiene_from_the_policy_checks_size_layers_base_and_labels() -> None:
    text = HEAD + (
        "defaults:\n  hygiene:\n    maxSize: 1MiB\n    maxLayers: 3\n"
        "    allowedBaseImages: [docker.io/library/debian]\n"
        "    requiredLabels: [org.opencontainers.image.source]\n"
    )
    rules = gate_rules(effective(text)).hygiene
    good = {
        "org.opencontainers.image.base.name": "docker.io/library/debian:12",
        "org.opencontainers.image.source": "https://github.com/acme/app",
    }
    ok = check_hygiene(facts("1", size=1024 * 1024, layer_count=3, labels=good), rules)
    assert ok.outcome is CheckOutcome.PASS
    bad = check_hygiene(
        facts(
            "1",
            size=1024 * 1024 + 1,
            layer_count=4,
            labels={"org.opencontainers.image.base.name": "docker.io/library/debian-evil:12"},
        ),
        rules,
    )
    assert bad.outcome is CheckOutcome.FAIL
    for part in (
        "1048577 bytes exceeds 1048576",
        "4 layers exceed 3",
        "base image docker.io/library/debian-evil:12 is not allowed",
        "missing required label(s): org.opencontainers.image.source",
    ):
        assert part in bad.reason


def test_provenance_from_the_policy() -> None:
    text = HEAD + "defaults:\n  provenance: {builderIds: [https://ci.acme.dev/b]}\n"
    rules = gate_rules(effective(text))
    built = facts("1", provenance=(ProvenanceFact(True, "https://ci.acme.dev/b"),))
    other = facts("1", provenance=(ProvenanceFact(True, "https://evil.dev/b"),))
    assert evaluate(built, rules, NOW).outcome is Outcome.PASSED
    assert evaluate(other, rules, NOW).outcome is Outcome.FAILED
    relaxed = gate_rules(effective(HEAD + "defaults:\n  provenance: {required: false}\n"))
    assert relaxed.provenance == ProvenanceRules(required=False, builder_ids=())
    assert evaluate(other, relaxed, NOW).outcome is Outcome.PASSED


# -- the new sections merge like every other section -----------------------------------------


MERGE = (
    HEAD
    + """\
defaults:
  hygiene: {maxLayers: 10, requiredLabels: [a]}
  provenance: {builderIds: [b1]}
  promotion: {tag: verified}
repositories:
  - match: "legacy/**"
    hygiene: {maxSize: 2GB}
"""
)


def test_new_sections_are_replaced_whole_and_their_origin_is_known() -> None:
    assert {"attestations", "hygiene", "provenance", "promotion"} <= set(SECTIONS)
    policy = load(MERGE)
    legacy = policy.for_repository("legacy/app")
    assert legacy.hygiene is not None
    assert (legacy.hygiene.max_size, legacy.hygiene.max_layers) == (2_000_000_000, None)
    assert legacy.hygiene.required_labels == ()
    assert legacy.provenance is not None and legacy.provenance.builder_ids == ("b1",)
    assert legacy.origins == {
        "hygiene": "repositories[0]",
        "provenance": "defaults",
        "promotion": "defaults",
    }
    assert legacy.path("hygiene", "maxSize") == "repositories[0].hygiene.maxSize"
    assert legacy.path("provenance", "builderIds", 0) == "defaults.provenance.builderIds[0]"
    other = policy.for_repository("web/app")
    assert other.hygiene is not None and other.hygiene.max_layers == 10
    assert other.path("hygiene") == "defaults.hygiene"


# -- sizes and image globs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1, 1),
        (524288000, 524288000),
        ("500MB", 500_000_000),
        ("500 MB", 500_000_000),
        ("1.5GiB", 1610612736),
        ("0.5KiB", 512),
        ("2kB", 2000),
        ("2KB", 2000),
        ("3TiB", 3 * 1024**4),
        ("1.25TB", 1_250_000_000_000),
        ("7B", 7),
    ],
)
def test_sizes_parse(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "at least 1 byte"),
        ("0MB", "at least 1 byte"),
        (-5, "at least 1 byte"),
        ("500", "units: B, kB, KB, MB, GB, TB, KiB, MiB, GiB, TiB"),
        ("500Mb", "units: B"),
        ("1.5B", "expected whole bytes"),
        ("1,5GB", "expected a size in bytes"),
        (1.5, "expected a size in bytes (an integer)"),
        (True, "expected a size in bytes"),
        ("-1MB", "expected a size"),
    ],
)
def test_bad_sizes(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_size(value)


@pytest.mark.parametrize(
    ("glob", "reference", "expected"),
    [
        ("docker.io/library/debian", "docker.io/library/debian", True),
        ("docker.io/library/debian", "docker.io/library/debian:12", True),
        ("docker.io/library/debian", "docker.io/library/debian@sha256:ab12", True),
        ("docker.io/library/debian", "docker.io/library/debian:12@sha256:ab12", True),
        ("docker.io/library/debian", "docker.io/library/debian-slim:12", False),
        ("docker.io/library/debian", "docker.io/library/debian/x:12", False),
        ("docker.io/library/debian:12*", "docker.io/library/debian:12-slim", True),
        ("docker.io/library/debian:12*", "docker.io/library/debian:11", False),
        ("docker.io/library/debian:12", "docker.io/library/debian:12", True),
        ("docker.io/library/debian:12", "docker.io/library/debian:12-slim", False),
        ("cgr.dev/chainguard/*", "cgr.dev/chainguard/static:latest", True),
        ("cgr.dev/chainguard/*", "cgr.dev/chainguard/a/b:1", False),
        ("ghcr.io/acme/**", "ghcr.io/acme/a/b@sha256:ab", True),
        ("ghcr.io/acme/**", "ghcr.io/acmecorp/base:1", False),
        ("*.dkr.ecr.*.amazonaws.com/base/*", "1.dkr.ecr.eu-west-1.amazonaws.com/base/py:3", True),
        ("localhost:5000/base", "localhost:5000/base:1", True),
        ("ghcr.io/acme/app-?", "ghcr.io/acme/app-1:2", True),
        ("ghcr.io/acme/app-?", "ghcr.io/acme/app-10:2", False),
    ],
)
def test_image_globs(glob: str, reference: str, expected: bool) -> None:
    compiled = ImageGlob.compile(glob)
    assert compiled.matches(reference) is expected
    assert (compiled.regex.fullmatch(reference) is not None) is expected  # what the gate uses


@pytest.mark.parametrize(
    ("glob", "message"),
    [
        ("", "expected an image reference glob"),
        ("debian 12", "character(s) ' ' cannot appear in an image reference"),
        ("a/b$", "character(s) '$'"),
        (5, "expected an image reference glob"),
    ],
)
def test_bad_image_globs(glob: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ImageGlob.compile(glob)


# -- invalid keys: path, line, message ----------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "line", "path", "message"),
    [
        (
            "defaults:\n  vulnerabilities: {fixableOnly: true}\n",
            4,
            "defaults.vulnerabilities.maxSeverity",
            "missing a limit: expected at least one of maxSeverity, maxCounts, maxCvss",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxCounts: {}\n",
            5,
            "defaults.vulnerabilities.maxCounts",
            "no severity given; expected at least one of: unknown, negligible, low, medium, "
            "high, critical",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxCounts: {high: -1}\n",
            5,
            "defaults.vulnerabilities.maxCounts.high",
            "got -1, expected a value greater than or equal to 0",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxCounts: {severe: 1}\n",
            5,
            "defaults.vulnerabilities.maxCounts.severe",
            "unknown key 'severe'; valid keys: unknown, negligible, low, medium, high, critical",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxCounts: {high: many}\n",
            5,
            "defaults.vulnerabilities.maxCounts.high",
            "got 'many', expected a valid integer",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxCvss: 10.5\n",
            5,
            "defaults.vulnerabilities.maxCvss",
            "got 10.5, expected a value less than or equal to 10",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxCvss: true\n",
            5,
            "defaults.vulnerabilities.maxCvss",
            "got true, expected a valid number",
        ),
        (
            "defaults:\n  hygiene:\n    maxLayers: '3'\n",
            5,
            "defaults.hygiene.maxLayers",
            "got '3', expected a valid integer",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxCvss: -1\n",
            5,
            "defaults.vulnerabilities.maxCvss",
            "got -1, expected a value greater than or equal to 0",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxSeverity: high\n    maxScanAge: 0s\n",
            6,
            "defaults.vulnerabilities.maxScanAge",
            "got 0s, expected a duration greater than 0s",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxSeverity: high\n    maxScanAge: 7\n",
            6,
            "defaults.vulnerabilities.maxScanAge",
            "add a unit, e.g. 300s or 7d",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxSeverity: high\n    failOpen: maybe\n",
            6,
            "defaults.vulnerabilities.failOpen",
            "got 'maybe', expected a valid boolean",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxSeverity: high\n    sources: [trivy]\n",
            6,
            "defaults.vulnerabilities.sources[0]",
            "got 'trivy', expected 'cosign-vuln', 'harbor', 'trivy-referrer', 'grype-referrer', "
            "'ecr', 'inspector', 'artifact-analysis', 'defender' or 'clair'",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxSeverity: high\n    sources: []\n",
            6,
            "defaults.vulnerabilities.sources",
            "got 0 items, expected at least 1",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxSeverity: high\n"
            "    sources: [ecr, inspector, ecr]\n",
            6,
            "defaults.vulnerabilities.sources[2]",
            "duplicate source 'ecr' (first at sources[0])",
        ),
        (
            "defaults:\n  vulnerabilities:\n    maxSeverity: high\n    trivyReport: file://t.json\n",
            6,
            "defaults.vulnerabilities.trivyReport",
            "unknown key 'trivyReport'; valid keys: maxSeverity, fixableOnly, scanTimeout, "
            "allow, maxCounts, maxCvss, maxScanAge, failOpen, sources, referrers",
        ),
        (
            "defaults:\n  hygiene:\n    maxSize: 1.5gb\n",
            5,
            "defaults.hygiene.maxSize",
            "got '1.5gb', expected a size in bytes (an integer) or a string like 500MB, 1.5GiB",
        ),
        (
            "defaults:\n  hygiene:\n    maxSize: 0\n",
            5,
            "defaults.hygiene.maxSize",
            "got 0, expected a size of at least 1 byte",
        ),
        (
            "defaults:\n  hygiene:\n    maxLayers: 0\n",
            5,
            "defaults.hygiene.maxLayers",
            "got 0, expected a value greater than or equal to 1",
        ),
        (
            "defaults:\n  hygiene:\n    allowedBaseImages: ['debian 12']\n",
            5,
            "defaults.hygiene.allowedBaseImages[0]",
            "character(s) ' ' cannot appear in an image reference",
        ),
        (
            "defaults:\n  hygiene:\n    requiredLabels: [a, 'b=c']\n",
            5,
            "defaults.hygiene.requiredLabels[1]",
            "got 'b=c', expected a label key without spaces or '='",
        ),
        (
            "defaults:\n  hygiene:\n    requiredLabels:\n      - a\n      - b\n      - a\n",
            8,
            "defaults.hygiene.requiredLabels[2]",
            "duplicate label 'a' (first at requiredLabels[0])",
        ),
        (
            "defaults:\n  hygiene:\n    maxLayer: 5\n",
            5,
            "defaults.hygiene.maxLayer",
            "unknown key 'maxLayer'; valid keys: maxSize, maxLayers, allowedBaseImages, "
            "requiredLabels",
        ),
        (
            "defaults:\n  provenance: {required: true}\n",
            4,
            "defaults.provenance.builderIds",
            "provenance is required but no builder is accepted; expected at least one "
            "builder id (or 'required: false')",
        ),
        (
            "defaults:\n  provenance:\n    builderIds: [a, a]\n",
            5,
            "defaults.provenance.builderIds[1]",
            "duplicate builder id 'a' (first at builderIds[0])",
        ),
        (
            "defaults:\n  provenance:\n    builderIds: [a]\n    builders: [b]\n",
            6,
            "defaults.provenance.builders",
            "unknown key 'builders'; valid keys: required, builderIds",
        ),
        (
            "defaults:\n  promotion: {}\n",
            4,
            "defaults.promotion",
            "nothing to promote: expected 'tag' and/or 'repository'",
        ),
        (
            "defaults:\n  promotion: {tag: 'not a tag'}\n",
            4,
            "defaults.promotion.tag",
            "got 'not a tag', expected a tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
        ),
        (
            "defaults:\n  promotion: {repository: '{repository}'}\n",
            4,
            "defaults.promotion.repository",
            "that is the image's own repository; remove 'repository' and set 'tag'",
        ),
        (
            "defaults:\n  promotion: {repository: 'release/{repo}'}\n",
            4,
            "defaults.promotion.repository",
            "unknown placeholder {repo} in 'release/{repo}'; valid: {repository}",
        ),
        (
            "defaults:\n  promotion: {repository: 'Release/{repository}'}\n",
            4,
            "defaults.promotion.repository",
            "not a valid repository name",
        ),
        (
            "defaults:\n  promotion:\n    tag: v\n    copyTo: x\n",
            6,
            "defaults.promotion.copyTo",
            "unknown key 'copyTo'; valid keys: tag, repository",
        ),
        (
            "defaults:\n  hygiene:\n",
            4,
            "defaults.hygiene",
            "got null (an empty value)",
        ),
    ],
)
def test_invalid_gate_keys(snippet: str, line: int, path: str, message: str) -> None:
    problem = only(HEAD + snippet)
    assert (problem.line, problem.path) == (line, path)
    assert message in problem.message


def test_a_missing_limit_is_reported_with_every_other_problem() -> None:
    text = HEAD + (
        "repositories:\n"
        "  - match: a\n"
        "    vulnerabilities:\n"
        "      scanTimeout: soon\n"
        "      max_severity: high\n"
    )
    assert [(p.line, p.path, p.message) for p in validate_text(text)] == [
        (
            5,
            "repositories[0].vulnerabilities.maxSeverity",
            "missing a limit: expected at least one of maxSeverity, maxCounts, maxCvss",
        ),
        (
            6,
            "repositories[0].vulnerabilities.scanTimeout",
            "got 'soon', expected a duration like 30s, 5m, 12h, 7d or 2w (one whole number "
            "and one unit: s, m, h, d or w)",
        ),
        (
            7,
            "repositories[0].vulnerabilities.max_severity",
            "unknown key 'max_severity'; valid keys: maxSeverity, fixableOnly, scanTimeout, "
            "allow, maxCounts, maxCvss, maxScanAge, failOpen, sources, referrers",
        ),
    ]


def test_python_construction_names_fields_by_name() -> None:
    built = Vulnerabilities.model_validate({"max_counts": {"high": 2}})
    assert built.max_counts is not None and built.max_counts.limits() == {Severity.HIGH: 2}
    assert Vulnerabilities(max_severity=Severity.LOW).max_severity is Severity.LOW
    assert Vulnerabilities(max_cvss=7.5).max_severity is None
    with pytest.raises(ValueError, match="missing a limit"):
        Vulnerabilities()
    with pytest.raises(ValueError, match="missing a limit"):
        Vulnerabilities.model_validate({"fixable_only": True})


# -- round trip, schema, docs -------------------------------------------------------------------


def test_dump_and_reload_keeps_every_new_key() -> None:
    policy = load(FULL)
    dumped = policy.model_dump(mode="json", exclude_none=True)
    hygiene = dumped["repositories"][0]["hygiene"]
    assert hygiene["maxSize"] == 1610612736  # sizes are dumped as bytes
    assert hygiene["allowedBaseImages"] == ["docker.io/library/debian:12*", "cgr.dev/chainguard/**"]
    assert dumped["repositories"][0]["vulnerabilities"]["maxCounts"] == {
        "low": 100,
        "high": 5,
        "critical": 0,
    }
    again = load(yaml.safe_dump(dumped, sort_keys=False))
    assert again == policy
    assert gate_rules(again.for_repository("payments/x")) == gate_rules(
        policy.for_repository("payments/x")
    )


def _as_json(data: object) -> object:
    if isinstance(data, dict):
        return {k: _as_json(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_as_json(v) for v in data]
    if isinstance(data, date):
        return data.isoformat()
    return data


def test_json_schema_accepts_the_new_keys_and_rejects_their_structural_errors() -> None:
    validator = jsonschema.Draft202012Validator(policy_json_schema())
    assert list(validator.iter_errors(_as_json(yaml.safe_load(FULL)))) == []
    bad = [
        "defaults: {vulnerabilities: {fixableOnly: true}}",  # no limit
        "defaults: {vulnerabilities: {maxCvss: 11}}",
        "defaults: {vulnerabilities: {maxSeverity: high, sources: [trivy]}}",
        "defaults: {vulnerabilities: {maxSeverity: high, sources: [trivy-file]}}",  # removed
        "defaults: {vulnerabilities: {maxSeverity: high, referrers: {signed: true}}}",
        "defaults: {vulnerabilities: {maxCounts: {severe: 1}}}",
        "defaults: {hygiene: {maxSize: 1.5gb}}",
        "defaults: {hygiene: {maxLayers: 0}}",
        "defaults: {promotion: {}}",
        "defaults: {provenance: {builderIds: [a], extra: 1}}",
    ]
    for snippet in bad:
        text = HEAD + snippet + "\n"
        assert list(validator.iter_errors(yaml.safe_load(text))), snippet
        assert validate_text(text), snippet


def _doc_section_examples() -> dict[str, str]:
    """The ```yaml examples of the gate sections in docs/policy.md, by section."""
    docs = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")
    out: dict[str, str] = {}
    for block in re.findall(r"```yaml\n(.*?)```", docs, re.DOTALL):
        first = block.split(":", 1)[0]
        if first in ("vulnerabilities", "hygiene", "provenance", "promotion"):
            out[first] = block
    return out


def test_the_docs_examples_of_the_gate_sections_validate() -> None:
    examples = _doc_section_examples()
    assert set(examples) == {"vulnerabilities", "hygiene", "provenance", "promotion"}
    for section, block in examples.items():
        indented = "".join(f"  {line}\n" for line in block.splitlines())
        text = HEAD + "defaults:\n" + indented
        assert validate_text(text) == [], section
        gate_rules(effective(text))
