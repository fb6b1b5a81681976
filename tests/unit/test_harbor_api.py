"""`HarborScanSource` against a loopback fake of Harbor's API serving recorded answers.

The fake (tests/support/harbor) is the registry host itself here, as a real Harbor is: the
source derives `http://127.0.0.1:<port>/api/v2.0` from the registry's own scheme and host.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import harbor as harbor_support
from support.harbor import (
    NATIVE_REPORT,
    PASSWORD,
    USERNAME,
    FakeHarbor,
    robot_docker_config,
    shape,
)

from regwarden import USER_AGENT
from regwarden.errors import (
    AuthError,
    NotFound,
    RegistryError,
    Unsupported,
    UsageError,
    VerificationError,
)
from regwarden.model import Severity
from regwarden.oci import Credentials
from regwarden.providers import Registry, open_registry
from regwarden.reference import ImageRef
from regwarden.scanning import ScanFormatError, ScanStatus
from regwarden.scanning.harbor_api import (
    API_PATH,
    ENV_API_BASE,
    HarborScanFailed,
    HarborScanSource,
    api_base_url,
    artifact_path,
    parse_artifact_scan,
    parse_vulnerabilities_addition,
)

harbor = harbor_support.harbor

REPO = "library/team/app"
DIGEST = "sha256:" + "5e" * 32


@pytest.fixture
def registry(harbor: FakeHarbor) -> Iterator[Registry]:
    reg = open_registry(harbor.host)
    yield reg
    reg.close()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def source(sleeps: Sleeps, **kwargs: Any) -> HarborScanSource:
    kwargs.setdefault("credentials", Credentials(username=USERNAME, password=PASSWORD))
    return HarborScanSource(sleep=sleeps, backoff=0.01, **kwargs)


def image(registry: Registry, repository: str = REPO, digest: str = DIGEST) -> ImageRef:
    return ImageRef.parse(f"{registry.host}/{repository}@{digest}")


def serve(
    harbor: FakeHarbor,
    artifact: str,
    vulnerabilities: str | None = None,
    *,
    repository: str = REPO,
    digest: str = DIGEST,
) -> None:
    harbor.add(
        repository,
        digest,
        artifact=shape(artifact, digest=digest),
        vulnerabilities=shape(vulnerabilities, digest=digest) if vulnerabilities else None,
    )


# -- success ------------------------------------------------------------------------------------


def test_success_reads_the_report_and_normalises_findings(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps
) -> None:
    serve(harbor, "artifact_success_critical.json", "vulnerabilities_critical.json")
    report = source(sleeps)(registry, image(registry))

    assert report is not None
    recorded = shape("vulnerabilities_critical.json", digest=DIGEST)[NATIVE_REPORT]
    assert report.digest == DIGEST
    assert report.source == "harbor-scanner"
    assert report.scanner == f"Trivy {recorded['scanner']['version']}"
    assert report.scanned_at == datetime(2024, 5, 2, 10, 11, 23, 481298, tzinfo=UTC)
    by_id = {f.id: f for f in report.findings}
    assert sorted(by_id) == sorted(v["id"] for v in recorded["vulnerabilities"])
    for vuln in recorded["vulnerabilities"]:
        finding = by_id[vuln["id"]]
        assert finding.severity is Severity.parse(vuln["severity"])
        assert finding.package == vuln["package"]
        assert finding.installed_version == vuln["version"]
        assert finding.fixed_version == (vuln["fix_version"] or None)
    critical = by_id["CVE-2099-1001"]
    # Trivy's NVD v3 score wins over Harbor's preferred_cvss
    assert (
        critical.cvss
        == recorded["vulnerabilities"][0]["vendor_attributes"]["CVSS"]["nvd"]["V3Score"]
    )
    assert critical.url == recorded["vulnerabilities"][0]["links"][0]
    assert (
        by_id["CVE-2099-1002"].cvss == recorded["vulnerabilities"][1]["preferred_cvss"]["score_v3"]
    )
    assert not by_id["CVE-2099-1003"].fixable
    assert report.counts()[Severity.CRITICAL] == 1

    first, second = harbor.requests
    assert first.query == {"with_scan_overview": ["true"]}
    assert second.path == first.path + "/additions/vulnerabilities"
    for seen in (first, second):
        assert seen.status == 200
        assert seen.headers["user-agent"] == USER_AGENT
        expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        assert seen.headers["authorization"] == f"Basic {expected}"
        assert NATIVE_REPORT in seen.headers["x-accept-vulnerabilities"]


def test_clean_report_has_no_findings(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps
) -> None:
    serve(harbor, "artifact_success_clean.json", "vulnerabilities_clean.json")
    report = source(sleeps)(registry, image(registry))
    assert report is not None
    assert report.findings == ()
    assert set(report.counts().values()) == {0}


def test_report_without_time_takes_the_scan_end_time(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps
) -> None:
    vulns = shape("vulnerabilities_clean.json", digest=DIGEST)
    del vulns[NATIVE_REPORT]["generated_at"]
    harbor.add(
        REPO,
        DIGEST,
        artifact=shape("artifact_success_clean.json", digest=DIGEST),
        vulnerabilities=vulns,
    )
    report = source(sleeps)(registry, image(registry))
    assert report is not None
    end = shape("artifact_success_clean.json")["scan_overview"][NATIVE_REPORT]["end_time"]
    assert report.scanned_at == datetime.fromisoformat(end)


# -- no scan yet, failed scans ------------------------------------------------------------------


@pytest.mark.parametrize(
    "artifact", ["artifact_running.json", "artifact_pending.json", "artifact_not_scanned.json"]
)
def test_no_finished_scan_yet_is_none_and_no_report_is_fetched(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps, artifact: str
) -> None:
    serve(harbor, artifact, "vulnerabilities_critical.json")
    assert source(sleeps)(registry, image(registry)) is None
    assert [r.path.endswith("/additions/vulnerabilities") for r in harbor.requests] == [False]


def test_error_status_fails_closed(harbor: FakeHarbor, registry: Registry, sleeps: Sleeps) -> None:
    serve(harbor, "artifact_error.json", "vulnerabilities_clean.json")
    with pytest.raises(HarborScanFailed, match="got scan_status 'Error'") as caught:
        source(sleeps)(registry, image(registry))
    assert isinstance(caught.value, VerificationError)
    assert caught.value.scan.status is ScanStatus.FAILED
    report_id = shape("artifact_error.json")["scan_overview"][NATIVE_REPORT]["report_id"]
    assert report_id in str(caught.value)
    assert len(harbor.requests) == 1  # never reads a report of a failed scan


def test_stopped_scan_fails_closed(harbor: FakeHarbor, registry: Registry, sleeps: Sleeps) -> None:
    artifact = shape("artifact_error.json", digest=DIGEST)
    artifact["scan_overview"][NATIVE_REPORT]["scan_status"] = "Stopped"
    harbor.add(REPO, DIGEST, artifact=artifact, vulnerabilities=None)
    with pytest.raises(HarborScanFailed, match="'Stopped'") as caught:
        source(sleeps)(registry, image(registry))
    assert caught.value.scan.status is ScanStatus.STOPPED


# -- auth -----------------------------------------------------------------------------------------


def test_refused_credentials_raise_auth_error(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps
) -> None:
    serve(harbor, "artifact_success_clean.json", "vulnerabilities_clean.json")
    wrong = Credentials(username=USERNAME, password="not-the-password")
    with pytest.raises(AuthError, match=r"user 'robot\$regwarden' were refused") as caught:
        source(sleeps, credentials=wrong)(registry, image(registry))
    assert caught.value.status == 401
    assert "UNAUTHORIZED" in str(caught.value)
    assert sleeps == []  # a refusal is not retried


def test_no_credentials_is_anonymous_and_refused(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps, tmp_path: Path
) -> None:
    serve(harbor, "artifact_success_clean.json", "vulnerabilities_clean.json")
    src = HarborScanSource(env={"DOCKER_CONFIG": str(tmp_path)}, sleep=sleeps)
    with pytest.raises(AuthError, match="anonymous access was refused"):
        src(registry, image(registry))


def test_credentials_come_from_the_docker_config_for_the_registry_host(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps, tmp_path: Path
) -> None:
    serve(harbor, "artifact_success_critical.json", "vulnerabilities_critical.json")
    robot_docker_config(tmp_path, registry.host)
    src = HarborScanSource(env={"DOCKER_CONFIG": str(tmp_path)}, sleep=sleeps)
    report = src(registry, image(registry))
    assert report is not None and len(report.findings) == 3


# -- retries and failures -----------------------------------------------------------------------


def test_503_then_success_is_retried(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps
) -> None:
    serve(harbor, "artifact_success_critical.json", "vulnerabilities_critical.json")
    harbor.inject(503, count=1)
    report = source(sleeps)(registry, image(registry))
    assert report is not None and len(report.findings) == 3
    assert [r.status for r in harbor.requests] == [503, 200, 200]
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 0.01


def test_retry_after_is_honoured(harbor: FakeHarbor, registry: Registry, sleeps: Sleeps) -> None:
    serve(harbor, "artifact_success_clean.json", "vulnerabilities_clean.json")
    harbor.inject(429, count=1, headers={"Retry-After": "2"})
    assert source(sleeps)(registry, image(registry)) is not None
    assert sleeps == [2.0]


def test_a_retry_after_over_the_limit_is_not_waited_for(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps
) -> None:
    serve(harbor, "artifact_success_clean.json", "vulnerabilities_clean.json")
    harbor.inject(429, count=1, headers={"Retry-After": "3600"})
    with pytest.raises(RegistryError, match="asked to wait 3600s, over our 60s"):
        source(sleeps)(registry, image(registry))
    assert sleeps == []


def test_retries_are_bounded(harbor: FakeHarbor, registry: Registry, sleeps: Sleeps) -> None:
    serve(harbor, "artifact_success_clean.json", "vulnerabilities_clean.json")
    harbor.inject(503, count=10)
    with pytest.raises(
        RegistryError, match=r"got HTTP 503 .*SERVICE_UNAVAILABLE.*after 3 attempts"
    ):
        source(sleeps, max_retries=2)(registry, image(registry))
    assert len(harbor.requests) == 3
    assert len(sleeps) == 2


def test_unknown_artifact_is_a_registry_error_not_not_found(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps
) -> None:
    with pytest.raises(RegistryError, match="Harbor's API does not know it") as caught:
        source(sleeps)(registry, image(registry))
    assert not isinstance(caught.value, NotFound)  # "deleted" would skip the gate silently
    assert caught.value.status == 404
    assert ENV_API_BASE in str(caught.value)


def test_unreachable_api_is_retried_then_a_registry_error(
    registry: Registry, sleeps: Sleeps
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    src = source(sleeps, api_base=closed, max_retries=2, timeout=2.0)
    with pytest.raises(RegistryError, match=r"ConnectError.*after 3 attempts"):
        src(registry, image(registry))
    assert len(sleeps) == 2


# -- repository names and where the API is ------------------------------------------------------


def test_nested_repository_is_double_encoded_after_the_project(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps
) -> None:
    nested = "payments/team/sub/app"
    serve(
        harbor, "artifact_success_critical.json", "vulnerabilities_critical.json", repository=nested
    )
    report = source(sleeps)(registry, image(registry, nested))
    assert report is not None
    expected = f"{API_PATH}/projects/payments/repositories/team%252Fsub%252Fapp/artifacts/{DIGEST}"
    assert [r.path for r in harbor.requests] == [expected, expected + "/additions/vulnerabilities"]


def test_the_fake_like_harbor_rejects_a_single_encoded_name(harbor: FakeHarbor) -> None:
    serve(harbor, "artifact_success_clean.json")
    auth = (USERNAME, PASSWORD)
    base = f"{harbor.url}{API_PATH}/projects/library/repositories"
    single = httpx.get(f"{base}/team%2Fapp/artifacts/{DIGEST}", auth=auth)
    double = httpx.get(f"{base}/team%252Fapp/artifacts/{DIGEST}", auth=auth)
    assert (single.status_code, double.status_code) == (404, 200)


def test_artifact_path() -> None:
    assert artifact_path("library/app", DIGEST) == (
        f"/projects/library/repositories/app/artifacts/{DIGEST}"
    )
    assert artifact_path("library/team/app", DIGEST) == (
        f"/projects/library/repositories/team%252Fapp/artifacts/{DIGEST}"
    )
    with pytest.raises(Unsupported, match="got 'app', expected <project>/<repository>"):
        artifact_path("app", DIGEST)
    with pytest.raises(ScanFormatError, match="expected a digest"):
        artifact_path("library/app", "sha256:short")


def test_api_base_override_points_away_from_the_registry(
    harbor: FakeHarbor, sleeps: Sleeps
) -> None:
    serve(harbor, "artifact_success_clean.json", "vulnerabilities_clean.json")
    with socket.socket() as sock:  # a registry host nothing listens on: never contacted
        sock.bind(("127.0.0.1", 0))
        elsewhere = open_registry(f"127.0.0.1:{sock.getsockname()[1]}")
    try:
        report = source(sleeps, api_base=harbor.url)(elsewhere, image(elsewhere))
    finally:
        elsewhere.close()
    assert report is not None
    assert len(harbor.requests) == 2


@pytest.mark.parametrize(
    ("value", "insecure", "expected"),
    [
        ("https://harbor.example", False, "https://harbor.example/api/v2.0"),
        ("https://harbor.example/api/v2.0/", False, "https://harbor.example/api/v2.0"),
        ("http://127.0.0.1:8080", False, "http://127.0.0.1:8080/api/v2.0"),
        ("http://harbor.internal", True, "http://harbor.internal/api/v2.0"),
    ],
)
def test_api_base_url(value: str, insecure: bool, expected: str) -> None:
    assert api_base_url(value, insecure=insecure) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://harbor.example", "refusing plain HTTP"),
        ("harbor.example", "expected https://host"),
        ("ftp://harbor.example", "expected https://host"),
    ],
)
def test_api_base_url_refuses(value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        HarborScanSource(api_base=value)


# -- malformed answers --------------------------------------------------------------------------


def test_artifact_for_another_digest_is_malformed(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps
) -> None:
    other = "sha256:" + "0f" * 32
    harbor.add(REPO, DIGEST, artifact=shape("artifact_success_clean.json", digest=other))
    with pytest.raises(ScanFormatError, match=f"at digest: got '{other}'"):
        source(sleeps)(registry, image(registry))


def test_success_without_a_report_is_malformed(
    harbor: FakeHarbor, registry: Registry, sleeps: Sleeps
) -> None:
    serve(harbor, "artifact_success_critical.json", vulnerabilities=None)  # Harbor sends {}
    with pytest.raises(ScanFormatError, match="got an empty object"):
        source(sleeps)(registry, image(registry))


def test_parse_artifact_scan_rejects_what_is_not_an_artifact() -> None:
    with pytest.raises(ScanFormatError, match="not valid JSON"):
        parse_artifact_scan(b"<html>502 Bad Gateway</html>", digest=DIGEST)
    with pytest.raises(ScanFormatError, match="expected an object"):
        parse_artifact_scan(b"[]", digest=DIGEST)
    artifact = shape("artifact_running.json", digest=DIGEST)
    artifact["scan_overview"][NATIVE_REPORT]["scan_status"] = "Exploded"
    with pytest.raises(ScanFormatError, match="scan_status: got 'Exploded'"):
        parse_artifact_scan(json.dumps(artifact).encode(), digest=DIGEST)


def test_parse_artifact_scan_reads_each_state() -> None:
    for name, status, text in [
        ("artifact_success_critical.json", ScanStatus.SUCCEEDED, "Success"),
        ("artifact_running.json", ScanStatus.PENDING, "Running"),
        ("artifact_pending.json", ScanStatus.PENDING, "Pending"),
        ("artifact_error.json", ScanStatus.FAILED, "Error"),
        ("artifact_not_scanned.json", None, None),
    ]:
        scan = parse_artifact_scan(json.dumps(shape(name, digest=DIGEST)).encode(), digest=DIGEST)
        assert (scan.status, scan.harbor_status) == (status, text), name


def test_parse_vulnerabilities_addition_takes_the_older_report_type_too() -> None:
    older = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"
    report = shape("vulnerabilities_critical.json", digest=DIGEST)[NATIVE_REPORT]
    parsed = parse_vulnerabilities_addition(json.dumps({older: report}).encode(), digest=DIGEST)
    assert {f.id for f in parsed.findings} == {v["id"] for v in report["vulnerabilities"]}
    with pytest.raises(ScanFormatError, match="got keys \\['application/spdx\\+json'\\]"):
        parse_vulnerabilities_addition(b'{"application/spdx+json": {}}', digest=DIGEST)
