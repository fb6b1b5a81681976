"""ECR scans against moto in server mode: start_image_scan, describe_image_scan_findings
(results configured through moto's findings API), inspector2 list_findings, and the
`EcrScanSource` the push gate calls. Paging goes through `EcrLimitsProxy`, which applies
ECR's and Inspector's page limits that moto ignores."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from support import ecr_registry as ecr_support
from support import moto_server as support
from support.moto_server import (
    ACCOUNT,
    REGISTRY_HOST,
    EcrLimitsProxy,
    MotoServer,
    oci_manifest,
    put_manifest,
    watch,
)

from regwarden.model import Severity
from regwarden.providers.ecr import EcrRegistry
from regwarden.reference import ImageRef
from regwarden.scanning import ScanStatus
from regwarden.scanning.ecr import (
    DESCRIBE_FINDINGS_PAGE_SIZE,
    INSPECTOR_PAGE_SIZE,
    SCANNER_BASIC,
    SCANNER_ENHANCED,
    EcrScanFailed,
    EcrScanSource,
    describe_image_scan,
    list_inspector_findings,
    start_image_scan,
)

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy
ecr = ecr_support.ecr
registry = ecr_support.registry

pytestmark = pytest.mark.integration

SCANNED_AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def image(ecr: Any, repository: str, seed: str, *, scan_on_push: bool = False) -> str:
    ecr.create_repository(
        repositoryName=repository, imageScanningConfiguration={"scanOnPush": scan_on_push}
    )
    raw, _ = oci_manifest(seed)
    return put_manifest(ecr, repository, raw, tag="v1")


def basic_result(repository: str, digest: str, findings: list[dict[str, Any]]) -> dict[str, Any]:
    """A describe_image_scan_findings answer for moto to return (wire JSON: epoch seconds)."""
    return {
        "registryId": ACCOUNT,
        "repositoryName": repository,
        "imageId": {"imageDigest": digest},
        "imageScanStatus": {"status": "COMPLETE", "description": "The scan was completed."},
        "imageScanFindings": {
            "imageScanCompletedAt": SCANNED_AT.timestamp(),
            "findingSeverityCounts": {},
            "findings": findings,
        },
    }


def basic_finding(n: int, severity: str) -> dict[str, Any]:
    return {
        "name": f"CVE-2024-{n:05d}",
        "uri": f"https://cve.example/CVE-2024-{n:05d}",
        "severity": severity,
        "attributes": [
            {"key": "package_name", "value": f"pkg{n}"},
            {"key": "package_version", "value": f"1.{n}"},
            {"key": "CVSS3_SCORE", "value": "7.5"},
        ],
    }


def enhanced_finding(n: int, digest: str, repository: str) -> dict[str, Any]:
    return {
        "awsAccountId": ACCOUNT,
        "findingArn": f"arn:aws:inspector2:us-east-1:{ACCOUNT}:finding/{n}",
        "description": f"finding {n}",
        "packageVulnerabilityDetails": {
            "vulnerabilityId": f"CVE-2025-{n:05d}",
            "source": "NVD",
            "sourceUrl": f"https://nvd.example/CVE-2025-{n:05d}",
            "cvss": [{"baseScore": 5.0, "scoringVector": "x", "source": "NVD", "version": "3.1"}],
            "vulnerablePackages": [
                {"name": f"lib{n}", "version": "2.0", "fixedInVersion": "2.1", "epoch": 0}
            ],
        },
        "resources": [
            {
                "id": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{repository}/{digest}",
                "type": "AWS_ECR_CONTAINER_IMAGE",
                "details": {
                    "awsEcrContainerImage": {
                        "imageHash": digest,
                        "registry": ACCOUNT,
                        "repositoryName": repository,
                    }
                },
            }
        ],
        "severity": ["LOW", "MEDIUM", "HIGH", "CRITICAL", "UNTRIAGED"][n % 5],
        "status": "ACTIVE",
        "title": f"CVE-2025-{n:05d} - lib{n}",
        "type": "PACKAGE_VULNERABILITY",
        "fixAvailable": "YES",
        "exploitAvailable": "YES" if n % 7 == 0 else "NO",
        "updatedAt": SCANNED_AT.timestamp(),
        "firstObservedAt": SCANNED_AT.timestamp(),
        "lastObservedAt": SCANNED_AT.timestamp(),
    }


def test_source_starts_a_scan_then_reads_the_configured_findings(
    registry: EcrRegistry, ecr: Any, moto: MotoServer
) -> None:
    digest = image(ecr, "scan/manual", "manual")
    ref = ImageRef.parse(f"{REGISTRY_HOST}/scan/manual@{digest}")
    source = EcrScanSource()
    calls = watch(registry.client)
    starts = watch(registry.no_retry_client)
    assert source(registry, ref) is None  # never scanned: PENDING, and a scan was started
    assert starts.count("StartImageScan") == 1
    assert starts.of("StartImageScan")[0]["imageId"] == {"imageDigest": digest}

    findings = [basic_finding(1, "CRITICAL"), basic_finding(2, "INFORMATIONAL")]
    moto.set_ecr_scan_findings(basic_result("scan/manual", digest, findings))
    report = source(registry, ref)
    assert report is not None
    assert report.digest == digest and report.scanner == SCANNER_BASIC
    assert report.scanned_at == SCANNED_AT
    assert [f.id for f in report.findings] == [f["name"] for f in findings]
    assert [f.severity for f in report.findings] == [Severity.CRITICAL, Severity.NEGLIGIBLE]
    assert [f.package for f in report.findings] == ["pkg1", "pkg2"]
    assert all(f.cvss == 7.5 for f in report.findings)
    assert starts.count("StartImageScan") == 1  # not started again
    (request,) = calls.of("DescribeImageScanFindings")[-1:]
    assert request["maxResults"] == DESCRIBE_FINDINGS_PAGE_SIZE


def test_scan_on_push_repository_is_never_started_by_hand(registry: EcrRegistry, ecr: Any) -> None:
    digest = image(ecr, "scan/onpush", "onpush", scan_on_push=True)
    ref = ImageRef.parse(f"{REGISTRY_HOST}/scan/onpush@{digest}")
    calls = watch(registry.no_retry_client)
    assert EcrScanSource()(registry, ref) is None
    assert calls.count("StartImageScan") == 0


def test_second_manual_scan_the_same_day_is_not_an_error(registry: EcrRegistry, ecr: Any) -> None:
    digest = image(ecr, "scan/twice", "twice")
    client = registry.no_retry_client
    calls = watch(client)
    assert start_image_scan(client, "scan/twice", digest) is True
    assert start_image_scan(client, "scan/twice", digest) is False  # LimitExceededException
    assert calls.count("StartImageScan") == 2  # one request each: no retry storm
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert client.meta.endpoint_url == registry.client.meta.endpoint_url


def test_botocore_retries_limit_exceeded_as_throttling() -> None:
    """Why start_image_scan needs the no-retry client: botocore's retry modes classify
    ECR's "already scanned today" answer as a throttling error."""
    from botocore.retries.standard import ThrottledRetryableChecker

    assert "LimitExceededException" in ThrottledRetryableChecker._THROTTLED_ERROR_CODES


def test_moto_default_findings_normalise(registry: EcrRegistry, ecr: Any) -> None:
    """Without configured results moto returns one canned basic finding."""
    digest = image(ecr, "scan/canned", "canned")
    start_image_scan(registry.no_retry_client, "scan/canned", digest)
    result = describe_image_scan(registry.client, "scan/canned", digest)
    assert result is not None and result.status is ScanStatus.SUCCEEDED
    assert result.report is not None
    (finding,) = result.report.findings
    assert (finding.id, finding.severity, finding.package) == (
        "CVE-9999-9999",
        Severity.HIGH,
        "moto_fake",
    )
    assert finding.cvss == 7.5


@pytest.mark.parametrize("status", ["IN_PROGRESS", "PENDING"])
def test_scan_in_progress_is_pending(
    registry: EcrRegistry, ecr: Any, moto: MotoServer, status: str
) -> None:
    digest = image(ecr, "scan/busy", "busy")
    start_image_scan(registry.no_retry_client, "scan/busy", digest)
    result = basic_result("scan/busy", digest, [])
    result["imageScanStatus"] = {"status": status}
    del result["imageScanFindings"]
    moto.set_ecr_scan_findings(result)
    ref = ImageRef.parse(f"{REGISTRY_HOST}/scan/busy@{digest}")
    assert EcrScanSource()(registry, ref) is None


@pytest.mark.parametrize("status", ["FAILED", "UNSUPPORTED_IMAGE"])
def test_failed_scan_fails_closed(
    registry: EcrRegistry, ecr: Any, moto: MotoServer, status: str
) -> None:
    digest = image(ecr, "scan/bad", "bad")
    start_image_scan(registry.no_retry_client, "scan/bad", digest)
    result = basic_result("scan/bad", digest, [])
    result["imageScanStatus"] = {"status": status, "description": "The operating system is x"}
    del result["imageScanFindings"]
    moto.set_ecr_scan_findings(result)
    ref = ImageRef.parse(f"{REGISTRY_HOST}/scan/bad@{digest}")
    with pytest.raises(EcrScanFailed, match=rf"status {status} \(The operating system is x\)"):
        EcrScanSource()(registry, ref)
    described = describe_image_scan(registry.client, "scan/bad", digest)
    assert described is not None and described.status is ScanStatus.FAILED
    assert described.report is None


def test_enhanced_findings_are_read_across_pages(
    registry: EcrRegistry, ecr: Any, moto: MotoServer, ecr_proxy: EcrLimitsProxy
) -> None:
    repository = "scan/enhanced"
    digest = image(ecr, repository, "enhanced")
    start_image_scan(registry.no_retry_client, repository, digest)
    n = 2500
    result = basic_result(repository, digest, [])
    result["imageScanStatus"] = {"status": "ACTIVE", "description": "Continuous scan"}
    del result["imageScanFindings"]["findings"]
    result["imageScanFindings"]["enhancedFindings"] = [
        enhanced_finding(i, digest, repository) for i in range(n)
    ]
    moto.set_ecr_scan_findings(result)
    calls = watch(registry.client)
    described = describe_image_scan(registry.client, repository, digest)
    pages = calls.of("DescribeImageScanFindings")
    assert len(pages) == math.ceil(n / DESCRIBE_FINDINGS_PAGE_SIZE) == 3
    assert all(p["maxResults"] == DESCRIBE_FINDINGS_PAGE_SIZE for p in pages)
    assert [bool(p.get("nextToken")) for p in pages] == [False, True, True]
    assert len(ecr_proxy.operations("DescribeImageScanFindings")) == 3
    assert described is not None and described.report is not None
    report = described.report
    assert report.scanner == SCANNER_ENHANCED
    assert len(report.findings) == n
    assert len({f.id for f in report.findings}) == n
    counts = report.counts()
    assert counts[Severity.UNKNOWN] == n // 5  # UNTRIAGED
    assert all(f.fixed_version == "2.1" for f in report.findings)
    assert sum(f.exploit_available for f in report.findings) == math.ceil(n / 7)


def test_inspector_list_findings_pages_and_filters(
    registry: EcrRegistry, ecr: Any, moto: MotoServer, ecr_proxy: EcrLimitsProxy
) -> None:
    repository = "scan/inspector"
    digest = image(ecr, repository, "inspector")
    n = 250
    moto.set_inspector2_findings([enhanced_finding(i, digest, repository) for i in range(n)])
    inspector = moto.client("inspector2", endpoint_url=ecr_proxy.endpoint_url)
    calls = watch(inspector, "inspector2")
    report = list_inspector_findings(inspector, repository, digest, account_id=ACCOUNT)
    pages = calls.of("ListFindings")
    assert len(pages) == math.ceil(n / INSPECTOR_PAGE_SIZE) == 3
    assert all(p["maxResults"] == INSPECTOR_PAGE_SIZE for p in pages)
    criteria = pages[0]["filterCriteria"]
    assert criteria["ecrImageHash"] == [{"comparison": "EQUALS", "value": digest}]
    assert criteria["ecrImageRepositoryName"] == [{"comparison": "EQUALS", "value": repository}]
    assert criteria["findingStatus"] == [{"comparison": "EQUALS", "value": "ACTIVE"}]
    assert criteria["awsAccountId"] == [{"comparison": "EQUALS", "value": ACCOUNT}]
    assert len(report.findings) == n and report.scanner == SCANNER_ENHANCED
    assert report.scanned_at == SCANNED_AT


def test_source_prefers_inspector_for_enhanced_scans(
    registry: EcrRegistry, ecr: Any, moto: MotoServer, ecr_proxy: EcrLimitsProxy
) -> None:
    repository = "scan/both"
    digest = image(ecr, repository, "both")
    start_image_scan(registry.no_retry_client, repository, digest)
    summary = basic_result(repository, digest, [])
    summary["imageScanStatus"] = {"status": "ACTIVE"}
    del summary["imageScanFindings"]["findings"]
    summary["imageScanFindings"]["enhancedFindings"] = [enhanced_finding(0, digest, repository)]
    moto.set_ecr_scan_findings(summary)
    moto.set_inspector2_findings([enhanced_finding(i, digest, repository) for i in range(3)])
    inspector = moto.client("inspector2", endpoint_url=ecr_proxy.endpoint_url)
    ref = ImageRef.parse(f"{REGISTRY_HOST}/{repository}@{digest}")
    report = EcrScanSource(inspector_client=inspector)(registry, ref)
    assert report is not None and len(report.findings) == 3
    assert report.source == "inspector2-list-findings"
