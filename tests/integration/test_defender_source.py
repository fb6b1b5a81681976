"""The `defender` scan source and `changed_since`, driving the real azure-mgmt-resourcegraph
client at `FakeResourceGraph` on loopback (`REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH`).

The registry is a stand-in with ACR's host: with no signature or attestation rules,
`gather_evidence` reads nothing from the data plane, only the scan sources, so the
Resource Graph read is the whole of the evidence here. The host is unlisted in the policy:
an `*.azurecr.io` host is ACR by its name, and Defender is ACR's own scanner.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from support.fake_resourcegraph import PATH, SUBSCRIPTION, FakeResourceGraph, InvalidQuery, evaluate

from regwarden.errors import AuthError, RegistryError, UsageError
from regwarden.gate import Evidence, Facts, gate_rules, gather_evidence
from regwarden.gate import evaluate as judge
from regwarden.model import CheckOutcome, Outcome, Severity
from regwarden.policy import Policy, load_policy_text
from regwarden.reference import ImageRef
from regwarden.scanning import SCAN_SOURCES, NoScanYet, ScanFormatError
from regwarden.scanning.defender import (
    UNSPECIFIED_FIX,
    DefenderScanSource,
    changed_since,
    findings_of,
    image_query,
    kql_string,
    subscriptions_of,
)

if TYPE_CHECKING:
    from regwarden.providers import Registry

pytestmark = pytest.mark.integration

ACR = "demo.azurecr.io"
REPOSITORY = "team/app"
DIGEST = "sha256:" + "6e" * 32
OTHER = "sha256:" + "7f" * 32
IMAGE = ImageRef.parse(f"{ACR}/{REPOSITORY}@{DIGEST}")
NOW = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)  # five minutes after the fake's scans

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  vulnerabilities: {maxSeverity: high, scanTimeout: 30m}
"""


@dataclass
class AcrStandIn:
    """Only what `gather_evidence` and the source read without signature rules: the host."""

    host: str = ACR


STAND_IN = cast("Registry", AcrStandIn())


@pytest.fixture
def graph() -> Iterator[FakeResourceGraph]:
    with FakeResourceGraph() as fake:
        yield fake


@pytest.fixture
def env(graph: FakeResourceGraph) -> dict[str, str]:
    return {
        "REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH": graph.url,
        "REGWARDEN_AZURE_SUBSCRIPTION": SUBSCRIPTION,
    }


@pytest.fixture
def quick_retries() -> Iterator[None]:
    """The gate's `defender` source with quick retries for one test; the built-in factory is
    put back after."""
    built_in = SCAN_SOURCES.unregister("defender")
    SCAN_SOURCES.add("defender", lambda context: source(dict(context.env)))
    yield
    SCAN_SOURCES.unregister("defender")
    SCAN_SOURCES.add("defender", built_in)


def source(env: dict[str, str], **kwargs: Any) -> DefenderScanSource:
    options: dict[str, Any] = {"retry_total": 2, "retry_backoff_factor": 0.01}
    return DefenderScanSource(env=env, **(options | kwargs))


def policy() -> Policy:
    return load_policy_text(POLICY, source="acr.yaml", base_dir=Path("."))


def evidence(env: dict[str, str]) -> Evidence:
    p = policy()
    rules = gate_rules(p.for_repository(REPOSITORY))
    return gather_evidence(p, STAND_IN, IMAGE, rules, env=env, now=NOW)


def verdict(found: Evidence, *, pushed: timedelta = timedelta(minutes=5)) -> Any:
    rules = gate_rules(policy().for_repository(REPOSITORY))
    facts = Facts(
        image=IMAGE,
        tags=("1.0.0",),
        pushed_at=NOW - pushed,
        scan=found.scan,
        scan_error=found.scan_error,
        scan_waiting=found.scan_waiting,
        unavailable=found.unavailable,
    )
    return judge(facts, rules, NOW)


def add(graph: FakeResourceGraph, cve: str, severity: str, **kwargs: Any) -> dict[str, Any]:
    return graph.add_finding(ACR, REPOSITORY, DIGEST, cve, severity, **kwargs)


# -- findings ----------------------------------------------------------------------------------


def test_title_case_severities_and_every_field_of_a_finding(
    graph: FakeResourceGraph, env: dict[str, str]
) -> None:
    for n, severity in enumerate(["Critical", "High", "Medium", "Low", "None", "Whatever"]):
        add(graph, f"CVE-2025-000{n}", severity, package=f"pkg{n}", version=f"1.{n}")
    report = source(env)(STAND_IN, IMAGE)

    assert report is not None
    assert (report.digest, report.scanner, report.scanned_at) == (
        DIGEST,
        "defender",
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    findings = sorted(report.findings, key=lambda f: f.id)  # rows come in sub-assessment id order
    assert [(f.id, f.severity, f.package, f.installed_version) for f in findings] == [
        ("CVE-2025-0000", Severity.CRITICAL, "pkg0", "1.0"),
        ("CVE-2025-0001", Severity.HIGH, "pkg1", "1.1"),
        ("CVE-2025-0002", Severity.MEDIUM, "pkg2", "1.2"),
        ("CVE-2025-0003", Severity.LOW, "pkg3", "1.3"),
        ("CVE-2025-0004", Severity.NEGLIGIBLE, "pkg4", "1.4"),  # as Harbor's "None"
        ("CVE-2025-0005", Severity.UNKNOWN, "pkg5", "1.5"),
    ]
    first = findings[0]
    assert (first.cvss, first.url) == (7.5, "https://nvd.nist.gov/vuln/detail/CVE-2025-0000")
    # the one query, scoped to the subscription, for this image only
    (body,) = graph.queries
    assert body["subscriptions"] == [SUBSCRIPTION]
    assert f'artifactDetails.digest == "{DIGEST}"' in body["query"]
    assert f'artifactDetails.repositoryName == "{REPOSITORY}"' in body["query"]
    assert f'artifactDetails.registryHost =~ "{ACR}"' in body["query"]


def test_fix_status_decides_fixable_and_an_empty_fixed_version_is_still_a_fix(
    graph: FakeResourceGraph, env: dict[str, str]
) -> None:
    add(graph, "CVE-1", "High", fix_status="FixAvailable", fixed="3.0.14-1")
    add(graph, "CVE-2", "High", fix_status="FixAvailable", fixed="")
    for n, status in enumerate(["NoFixAvailable", "WontFix", "Scheduled", "Unknown"], start=3):
        add(graph, f"CVE-{n}", "High", fix_status=status, fixed="9.9")
    report = source(env)(STAND_IN, IMAGE)

    assert report is not None
    findings = sorted(report.findings, key=lambda f: f.id)
    assert [(f.id, f.fixed_version, f.fixable) for f in findings] == [
        ("CVE-1", "3.0.14-1", True),
        ("CVE-2", UNSPECIFIED_FIX, True),
        ("CVE-3", None, False),
        ("CVE-4", None, False),
        ("CVE-5", None, False),
        ("CVE-6", None, False),
    ]


def test_healthy_rows_are_not_findings_but_say_the_image_was_scanned(
    graph: FakeResourceGraph, env: dict[str, str]
) -> None:
    add(graph, "CVE-1", "Critical", status="Healthy")
    add(graph, "CVE-2", "High", status="NotApplicable")  # exempted in Defender: still there
    report = source(env)(STAND_IN, IMAGE)
    assert report is not None and [f.id for f in report.findings] == ["CVE-2"]

    graph.rows.pop()
    clean = source(env)(STAND_IN, IMAGE)
    assert clean is not None and clean.findings == ()
    assert verdict(evidence(env)).outcome is Outcome.PASSED


def test_rows_of_other_images_are_not_read_and_never_merged(
    graph: FakeResourceGraph, env: dict[str, str]
) -> None:
    graph.add_finding(ACR, REPOSITORY, OTHER, "CVE-9", "Critical")
    graph.add_finding("other.azurecr.io", REPOSITORY, DIGEST, "CVE-8", "Critical")
    graph.add_finding(ACR, "team/other", DIGEST, "CVE-7", "Critical")
    with pytest.raises(NoScanYet):
        source(env)(STAND_IN, IMAGE)
    # a row of another image handed to the parser is an error, not a finding of this one
    with pytest.raises(ScanFormatError, match="artifactDetails"):
        findings_of(graph.rows[:1], registry_host=ACR, repository=REPOSITORY, digest=DIGEST)


def test_the_host_is_matched_case_insensitively(
    graph: FakeResourceGraph, env: dict[str, str]
) -> None:
    graph.add_finding("Demo.AzureCR.io", REPOSITORY, DIGEST, "CVE-1", "Low")
    report = source(env)(STAND_IN, IMAGE)
    assert report is not None and [f.id for f in report.findings] == ["CVE-1"]


def test_findings_are_read_across_every_page(graph: FakeResourceGraph, env: dict[str, str]) -> None:
    cves = [f"CVE-2025-{n:04d}" for n in range(23)]
    for cve in cves:
        add(graph, cve, "Low")

    report = source(env, page_size=5)(STAND_IN, IMAGE)

    assert report is not None and sorted(f.id for f in report.findings) == cves
    pages = graph.queries
    assert [q["options"]["$top"] for q in pages] == [5] * 5
    tokens = [q["options"].get("$skipToken") for q in pages]
    assert tokens[0] is None and all(tokens[1:]) and len(set(tokens[1:])) == 4


# -- no scan yet, failures ---------------------------------------------------------------------


def test_no_rows_is_pending_until_scan_timeout_then_fails(
    graph: FakeResourceGraph, env: dict[str, str]
) -> None:
    with pytest.raises(NoScanYet, match="awaiting Defender for Containers' scan of"):
        source(env)(STAND_IN, IMAGE)

    found = evidence(env)
    assert (found.scan, found.scan_error, found.unavailable) == (None, None, ())
    assert found.scan_waiting is not None and "Defender" in found.scan_waiting
    pending = verdict(found)
    assert pending.outcome is Outcome.PENDING
    timed_out = verdict(found, pushed=timedelta(minutes=31))
    assert timed_out.outcome is Outcome.FAILED
    (check,) = [c for c in timed_out.checks if c.name == "vulnerabilities"]
    assert "no scan within" in check.reason and "Defender" in check.reason


def test_throttling_and_unavailability_are_retried(
    graph: FakeResourceGraph, env: dict[str, str]
) -> None:
    add(graph, "CVE-1", "Critical")
    graph.fail_next("POST", PATH, 429, times=1, headers={"Retry-After": "0"})
    graph.fail_next("POST", PATH, 503, times=1)

    report = source(env)(STAND_IN, IMAGE)

    assert report is not None and [f.id for f in report.findings] == ["CVE-1"]
    assert len(graph.queries) == 3


@pytest.mark.parametrize("status", [500, 503])
def test_a_source_that_keeps_failing_is_unavailable_evidence_never_clean(
    graph: FakeResourceGraph, env: dict[str, str], status: int, quick_retries: None
) -> None:
    graph.fail_next("POST", PATH, status, times=10_000)

    with pytest.raises(RegistryError, match=f"HTTP {status}") as raised:
        source(env)(STAND_IN, IMAGE)
    assert not isinstance(raised.value, AuthError)
    assert len(graph.queries) == 3  # the first try and two retries

    found = evidence(env)
    assert found.scan is None and found.scan_error is None
    (why,) = found.unavailable
    assert why.startswith("defender: Defender sub-assessments of")
    judged = verdict(found, pushed=timedelta(hours=2))  # even past scanTimeout
    assert judged.outcome is Outcome.ERROR
    assert [c.outcome for c in judged.checks if c.name == "evidence"] == [CheckOutcome.ERROR]


def test_a_refusal_is_an_auth_error_and_not_retried(
    graph: FakeResourceGraph, env: dict[str, str], quick_retries: None
) -> None:
    graph.fail_next("POST", PATH, 403, times=1)
    with pytest.raises(AuthError, match=r"HTTP 403.*") as raised:
        source(env)(STAND_IN, IMAGE)
    assert raised.value.hint is not None and "REGWARDEN_AZURE_SUBSCRIPTION" in raised.value.hint
    assert len(graph.queries) == 1
    graph.fail_next("POST", PATH, 403, times=1)
    (why,) = evidence(env).unavailable
    assert "refused by Azure Resource Graph" in why


def test_a_critical_finding_fails_the_gate_end_to_end(
    graph: FakeResourceGraph, env: dict[str, str]
) -> None:
    add(graph, "CVE-2023-4911", "Critical", package="glibc", version="2.36-9")
    add(graph, "CVE-2024-1", "Low")

    found = evidence(env)  # sources unset: ACR's own scanner is read

    assert found.scan is not None and found.scan.scanner == "defender"
    judged = verdict(found)
    assert judged.outcome is Outcome.FAILED
    (check,) = [c for c in judged.checks if c.name == "vulnerabilities"]
    assert check.outcome is CheckOutcome.FAIL and "CVE-2023-4911" in check.reason


# -- KQL ---------------------------------------------------------------------------------------


def test_a_hostile_repository_name_stays_one_string_literal(graph: FakeResourceGraph) -> None:
    hostile = 'x" or 1==1 | where "a" == "a\\'
    graph.add_finding(ACR, "x", DIGEST, "CVE-1", "Critical")
    graph.add_finding(ACR, hostile, DIGEST, "CVE-2", "Critical")

    query = image_query(ACR, hostile, DIGEST)

    assert kql_string(hostile) == '"x\\" or 1==1 | where \\"a\\" == \\"a\\\\"'
    assert f"repositoryName == {kql_string(hostile)}\n" in query
    selected = evaluate(query, graph.rows)
    assert [r["properties"]["id"] for r in selected] == ["CVE-2"]
    # through the client too: the service sees the same literal and finds that one row
    env = {"REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH": graph.url}
    image = ImageRef.model_construct(registry=ACR, repository=hostile, digest=DIGEST, tag=None)
    report = source(env)(STAND_IN, image)
    assert report is not None and [f.id for f in report.findings] == ["CVE-2"]
    # a pasted (unescaped) value would end the literal early: the fake refuses that query
    pasted = query.replace(kql_string(hostile), f'"{hostile}"')
    with pytest.raises(InvalidQuery, match="not understood"):
        evaluate(pasted, graph.rows)


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\x7fb"])
def test_control_characters_are_refused_in_query_values(value: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        kql_string(value)
    with pytest.raises(ValueError, match="control character"):
        image_query(ACR, value, DIGEST)


# -- changed_since, configuration ---------------------------------------------------------------


def test_changed_since_names_each_image_with_newer_sub_assessments_once(
    graph: FakeResourceGraph, env: dict[str, str]
) -> None:
    old = datetime(2025, 12, 31, tzinfo=UTC)
    new = datetime(2026, 1, 1, 12, tzinfo=UTC)
    graph.add_finding(ACR, REPOSITORY, DIGEST, "CVE-1", "High", when=new)
    graph.add_finding(ACR, REPOSITORY, DIGEST, "CVE-2", "Low", when=new)
    graph.add_finding(ACR, "team/old", OTHER, "CVE-3", "High", when=old)
    graph.add_finding(ACR, "team/b", OTHER, "CVE-4", "High", when=new)
    graph.add_finding(ACR, "team/c", OTHER, "CVE-5", "High", when=new, subscription="other-sub")

    changed = changed_since([SUBSCRIPTION], datetime(2026, 1, 1, tzinfo=UTC), env=env, page_size=1)

    assert changed == [(ACR, "team/app", DIGEST), (ACR, "team/b", OTHER)]
    assert {tuple(q["subscriptions"]) for q in graph.queries} == {(SUBSCRIPTION,)}
    assert (
        "todatetime(properties.timeGenerated) > datetime(2026-01-01T00:00:00.000000Z)"
        in (graph.queries[0]["query"])
    )
    assert changed_since([], old - timedelta(days=1), env=env)[-1] == (ACR, "team/old", OTHER)


def test_configuration_endpoint_and_subscriptions() -> None:
    assert subscriptions_of({"REGWARDEN_AZURE_SUBSCRIPTION": " a, b ,,"}) == ("a", "b")
    assert subscriptions_of({}) == ()
    bad = {"REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH": "http://graph.example.com"}
    with pytest.raises(UsageError, match="http:// only on loopback"):
        DefenderScanSource(env=bad).client  # noqa: B018  (the property builds the client)
    with pytest.raises(ValueError, match="page_size"):
        DefenderScanSource(page_size=1001)
