"""Artifact Analysis occurrences → regwarden's models (pure), the occurrence stream's
notification, and the policy's `artifact-analysis` source on GAR.

Occurrences are written the way the REST API answers them (camelCase, enums by name,
proto3 defaults left out: an UNSPECIFIED severity or a false `fixAvailable` is simply
absent); shapes from grafeas `grafeas/v1/vulnerability.proto` and the handbook's events
reference §2.3.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regwarden.errors import IntakeError
from regwarden.model import EventKind, Severity
from regwarden.oci import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, Manifest
from regwarden.policy import Policy, check_support, load_policy_text, scan_sources
from regwarden.scanning import ScanFormatError, ScanStatus
from regwarden.scanning._grafeas import (
    UNSPECIFIED_FIX,
    discovery_state,
    image_of_resource_uri,
    parse_occurrence_notification,
    resource_url,
    scan_event,
    vulnerability_findings,
)
from regwarden.scanning.artifact_analysis import scanned_platform

DIGEST = "sha256:" + "6e" * 32
IMAGE = f"us-docker.pkg.dev/demo-proj/repo/team/app@{DIGEST}"
URL = f"https://{IMAGE}"
GAR = "us-docker.pkg.dev"
ANALYSIS = "projects/goog-analysis/notes/PACKAGE_VULNERABILITY"
HEAD = "apiVersion: regwarden/v1\nkind: Policy\n"


def load(body: str) -> Policy:
    return load_policy_text(HEAD + body, source="t.yaml", base_dir=Path("."))


def discovery(status: str | int | None, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"continuousAnalysis": "ACTIVE", **more}
    if status is not None:
        body["analysisStatus"] = status
    return {
        "name": "projects/demo-proj/occurrences/d1",
        "resourceUri": URL,
        "noteName": ANALYSIS,
        "kind": "DISCOVERY",
        "updateTime": "2026-03-01T10:00:00Z",
        "discovery": body,
    }


def vulnerability(
    issues: list[dict[str, Any]] | None = None, *, note: str = "CVE-2023-4911", **fields: Any
) -> dict[str, Any]:
    vuln: dict[str, Any] = {"type": "OS", "shortDescription": note, **fields}
    if issues is not None:
        vuln["packageIssue"] = issues
    return {
        "name": "projects/demo-proj/occurrences/v1",
        "resourceUri": URL,
        "noteName": f"projects/goog-vulnz/notes/{note}",
        "kind": "VULNERABILITY",
        "vulnerability": vuln,
    }


def issue(**fields: Any) -> dict[str, Any]:
    return {
        "affectedPackage": "glibc",
        "affectedVersion": {"name": "2.36", "revision": "9+deb12u1", "kind": "NORMAL"},
        "fixedVersion": {"kind": "MAXIMUM"},
        **fields,
    }


# -- discovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("occurrences", "status", "as_sent"),
    [
        ([], ScanStatus.PENDING, None),
        ([discovery("PENDING")], ScanStatus.PENDING, "PENDING"),
        ([discovery("SCANNING")], ScanStatus.PENDING, "SCANNING"),
        ([discovery(None)], ScanStatus.PENDING, "ANALYSIS_STATUS_UNSPECIFIED"),
        ([discovery("FINISHED_SUCCESS")], ScanStatus.SUCCEEDED, "FINISHED_SUCCESS"),
        ([discovery("COMPLETE")], ScanStatus.SUCCEEDED, "COMPLETE"),
        ([discovery(3)], ScanStatus.SUCCEEDED, "FINISHED_SUCCESS"),  # enum-encoding=int
        ([discovery("FINISHED_FAILED")], ScanStatus.FAILED, "FINISHED_FAILED"),
        ([discovery("FINISHED_UNSUPPORTED")], ScanStatus.FAILED, "FINISHED_UNSUPPORTED"),
        ([discovery("SOMETHING_NEW")], ScanStatus.FAILED, "SOMETHING_NEW"),  # never clean
    ],
)
def test_the_discovery_status_decides_pending_finished_or_failed(
    occurrences: list[dict[str, Any]], status: ScanStatus, as_sent: str | None
) -> None:
    state = discovery_state(occurrences, resource=URL)
    assert (state.status, state.analysis_status) == (status, as_sent)


def test_a_finished_scan_is_timed_by_its_last_scan_and_a_failure_says_why() -> None:
    done = discovery("FINISHED_SUCCESS", lastScanTime="2026-03-01T09:30:00.123456789Z")
    assert discovery_state([done]).scanned_at == datetime(2026, 3, 1, 9, 30, 0, 123456, UTC)
    # no lastScanTime: the occurrence's own update time
    assert discovery_state([discovery("COMPLETE")]).scanned_at == datetime(
        2026, 3, 1, 10, tzinfo=UTC
    )
    failed = discovery("FINISHED_FAILED", analysisStatusError={"code": 13, "message": "boom"})
    assert discovery_state([failed]).detail == "boom"


def test_the_vulnerability_scans_note_decides_and_several_are_read_cautiously() -> None:
    sbom = {**discovery("FINISHED_FAILED"), "noteName": "projects/goog-analysis/notes/SBOM"}
    # the vulnerability scan's own note decides; another discovery's failure does not
    assert discovery_state([sbom, discovery("FINISHED_SUCCESS")]).status is ScanStatus.SUCCEEDED
    # a look-alike note in another project cannot declare an unfinished scan finished
    forged = {
        **discovery("FINISHED_SUCCESS"),
        "noteName": "projects/evil/notes/PACKAGE_VULNERABILITY",
    }
    assert discovery_state([forged, discovery("SCANNING")]).status is ScanStatus.PENDING
    assert discovery_state(
        [discovery("FINISHED_SUCCESS"), discovery("FINISHED_FAILED")]
    ).status is (ScanStatus.FAILED)


def test_an_occurrence_of_another_image_is_an_error_never_merged() -> None:
    other = {**discovery("FINISHED_SUCCESS"), "resourceUri": URL.replace("6e", "7f")}
    with pytest.raises(ScanFormatError, match=r"\[0\]\.resourceUri: got .*expected the requested"):
        discovery_state([other], resource=URL)
    with pytest.raises(ScanFormatError, match="resourceUri"):
        vulnerability_findings(
            [{**vulnerability([issue()]), "resourceUri": "https://x/y/z"}], resource=URL
        )


# -- vulnerabilities ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issue_severity", "overall", "nvd", "expected"),
    [
        ("CRITICAL", "LOW", "MEDIUM", Severity.CRITICAL),  # the package issue's rating wins
        (None, "LOW", "HIGH", Severity.LOW),  # then the occurrence's effectiveSeverity
        (None, None, "HIGH", Severity.HIGH),  # then the note's (NVD) severity
        ("SEVERITY_UNSPECIFIED", "SEVERITY_UNSPECIFIED", "MEDIUM", Severity.MEDIUM),
        (None, None, None, Severity.UNKNOWN),  # unspecified everywhere
        ("SEVERITY_UNSPECIFIED", None, "SEVERITY_UNSPECIFIED", Severity.UNKNOWN),
        ("MINIMAL", None, "HIGH", Severity.NEGLIGIBLE),
        (None, "MINIMAL", None, Severity.NEGLIGIBLE),
        (5, None, None, Severity.CRITICAL),  # enum-encoding=int
    ],
)
def test_severity_prefers_the_effective_ratings(
    issue_severity: str | int | None, overall: str | None, nvd: str | None, expected: Severity
) -> None:
    fields: dict[str, Any] = {}
    if overall is not None:
        fields["effectiveSeverity"] = overall
    if nvd is not None:
        fields["severity"] = nvd
    one = issue() if issue_severity is None else issue(effectiveSeverity=issue_severity)
    (finding,) = vulnerability_findings([vulnerability([one], **fields)])
    assert finding.severity is expected


def test_an_unknown_severity_name_is_an_error_naming_its_path() -> None:
    with pytest.raises(
        ScanFormatError, match=r"packageIssue\[0\]\.effectiveSeverity: got 'SEVERE'"
    ):
        vulnerability_findings([vulnerability([issue(effectiveSeverity="SEVERE")])])


@pytest.mark.parametrize(
    ("fixed", "flags", "expected"),
    [
        ({"kind": "MAXIMUM"}, {}, None),  # grafeas: no version fixes it
        ({"kind": "MAXIMUM"}, {"fixAvailable": True}, None),  # MAXIMUM wins
        (
            {
                "name": "2.36",
                "revision": "9+deb12u3",
                "kind": "NORMAL",
                "fullName": "2.36-9+deb12u3",
            },
            {"fixAvailable": True},
            "2.36-9+deb12u3",
        ),
        ({"name": "2.36", "revision": "9+deb12u3", "kind": "NORMAL"}, {}, "2.36-9+deb12u3"),
        ({"epoch": 1, "name": "2.36", "kind": "NORMAL"}, {}, "1:2.36"),
        ({"name": "2.36", "kind": "NORMAL"}, {"fixAvailable": False}, None),
        (None, {"fixAvailable": True}, UNSPECIFIED_FIX),  # a fix, version not named
        (None, {}, None),
    ],
)
def test_fix_availability(
    fixed: dict[str, Any] | None, flags: dict[str, Any], expected: str | None
) -> None:
    one = issue(**flags)
    if fixed is None:
        one.pop("fixedVersion")
    else:
        one["fixedVersion"] = fixed
    (finding,) = vulnerability_findings([vulnerability([one])])
    assert finding.fixed_version == expected
    assert finding.fixable is (expected is not None)


def test_a_finding_carries_id_package_versions_score_title_and_link() -> None:
    occurrence = vulnerability(
        [
            issue(
                affectedVersion={
                    "name": "2.36",
                    "revision": "9",
                    "kind": "NORMAL",
                    "fullName": "2.36-9",
                },
                effectiveSeverity="HIGH",
            ),
            issue(affectedPackage="libc-bin", effectiveSeverity="HIGH"),
        ],
        severity="HIGH",
        cvssScore=7.8,
        cvssv3={"baseScore": 7.8},
        longDescription="NIST vectors: CVSS:3.1/AV:L\nmore",
        relatedUrls=[{"url": "https://security-tracker.debian.org/tracker/CVE-2023-4911"}],
    )
    first, second = vulnerability_findings([occurrence], resource=URL)
    assert (first.id, first.package, first.installed_version) == (
        "CVE-2023-4911",
        "glibc",
        "2.36-9",
    )
    assert (second.package, second.installed_version) == ("libc-bin", "2.36-9+deb12u1")
    assert first.cvss == 7.8 and first.title == "NIST vectors: CVSS:3.1/AV:L"
    assert first.url == "https://security-tracker.debian.org/tracker/CVE-2023-4911"


def test_the_score_falls_back_to_cvss_v3_then_v2_and_zero_is_unset() -> None:
    v3 = vulnerability([issue()], cvssv3={"baseScore": 9.8})
    v2 = vulnerability([issue()], cvssScore=0, cvssV2={"baseScore": 5.0})
    none = vulnerability([issue()])
    assert [f.cvss for f in vulnerability_findings([v3, v2, none])] == [9.8, 5.0, None]
    with pytest.raises(ScanFormatError, match="cvssScore: got 11"):
        vulnerability_findings([vulnerability([issue()], cvssScore=11)])


def test_an_occurrence_without_package_issues_is_one_finding_and_needs_an_id() -> None:
    (finding,) = vulnerability_findings([vulnerability(None, severity="CRITICAL")])
    assert (finding.id, finding.package, finding.severity) == (
        "CVE-2023-4911",
        "",
        Severity.CRITICAL,
    )
    anonymous = vulnerability([issue()])
    anonymous.pop("noteName")
    anonymous["vulnerability"]["shortDescription"] = "CVE-2024-1"
    assert vulnerability_findings([anonymous])[0].id == "CVE-2024-1"
    anonymous["vulnerability"].pop("shortDescription")
    with pytest.raises(ScanFormatError, match=r"noteName or vulnerability\.shortDescription"):
        vulnerability_findings([anonymous])


def test_only_vulnerability_occurrences_make_findings() -> None:
    with pytest.raises(ScanFormatError, match=r"\[0\]\.kind: got 'DISCOVERY'"):
        vulnerability_findings([discovery("FINISHED_SUCCESS")])


# -- resource URLs -------------------------------------------------------------------------------


def test_resource_urls_round_trip_to_image_references() -> None:
    assert resource_url(GAR, "demo-proj/repo/team/app", DIGEST) == URL
    assert image_of_resource_uri(URL) == IMAGE
    assert image_of_resource_uri(IMAGE) == IMAGE  # written through the API without https://
    assert image_of_resource_uri(f"https://gcr.io/demo-proj/app@{DIGEST}") == (
        f"gcr.io/demo-proj/app@{DIGEST}"
    )


@pytest.mark.parametrize(
    "uri",
    [
        "https://us-docker.pkg.dev/demo-proj/repo/app:1.0",  # a tag, not a digest
        f"https://us-docker.pkg.dev/demo-proj/repo/app:1.0@{DIGEST}",
        "https://us-maven.pkg.dev/demo-proj/repo/com.google.guava:guava:31.0-jre",
        f"demo-proj/repo/app@{DIGEST}",  # no registry host
        "projects/demo-proj/locations/us/repositories/repo",
        "",
        "https://us-docker.pkg.dev/demo-proj/repo/app@sha256:short",
    ],
)
def test_resources_that_are_not_an_image_by_digest_name_none(uri: str) -> None:
    assert image_of_resource_uri(uri) is None


# -- the occurrence stream ---------------------------------------------------------------------


def test_a_notification_parses_and_says_whether_it_triggers() -> None:
    # the recorded sample (events reference §2.3)
    data = (
        b'{"name":"projects/baseimgfct-oingo-staging-62/occurrences/'
        b'806f4b88-a1e7-4f1f-a424-df79912804bb","kind":"VULNERABILITY",'
        b'"notificationTime":"2021-07-02T16:11:17.421306Z"}'
    )
    notice = parse_occurrence_notification(data)
    assert notice.name.endswith("/occurrences/806f4b88-a1e7-4f1f-a424-df79912804bb")
    assert notice.kind == "VULNERABILITY" and notice.triggers
    assert notice.notification_time == datetime(2021, 7, 2, 16, 11, 17, 421306, UTC)
    for kind, triggers in [("DISCOVERY", True), ("BUILD", False), ("ATTESTATION", False)]:
        body = {
            "name": "projects/p/occurrences/1",
            "kind": kind,
            "notificationTime": "2026-01-01T00:00:00Z",
        }
        assert parse_occurrence_notification(json.dumps(body).encode()).triggers is triggers


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "got a list, expected an object"),
        (b'{"kind":"VULNERABILITY","notificationTime":"2026-01-01T00:00:00Z"}', "at name"),
        (
            b'{"name":"projects/p/notes/CVE-1","kind":"VULNERABILITY","notificationTime":"2026-01-01T00:00:00Z"}',
            "expected an occurrence name",
        ),
        (
            b'{"name":"projects/p/occurrences/1","notificationTime":"2026-01-01T00:00:00Z"}',
            "at kind",
        ),
        (b'{"name":"projects/p/occurrences/1","kind":"VULNERABILITY"}', "at notificationTime"),
    ],
)
def test_a_malformed_notification_is_an_intake_error_naming_the_field(
    data: bytes, message: str
) -> None:
    with pytest.raises(IntakeError, match=message):
        parse_occurrence_notification(data)


def test_scan_event_is_a_scanned_event_by_digest_with_the_message_id() -> None:
    notice = parse_occurrence_notification(
        b'{"name":"projects/demo-proj/occurrences/1","kind":"DISCOVERY",'
        b'"notificationTime":"2026-01-01T00:00:00Z"}'
    )
    event = scan_event(IMAGE, notice, "8501243592")
    assert event.kind is EventKind.SCANNED and event.source == "gcp.containeranalysis"
    assert str(event.image) == IMAGE and event.delivery_id == "8501243592"
    assert event.time == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(IntakeError, match="expected a reference by digest"):
        scan_event("us-docker.pkg.dev/demo-proj/repo/app:1", notice, "1")
    with pytest.raises(IntakeError, match="empty message id"):
        scan_event(IMAGE, notice, " ")


# -- the policy ------------------------------------------------------------------------------------


def test_artifact_analysis_is_gars_own_scanner_and_is_read_only_there() -> None:
    listed = f"registries:\n  - {{host: {GAR}, kind: gar}}\n"
    unset = "defaults:\n  vulnerabilities: {maxSeverity: high}\n"
    policy = load(listed + unset)
    effective = policy.for_repository("demo-proj/repo/app")
    assert scan_sources(effective, policy, GAR) == ("artifact-analysis",)
    # unlisted, a GAR host is still GAR by its name
    bare = load(unset)
    assert scan_sources(bare.for_repository("x/y/z"), bare, "europe-docker.pkg.dev") == (
        "artifact-analysis",
    )
    named = "defaults:\n  vulnerabilities: {maxSeverity: high, sources: [artifact-analysis]}\n"
    policy = load(named)
    assert [p.message for p in check_support(policy, registry=GAR)] == []
    (problem,) = check_support(policy, registry="123456789012.dkr.ecr.eu-west-1.amazonaws.com")
    assert "cannot serve scan source 'artifact-analysis'" in problem.message
    defender = "defaults:\n  vulnerabilities: {maxSeverity: high, sources: [defender]}\n"
    assert check_support(load(defender)) == []  # read on ACR
    (refused,) = check_support(load(defender), registry=GAR)
    assert "cannot serve scan source 'defender'" in refused.message


# -- which image of an index Artifact Analysis scans -------------------------------------------


def _index(*entries: tuple[str, str, dict[str, str] | None]) -> Manifest:
    """An index listing (media type, digest byte, platform) entries."""
    data = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {"mediaType": media, "digest": "sha256:" + byte * 32, "size": 1}
            | ({"platform": platform} if platform is not None else {})
            for media, byte, platform in entries
        ],
    }
    return Manifest.parse(json.dumps(data).encode())


def test_the_scanned_image_is_the_first_linux_amd64_image_the_index_lists() -> None:
    index = _index(
        (DOCKER_MANIFEST, "a1", {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        (OCI_INDEX, "b2", {"os": "linux", "architecture": "amd64"}),  # an index: no image
        (DOCKER_MANIFEST, "c3", {"os": "windows", "architecture": "amd64"}),
        (DOCKER_MANIFEST, "d4", {"os": "linux", "architecture": "amd64", "variant": "v3"}),
        (DOCKER_MANIFEST, "e5", {"os": "linux", "architecture": "amd64"}),
        (OCI_MANIFEST, "f6", {"os": "unknown", "architecture": "unknown"}),  # an attestation
    )
    chosen = scanned_platform(index)
    assert chosen is not None and chosen.digest == "sha256:" + "d4" * 32


@pytest.mark.parametrize(
    "platform",
    [None, {"os": "linux", "architecture": "arm64"}, {"os": "windows", "architecture": "amd64"}],
)
def test_an_index_with_no_linux_amd64_image_has_no_scanned_image(
    platform: dict[str, str] | None,
) -> None:
    assert scanned_platform(_index((DOCKER_MANIFEST, "a1", platform))) is None
