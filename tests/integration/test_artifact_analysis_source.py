"""The `artifact-analysis` scan source and the occurrence lookups of `on_scan`, driving the
real Grafeas client (REST transport) at `FakeGrafeas` on loopback.

The registry is a stand-in with GAR's host: with no signature or attestation rules,
`gather_evidence` reads nothing from the data plane, only the scan sources, so the
Artifact Analysis read is the whole of the evidence here. The source reads the image's
manifest only when Artifact Analysis has filed nothing under its digest (to see whether it
is an index): the stand-in's data plane serves a single image's. Indexes, on a real
registry: `test_artifact_analysis_gar.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from support.fake_grafeas import FakeGrafeas

from regwarden.errors import AuthError, RegistryError
from regwarden.gate import Evidence, Facts, evaluate, gate_rules, gather_evidence
from regwarden.model import CheckOutcome, EventKind, Outcome, Severity
from regwarden.oci import OCI_MANIFEST, Manifest
from regwarden.policy import Policy, load_policy_text
from regwarden.reference import ImageRef
from regwarden.scanning import SCAN_SOURCES
from regwarden.scanning.artifact_analysis import (
    ArtifactAnalysisScanFailed,
    ArtifactAnalysisScanSource,
    image_of_occurrence,
    parse_occurrence_notification,
    scan_event,
)

if TYPE_CHECKING:
    from regwarden.providers import Registry

pytestmark = pytest.mark.integration

GAR = "us-docker.pkg.dev"
PROJECT = "demo-proj"
REPOSITORY = f"{PROJECT}/repo/team/app"
DIGEST = "sha256:" + "6e" * 32
IMAGE = ImageRef.parse(f"{GAR}/{REPOSITORY}@{DIGEST}")
URL = f"https://{GAR}/{REPOSITORY}@{DIGEST}"
LIST = rf"/v1/projects/{PROJECT}/occurrences"
NOW = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)  # five minutes after the fake's scans

POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {GAR}, kind: gar}}
defaults:
  vulnerabilities: {{maxSeverity: high}}
"""


@dataclass
class ImageManifestOnly:
    """A data plane that holds `IMAGE`'s manifest (a single image) and nothing else."""

    reads: list[str] = field(default_factory=list)

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        assert (repository, reference) == (REPOSITORY, DIGEST), (repository, reference)
        self.reads.append(reference)
        data = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}
        return Manifest(DIGEST, OCI_MANIFEST, json.dumps(data).encode(), data)


@dataclass
class GarStandIn:
    """Only what `gather_evidence` and the source read without signature rules: the host,
    and the manifest of an image Artifact Analysis has filed nothing under yet."""

    host: str = GAR
    plane: ImageManifestOnly = field(default_factory=ImageManifestOnly)

    def data_plane(self) -> ImageManifestOnly:
        return self.plane


STAND_IN = cast("Registry", GarStandIn())


@pytest.fixture
def grafeas() -> Iterator[FakeGrafeas]:
    with FakeGrafeas() as fake:
        yield fake


@pytest.fixture
def env(grafeas: FakeGrafeas) -> dict[str, str]:
    return {"REGWARDEN_GCP_ENDPOINT_CONTAINERANALYSIS": grafeas.url}


@pytest.fixture
def short_deadline() -> Iterator[None]:
    """The gate's `artifact-analysis` source with a 0.3 s retry deadline (30 s built in)
    for one test; the built-in factory is put back after."""
    built_in = SCAN_SOURCES.unregister("artifact-analysis")
    SCAN_SOURCES.add("artifact-analysis", lambda context: source(dict(context.env), deadline=0.3))
    yield
    SCAN_SOURCES.unregister("artifact-analysis")
    SCAN_SOURCES.add("artifact-analysis", built_in)


def source(env: dict[str, str], **kwargs: Any) -> ArtifactAnalysisScanSource:
    """Quick retries: the faults below are bounded by the deadline, not by the clock."""
    options: dict[str, Any] = {"retry_initial": 0.01, "retry_maximum": 0.05, "deadline": 5.0}
    return ArtifactAnalysisScanSource(env=env, **(options | kwargs))


def lists(grafeas: FakeGrafeas, kind: str) -> list[dict[str, list[str]]]:
    return [r.query for r in grafeas.calls("GET", LIST) if f'kind="{kind}"' in r.query["filter"][0]]


def policy() -> Policy:
    return load_policy_text(POLICY, source="gar.yaml", base_dir=Path("."))


def evidence(env: dict[str, str]) -> Evidence:
    p = policy()
    rules = gate_rules(p.for_repository(REPOSITORY))
    return gather_evidence(p, STAND_IN, IMAGE, rules, env=env, now=NOW)


def verdict(found: Evidence) -> Any:
    rules = gate_rules(policy().for_repository(REPOSITORY))
    facts = Facts(
        image=IMAGE,
        tags=("1.0.0",),
        pushed_at=NOW - timedelta(minutes=5),
        scan=found.scan,
        scan_error=found.scan_error,
        unavailable=found.unavailable,
    )
    return evaluate(facts, rules, NOW)


# -- the scan source ---------------------------------------------------------------------------


def test_no_scan_until_discovery_finishes_then_every_finding(
    grafeas: FakeGrafeas, env: dict[str, str]
) -> None:
    read = source(env)
    reads = cast("GarStandIn", STAND_IN).plane.reads
    before = len(reads)
    assert read(STAND_IN, IMAGE) is None  # no DISCOVERY occurrence yet
    assert len(reads) == before + 1  # nothing filed under it: is it an index? no
    grafeas.set_discovery(URL, "PENDING")
    grafeas.add_vulnerability(URL, "CVE-2023-4911", "HIGH", package="glibc", version="2.36-9")
    assert read(STAND_IN, IMAGE) is None
    grafeas.set_discovery(URL, "SCANNING")
    assert read(STAND_IN, IMAGE) is None
    assert len(reads) == before + 1  # its own DISCOVERY decides: no manifest read
    assert lists(grafeas, "VULNERABILITY") == []  # nothing read before the scan finished

    grafeas.set_discovery(URL, "FINISHED_SUCCESS")
    grafeas.add_vulnerability(
        URL,
        "CVE-2024-6119",
        "MEDIUM",
        package="openssl",
        version="3.0.13-1",
        fixed="3.0.14-1",
        cvss=7.5,
        effective="CRITICAL",
    )
    report = read(STAND_IN, IMAGE)

    assert report is not None
    assert (report.digest, report.scanner, report.scanned_at) == (
        DIGEST,
        "artifact-analysis",
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert [
        (f.id, f.severity, f.package, f.installed_version, f.fixed_version, f.cvss)
        for f in report.findings
    ] == [
        ("CVE-2023-4911", Severity.HIGH, "glibc", "2.36-9", None, None),
        ("CVE-2024-6119", Severity.CRITICAL, "openssl", "3.0.13-1", "3.0.14-1", 7.5),
    ]
    # the two filters, in the image's project, for its resource URL
    (query,) = lists(grafeas, "VULNERABILITY")
    assert query["filter"] == [f'kind="VULNERABILITY" AND resourceUrl="{URL}"']
    assert lists(grafeas, "DISCOVERY")[-1]["filter"] == [
        f'kind="DISCOVERY" AND resourceUrl="{URL}"'
    ]


def test_occurrences_of_other_images_are_not_read(
    grafeas: FakeGrafeas, env: dict[str, str]
) -> None:
    other = URL.replace("6e", "7f")
    grafeas.set_discovery(other, "FINISHED_SUCCESS")
    grafeas.add_vulnerability(other, "CVE-2099-1", "CRITICAL", package="x", version="1")
    assert source(env)(STAND_IN, IMAGE) is None  # this image: still no discovery
    grafeas.set_discovery(URL, "FINISHED_SUCCESS")
    report = source(env)(STAND_IN, IMAGE)
    assert report is not None and report.findings == ()


@pytest.mark.parametrize("status", ["FINISHED_FAILED", "FINISHED_UNSUPPORTED"])
def test_a_failed_or_unsupported_scan_is_the_scanners_verdict_never_clean(
    grafeas: FakeGrafeas, env: dict[str, str], status: str
) -> None:
    grafeas.set_discovery(URL, status)
    with pytest.raises(ArtifactAnalysisScanFailed, match=f"analysisStatus {status}"):
        source(env)(STAND_IN, IMAGE)
    assert lists(grafeas, "VULNERABILITY") == []

    found = evidence(env)  # through the gate: a fact, fail closed
    assert found.scan is None and found.unavailable == ()
    assert found.scan_error is not None and status in found.scan_error
    assert verdict(found).outcome is Outcome.FAILED


def test_findings_are_read_across_every_page(grafeas: FakeGrafeas, env: dict[str, str]) -> None:
    grafeas.set_discovery(URL, "FINISHED_SUCCESS")
    cves = [f"CVE-2025-{n:04d}" for n in range(23)]
    for cve in cves:
        grafeas.add_vulnerability(URL, cve, "LOW", package="zlib", version="1.2.13")

    report = source(env, page_size=5)(STAND_IN, IMAGE)

    assert report is not None and [f.id for f in report.findings] == cves
    pages = lists(grafeas, "VULNERABILITY")
    assert [q["pageSize"] for q in pages] == [["5"]] * 5
    assert [q.get("pageToken") for q in pages] == [None, ["5"], ["10"], ["15"], ["20"]]


def test_throttling_and_unavailability_are_retried_within_the_deadline(
    grafeas: FakeGrafeas, env: dict[str, str]
) -> None:
    grafeas.set_discovery(URL, "FINISHED_SUCCESS")
    grafeas.add_vulnerability(URL, "CVE-2023-4911", "CRITICAL", package="glibc", version="2.36-9")
    grafeas.fail_next("GET", LIST, 429, times=2, headers={"Retry-After": "0"})
    grafeas.fail_next("GET", LIST, 503, times=1)

    report = source(env)(STAND_IN, IMAGE)

    assert report is not None and [f.id for f in report.findings] == ["CVE-2023-4911"]
    assert len(grafeas.calls("GET", LIST)) == 2 + 1 + 2  # three refused, then both reads


@pytest.mark.parametrize("status", [429, 503])
def test_a_source_that_keeps_failing_is_unavailable_evidence_not_no_scan(
    grafeas: FakeGrafeas, env: dict[str, str], status: int, short_deadline: None
) -> None:
    grafeas.set_discovery(URL, "FINISHED_SUCCESS")
    grafeas.add_vulnerability(URL, "CVE-2023-4911", "CRITICAL", package="glibc", version="2.36-9")
    grafeas.fail_next("GET", LIST, status, times=10_000)

    with pytest.raises(RegistryError) as raised:
        source(env, deadline=0.3)(STAND_IN, IMAGE)
    assert not isinstance(raised.value, ArtifactAnalysisScanFailed)
    assert "Artifact Analysis discovery of" in str(raised.value)

    found = evidence(env)
    assert found.scan is None and found.scan_error is None
    (why,) = found.unavailable
    assert why.startswith("artifact-analysis: Artifact Analysis discovery of")
    judged = verdict(found)
    assert judged.outcome is Outcome.ERROR
    assert [c.outcome for c in judged.checks if c.name == "evidence"] == [CheckOutcome.ERROR]


def test_refused_credentials_are_an_auth_error(grafeas: FakeGrafeas, env: dict[str, str]) -> None:
    grafeas.fail_next("GET", LIST, 403, times=1)
    with pytest.raises(AuthError, match=r"containeranalysis\.occurrences\.viewer"):
        source(env)(STAND_IN, IMAGE)
    assert len(grafeas.calls("GET", LIST)) == 1  # a refusal is not retried


def test_a_critical_finding_fails_the_gate_end_to_end(
    grafeas: FakeGrafeas, env: dict[str, str]
) -> None:
    grafeas.set_discovery(URL, "FINISHED_SUCCESS")
    grafeas.add_vulnerability(
        URL, "CVE-2023-4911", "HIGH", package="glibc", version="2.36-9", effective="CRITICAL"
    )

    found = evidence(env)  # sources unset: GAR's own scanner is read

    assert found.scan is not None and found.scan.scanner == "artifact-analysis"
    judged = verdict(found)
    assert judged.outcome is Outcome.FAILED
    (check,) = [c for c in judged.checks if c.name == "vulnerabilities"]
    assert check.outcome is CheckOutcome.FAIL and "CVE-2023-4911" in check.reason


def test_a_pending_scan_holds_the_image_pending(grafeas: FakeGrafeas, env: dict[str, str]) -> None:
    grafeas.set_discovery(URL, "SCANNING")
    found = evidence(env)
    assert (found.scan, found.scan_error, found.unavailable) == (None, None, ())
    assert verdict(found).outcome is Outcome.PENDING


# -- the occurrence stream ---------------------------------------------------------------------


def test_each_notification_leads_to_its_image_and_a_scan_event(
    grafeas: FakeGrafeas, env: dict[str, str]
) -> None:
    grafeas.set_discovery(URL, "SCANNING")
    grafeas.add_vulnerability(URL, "CVE-2023-4911", "HIGH", package="glibc", version="2.36-9")
    grafeas.set_discovery(URL, "FINISHED_SUCCESS")

    events = []
    for n, message in enumerate(grafeas.notifications):
        notice = parse_occurrence_notification(json.dumps(message).encode())
        assert notice.triggers
        image = image_of_occurrence(notice.name, env=env)
        assert image == str(IMAGE)
        events.append(scan_event(image, notice, f"msg-{n}"))

    assert [(e.kind, e.image, e.delivery_id) for e in events] == [
        (EventKind.SCANNED, IMAGE, f"msg-{n}") for n in range(3)
    ]


def test_occurrences_that_cannot_change_a_verdict_name_no_image(
    grafeas: FakeGrafeas, env: dict[str, str]
) -> None:
    build = grafeas.add_occurrence(
        PROJECT,
        {
            "resourceUri": URL,
            "noteName": f"projects/{PROJECT}/notes/build",
            "kind": "BUILD",
            "build": {"provenance": {"id": "b1"}},
        },
    )
    maven = grafeas.add_vulnerability(
        f"https://us-maven.pkg.dev/{PROJECT}/libs/com.google.guava:guava:31.0-jre",
        "CVE-2023-2976",
        "MEDIUM",
        package="guava",
        version="31.0",
    )
    gone = grafeas.add_vulnerability(URL, "CVE-2023-4911", "HIGH", package="glibc", version="2")
    grafeas.delete(gone)

    assert image_of_occurrence(build, env=env) is None  # a kind that changes no verdict
    assert image_of_occurrence(maven, env=env) is None  # not a container image
    assert image_of_occurrence(gone, env=env) is None  # deleted since its notification
    assert [r.raw_path for r in grafeas.requests] == [
        f"/v1/{name}" for name in (build, maven, gone)
    ]


def test_an_occurrence_lookup_that_keeps_failing_raises_for_a_redelivery(
    grafeas: FakeGrafeas, env: dict[str, str]
) -> None:
    name = grafeas.set_discovery(URL, "FINISHED_SUCCESS")
    grafeas.fail_next("GET", rf"/v1/{name}", 503, times=1)
    assert image_of_occurrence(name, env=env) == str(IMAGE)  # one 503: retried
    grafeas.fail_next("GET", rf"/v1/{name}", 500, times=10_000)
    with pytest.raises(RegistryError, match=f"occurrence {name}"):
        image_of_occurrence(name, env=env, deadline=0.3)
