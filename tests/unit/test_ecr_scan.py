"""ECR scan normalisation: basic and enhanced describe_image_scan_findings pages and
inspector2 findings → ScanReport; statuses; errors naming the path; fuzzing."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regwarden.errors import IntakeError
from regwarden.model import Severity
from regwarden.scanning import ScanFormatError, ScanStatus
from regwarden.scanning.ecr import (
    PENDING_STATUSES,
    SCANNER_BASIC,
    SCANNER_ENHANCED,
    SUCCESS_STATUSES,
    ecr_scan_result,
    inspector_report,
)

REPO_ARN = "arn:aws:ecr:us-east-2:123456789012:repository/amazon/amazon-ecs-sample"
DIGEST = "sha256:256531371d0ca8da6d1aa13ad63579f887a1c5e8e2de25136bface4e3e13ccd4"


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def basic_page() -> dict[str, Any]:
    """describe_image_scan_findings, basic scanning (shape from events.md §1.5), as boto3
    returns it (timestamps already datetimes)."""
    return {
        "registryId": "123456789012",
        "repositoryName": "golang_example-codemash",
        "imageId": {"imageDigest": DIGEST, "imageTag": "0.1.20"},
        "imageScanStatus": {"status": "COMPLETE", "description": "The scan was completed."},
        "imageScanFindings": {
            "imageScanCompletedAt": datetime(2021, 9, 11, 23, 31, 43, tzinfo=UTC),
            "vulnerabilitySourceUpdatedAt": datetime(2021, 9, 11, 16, 24, 26, tzinfo=UTC),
            "findingSeverityCounts": {"MEDIUM": 1},
            "findings": [
                {
                    "name": "CVE-2021-30139",
                    "description": "In Alpine Linux apk-tools before 2.12.5 …\nsecond line",
                    "uri": "https://cve.mitre.org/cgi-bin/cvename.cgi?name=CVE-2021-30139",
                    "severity": "MEDIUM",
                    "attributes": [
                        {"key": "package_version", "value": "2.10.5-r1"},
                        {"key": "package_name", "value": "apk-tools"},
                        {"key": "CVSS2_VECTOR", "value": "AV:N/AC:L/Au:N/C:N/I:N/A:P"},
                        {"key": "CVSS2_SCORE", "value": "5"},
                    ],
                }
            ],
        },
    }


def enhanced_finding(**overrides: Any) -> dict[str, Any]:
    """One enhancedFindings[] item (shape from events.md §1.5)."""
    finding: dict[str, Any] = {
        "awsAccountId": "123456789012",
        "description": "A flaw in libssh2 …",
        "findingArn": "arn:aws:inspector2:us-east-2:123456789012:finding/abc",
        "firstObservedAt": datetime(2021, 12, 3, 18, 2, 30, tzinfo=UTC),
        "lastObservedAt": datetime(2021, 12, 3, 18, 2, 30, tzinfo=UTC),
        "packageVulnerabilityDetails": {
            "cvss": [
                {
                    "baseScore": 6.5,
                    "scoringVector": "CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:N/A:N",
                    "source": "REDHAT_CVE",
                    "version": "3.0",
                }
            ],
            "referenceUrls": ["https://access.redhat.com/errata/RHSA-2020:3915"],
            "relatedVulnerabilities": [],
            "source": "REDHAT_CVE",
            "sourceUrl": "https://access.redhat.com/security/cve/CVE-2019-17498",
            "vendorSeverity": "Moderate",
            "vulnerabilityId": "CVE-2019-17498",
            "vulnerablePackages": [
                {
                    "arch": "X86_64",
                    "epoch": 0,
                    "fixedInVersion": "0:1.4.3-12.amzn2.2.1",
                    "name": "libssh2",
                    "packageManager": "OS",
                    "release": "12.amzn2.2",
                    "version": "1.4.3",
                }
            ],
        },
        "remediation": {"recommendation": {"text": "Update all packages."}},
        "resources": [
            {
                "details": {
                    "awsEcrContainerImage": {
                        "architecture": "amd64",
                        "imageHash": DIGEST,
                        "imageTags": ["latest"],
                        "platform": "AMAZON_LINUX_2",
                        "registry": "123456789012",
                        "repositoryName": "amazon/amazon-ecs-sample",
                    }
                },
                "id": f"{REPO_ARN}/{DIGEST}",
                "type": "AWS_ECR_CONTAINER_IMAGE",
            }
        ],
        "score": 6.5,
        "scoreDetails": {"cvss": {"adjustments": [], "score": 6.5, "version": "3.0"}},
        "severity": "MEDIUM",
        "status": "ACTIVE",
        "title": "CVE-2019-17498 - libssh2",
        "type": "PACKAGE_VULNERABILITY",
        "updatedAt": datetime(2021, 12, 3, 18, 2, 30, tzinfo=UTC),
        "fixAvailable": "YES",
        "exploitAvailable": "NO",
    }
    finding.update(overrides)
    return finding


def enhanced_page(findings: list[dict[str, Any]], status: str = "ACTIVE") -> dict[str, Any]:
    return {
        "registryId": "123456789012",
        "repositoryName": "amazon/amazon-ecs-sample",
        "imageId": {"imageDigest": DIGEST},
        "imageScanStatus": {"status": status, "description": "Continuous scan is selected."},
        "imageScanFindings": {"enhancedFindings": findings, "findingSeverityCounts": {}},
    }


def test_basic_findings_map_every_field() -> None:
    page = basic_page()
    raw = page["imageScanFindings"]["findings"][0]
    attrs = {a["key"]: a["value"] for a in raw["attributes"]}
    result = ecr_scan_result([page], digest=DIGEST)
    assert result.status is ScanStatus.SUCCEEDED and result.ecr_status == "COMPLETE"
    report = result.report
    assert report is not None
    assert report.digest == DIGEST and report.scanner == SCANNER_BASIC
    assert report.scanned_at == page["imageScanFindings"]["imageScanCompletedAt"]
    (finding,) = report.findings
    assert finding.id == raw["name"]
    assert finding.severity is Severity.parse(raw["severity"])
    assert finding.package == attrs["package_name"]
    assert finding.installed_version == attrs["package_version"]
    assert finding.cvss == float(attrs["CVSS2_SCORE"])
    assert finding.url == raw["uri"]
    assert finding.title == raw["description"].splitlines()[0]
    assert finding.fixed_version is None and not finding.fixable  # basic scans name no fix


def test_basic_prefers_cvss3_and_maps_informational_and_undefined() -> None:
    page = basic_page()
    item = page["imageScanFindings"]["findings"][0]
    item["attributes"].append({"key": "CVSS3_SCORE", "value": "7.1"})
    extra = copy.deepcopy(item) | {"name": "CVE-2000-0001", "severity": "INFORMATIONAL"}
    undefined = copy.deepcopy(item) | {"name": "CVE-2000-0002", "severity": "UNDEFINED"}
    page["imageScanFindings"]["findings"] += [extra, undefined]
    report = ecr_scan_result([page], digest=DIGEST).report
    assert report is not None
    assert [f.cvss for f in report.findings] == [7.1, 7.1, 7.1]
    assert [f.severity for f in report.findings] == [
        Severity.MEDIUM,
        Severity.NEGLIGIBLE,
        Severity.UNKNOWN,
    ]


def test_enhanced_finding_one_per_package() -> None:
    second = {
        "name": "libssh2-devel",
        "version": "1.4.3",
        "fixedInVersion": "NotAvailable",
        "epoch": 0,
    }
    finding = enhanced_finding()
    finding["packageVulnerabilityDetails"]["vulnerablePackages"].append(second)
    report = ecr_scan_result([enhanced_page([finding])], digest=DIGEST).report
    assert report is not None and report.scanner == SCANNER_ENHANCED
    first_pkg = finding["packageVulnerabilityDetails"]["vulnerablePackages"][0]
    a, b = report.findings
    assert a.id == b.id == finding["packageVulnerabilityDetails"]["vulnerabilityId"]
    assert (a.package, b.package) == (first_pkg["name"], second["name"])
    assert a.installed_version == f"{first_pkg['version']}-{first_pkg['release']}"
    assert b.installed_version == second["version"]
    assert a.fixed_version == first_pkg["fixedInVersion"] and a.fixable
    assert b.fixed_version is None  # "NotAvailable" is not a version
    assert a.cvss == finding["score"]
    assert a.severity is Severity.MEDIUM and not a.exploit_available
    assert a.title == finding["title"]
    assert a.url == finding["packageVulnerabilityDetails"]["sourceUrl"]


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        ({"severity": "UNTRIAGED"}, lambda f: f.severity is Severity.UNKNOWN),
        ({"fixAvailable": "NO"}, lambda f: f.fixed_version is None),
        ({"exploitAvailable": "YES"}, lambda f: f.exploit_available),
        ({"score": None, "scoreDetails": None}, lambda f: f.cvss == 6.5),  # from cvss[]
        ({"score": None, "inspectorScore": 9.8}, lambda f: f.cvss == 9.8),
        ({"severity": "CRITICAL"}, lambda f: f.severity is Severity.CRITICAL),
    ],
)
def test_enhanced_field_rules(overrides: dict[str, Any], check: Any) -> None:
    finding = enhanced_finding(**{k: v for k, v in overrides.items() if v is not None})
    for key, value in overrides.items():
        if value is None:
            finding.pop(key)
    report = ecr_scan_result([enhanced_page([finding])], digest=DIGEST).report
    assert report is not None and report.findings
    assert all(check(f) for f in report.findings)


def test_suppressed_and_closed_findings_are_left_out() -> None:
    findings = [
        enhanced_finding(),
        enhanced_finding(status="SUPPRESSED", title="CVE-1 - x"),
        enhanced_finding(status="CLOSED", title="CVE-2 - y"),
    ]
    report = ecr_scan_result([enhanced_page(findings)], digest=DIGEST).report
    assert report is not None and len(report.findings) == 1


def test_pages_are_merged() -> None:
    first = basic_page()
    second = basic_page()
    second["imageScanFindings"]["findings"][0]["name"] = "CVE-2099-0001"
    del second["imageScanStatus"]  # later pages need not repeat the status
    report = ecr_scan_result([first, second], digest=DIGEST).report
    assert report is not None
    assert [f.id for f in report.findings] == ["CVE-2021-30139", "CVE-2099-0001"]


@pytest.mark.parametrize(
    "status",
    sorted(
        PENDING_STATUSES
        | SUCCESS_STATUSES
        | {
            "FAILED",
            "UNSUPPORTED_IMAGE",
            "SCAN_ELIGIBILITY_EXPIRED",
            "FINDINGS_UNAVAILABLE",
            "LIMIT_EXCEEDED",
            "SOMETHING_NEW",
        }
    ),
)
def test_status_mapping(status: str) -> None:
    page = basic_page()
    page["imageScanStatus"] = {"status": status, "description": f"status {status}"}
    result = ecr_scan_result([page], digest=DIGEST)
    assert result.ecr_status == status and result.description == f"status {status}"
    if status in SUCCESS_STATUSES:
        assert result.status is ScanStatus.SUCCEEDED and result.report is not None
    elif status in PENDING_STATUSES:
        assert result.status is ScanStatus.PENDING and result.report is None
    else:  # fail closed: never a report that could read as clean
        assert result.status is ScanStatus.FAILED and result.report is None


def test_complete_scan_without_findings_is_an_empty_report() -> None:
    page = basic_page()
    page["imageScanFindings"]["findings"] = []
    report = ecr_scan_result([page], digest=DIGEST).report
    assert report is not None and report.findings == ()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda p: p["imageScanFindings"]["findings"][0].update({"severity": 7}),
            r"at imageScanFindings\.findings\[0\]\.severity: got 7, expected a string",
        ),
        (
            lambda p: p["imageScanFindings"]["findings"][0].update({"severity": "SEVERE"}),
            r"findings\[0\]\.severity: got 'SEVERE', expected a severity, one of",
        ),
        (
            lambda p: p["imageScanFindings"]["findings"][0].pop("name"),
            r"findings\[0\]\.name: got nothing \(the key is missing\), expected a string",
        ),
        (
            lambda p: p["imageScanFindings"]["findings"][0]["attributes"].append(
                {"key": "CVSS3_SCORE", "value": "high"}
            ),
            r"findings\[0\]\.attributes: got 'high', expected a number in attribute CVSS3_SCORE",
        ),
        (
            lambda p: p["imageId"].update({"imageDigest": digest_of("other")}),
            r"at imageId\.imageDigest: got 'sha256:.*', expected the requested digest",
        ),
        (
            lambda p: p.pop("imageScanStatus"),
            r"at imageScanStatus\.status: got nothing|at imageScanStatus: got nothing",
        ),
        (
            lambda p: p["imageScanFindings"].update({"findings": {"a": 1}}),
            r"at imageScanFindings\.findings: got an object, expected a list",
        ),
    ],
)
def test_malformed_pages_name_the_path(change: Any, match: str) -> None:
    page = basic_page()
    change(page)
    with pytest.raises(ScanFormatError, match=match) as info:
        ecr_scan_result([page], digest=DIGEST)
    assert str(info.value).startswith("invalid ECR scan findings (page 1)")


def test_bad_digest_argument_and_no_pages() -> None:
    with pytest.raises(ScanFormatError, match="invalid image digest: got 'latest'"):
        ecr_scan_result([basic_page()], digest="latest")
    with pytest.raises(ScanFormatError, match="no pages"):
        ecr_scan_result([], digest=DIGEST)


def test_enhanced_without_id_or_title_is_an_error() -> None:
    finding = enhanced_finding()
    del finding["packageVulnerabilityDetails"]["vulnerabilityId"]
    del finding["title"]
    with pytest.raises(
        ScanFormatError, match=r"enhancedFindings\[0\]\.packageVulnerabilityDetails"
    ):
        ecr_scan_result([enhanced_page([finding])], digest=DIGEST)


# -- inspector2 list_findings ------------------------------------------------------------------


def test_inspector_report_from_event_style_finding() -> None:
    """The Inspector2 Finding shape (events.md §1.3): non-ISO timestamps, inspectorScore."""
    finding = enhanced_finding(
        firstObservedAt="Wed Sep 04 16:55:38.411 UTC 2024",
        lastObservedAt="Wed Sep 04 16:55:38.411 UTC 2024",
        updatedAt="Wed Sep 04 16:55:38.411 UTC 2024",
        inspectorScore=7.5,
    )
    del finding["score"], finding["scoreDetails"]
    report = inspector_report([finding], digest=DIGEST)
    assert report.scanner == SCANNER_ENHANCED and report.scanned_at is None
    assert report.findings[0].cvss == 7.5


def test_inspector_report_takes_latest_update_time() -> None:
    early = enhanced_finding(updatedAt=datetime(2024, 1, 1, tzinfo=UTC))
    late = enhanced_finding(updatedAt=datetime(2024, 3, 1, tzinfo=UTC), title="CVE-2 - z")
    late["packageVulnerabilityDetails"] = copy.deepcopy(late["packageVulnerabilityDetails"])
    late["packageVulnerabilityDetails"]["vulnerabilityId"] = "CVE-2024-0002"
    report = inspector_report([early, late], digest=DIGEST)
    assert report.scanned_at == datetime(2024, 3, 1, tzinfo=UTC)
    assert {f.id for f in report.findings} == {"CVE-2019-17498", "CVE-2024-0002"}


def test_inspector_finding_for_another_image_is_an_error() -> None:
    finding = enhanced_finding()
    other = digest_of("other image")
    finding["resources"][0]["details"]["awsEcrContainerImage"]["imageHash"] = other
    with pytest.raises(
        ScanFormatError,
        match=r"at \[0\]\.resources\[0\]\.details\.awsEcrContainerImage\.imageHash: got",
    ):
        inspector_report([finding], digest=DIGEST)


# -- fuzzing ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=15,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: object) -> None:
    for step in path[:-1]:
        doc = doc[step]
    doc[path[-1]] = value


def _only_scan_errors(call: Any) -> None:
    error: Exception | None = None
    try:
        call()
    except IntakeError as exc:  # ScanFormatError is an IntakeError
        error = exc
    if error is not None:
        assert isinstance(error, ScanFormatError)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["basic", "enhanced"]),
    pick=st.integers(min_value=0, max_value=10_000),
    value=json_values,
)
def test_fuzz_pages(kind: str, pick: int, value: object) -> None:
    page = basic_page() if kind == "basic" else enhanced_page([enhanced_finding()])
    paths = _paths(page)
    _replace(page, paths[pick % len(paths)], value)
    _only_scan_errors(lambda: ecr_scan_result([page], digest=DIGEST))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pick=st.integers(min_value=0, max_value=10_000), value=json_values)
def test_fuzz_inspector(pick: int, value: object) -> None:
    findings = [enhanced_finding()]
    paths = _paths(findings)
    _replace(findings, paths[pick % len(paths)], value)
    _only_scan_errors(lambda: inspector_report(findings, digest=DIGEST))


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_fuzz_whole_page(value: object) -> None:
    _only_scan_errors(lambda: ecr_scan_result([value], digest=DIGEST))  # type: ignore[list-item]
