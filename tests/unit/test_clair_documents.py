"""Clair v4's documents, pure (`regwarden.scanning._clair`): the vulnerability report and
index report read from the recorded shapes (tests/fixtures/clair), the Manifest regwarden
sends, the PSK JWT as Clair's check reads it, and a multi-arch index's merged report."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from support.fake_clair import _manifest_problem, check_jwt, shape

from regwarden.errors import UsageError
from regwarden.model import Finding, ScanReport, Severity
from regwarden.scanning import ScanFormatError
from regwarden.scanning._clair import (
    dedupe,
    index_request,
    merge_reports,
    parse_index_report,
    parse_vulnerability_report,
    psk_jwt,
    psk_key,
)

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
LAYER = "sha256:" + "ef" * 32
KEY = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def report_bytes(name: str, digest: str = DIGEST) -> bytes:
    return json.dumps(shape(name, digest=digest)).encode()


def test_critical_report_gives_one_finding_per_package_vulnerability() -> None:
    report = parse_vulnerability_report(
        report_bytes("vulnerability_report_critical.json"), digest=DIGEST, scanned_at=NOW
    )

    assert (report.digest, report.scanner, report.source, report.scanned_at) == (
        DIGEST,
        "clair",
        "clair",
        NOW,
    )
    by_id = {f.id: f for f in report.findings}
    assert set(by_id) == {"CVE-2022-0778", "CVE-2009-5155", "CVE-2016-2781"}
    critical = by_id["CVE-2022-0778"]
    # the installed package (from `packages`), not the vulnerability's source package name
    assert (critical.severity, critical.package, critical.installed_version) == (
        Severity.CRITICAL,
        "libssl1.1",
        "1.1.1-1ubuntu2.1~18.04.4",
    )
    assert critical.fixed_version == "1.1.1-1ubuntu2.1~18.04.15"
    assert critical.url == "https://ubuntu.com/security/CVE-2022-0778"
    assert critical.title.startswith("The BN_mod_sqrt() function")
    assert by_id["CVE-2009-5155"].severity is Severity.LOW
    negligible = by_id["CVE-2016-2781"]
    assert negligible.severity is Severity.NEGLIGIBLE  # below LOW, as regwarden ranks it
    assert negligible.fixed_version is None and not negligible.fixable  # "" means no fix


def test_clean_report_has_no_findings() -> None:
    report = parse_vulnerability_report(
        report_bytes("vulnerability_report_clean.json"), digest=DIGEST
    )
    assert report.findings == () and report.scanned_at is None


def test_a_report_for_another_manifest_is_refused() -> None:
    with pytest.raises(ScanFormatError, match="manifest_hash"):
        parse_vulnerability_report(
            report_bytes("vulnerability_report_clean.json", digest=OTHER), digest=DIGEST
        )


def test_a_vulnerability_the_report_does_not_hold_is_malformed() -> None:
    doc = shape("vulnerability_report_critical.json", digest=DIGEST)
    del doc["vulnerabilities"]["412001"]
    with pytest.raises(ScanFormatError, match="412001"):
        parse_vulnerability_report(json.dumps(doc).encode(), digest=DIGEST)


def test_an_unknown_normalized_severity_is_malformed() -> None:
    doc = shape("vulnerability_report_critical.json", digest=DIGEST)
    doc["vulnerabilities"]["412001"]["normalized_severity"] = "Catastrophic"
    with pytest.raises(ScanFormatError, match="normalized_severity"):
        parse_vulnerability_report(json.dumps(doc).encode(), digest=DIGEST)


def test_one_cve_known_to_two_updaters_is_one_finding_at_its_worst() -> None:
    doc = shape("vulnerability_report_critical.json", digest=DIGEST)
    twin = dict(
        doc["vulnerabilities"]["412001"], id="99", updater="osv", normalized_severity="High"
    )
    doc["vulnerabilities"]["99"] = twin
    doc["package_vulnerabilities"]["31"] = ["99", "412001"]
    report = parse_vulnerability_report(json.dumps(doc).encode(), digest=DIGEST)
    (finding,) = [f for f in report.findings if f.id == "CVE-2022-0778"]
    assert finding.severity is Severity.CRITICAL


@pytest.mark.parametrize(
    ("state", "success", "finished", "failed"),
    [
        ("index_report_finished.json", True, True, False),
        ("index_report_scanning.json", False, False, False),
        ("index_report_error.json", False, False, True),
    ],
)
def test_index_report_states(state: str, success: bool, finished: bool, failed: bool) -> None:
    index = parse_index_report(report_bytes(state), digest=DIGEST)
    assert (index.success, index.finished, index.failed) == (success, finished, failed)
    if failed:
        assert "401" in index.err


def test_index_report_of_another_manifest_is_refused() -> None:
    with pytest.raises(ScanFormatError, match="manifest_hash"):
        parse_index_report(report_bytes("index_report_finished.json", digest=OTHER), digest=DIGEST)


def test_index_request_fits_clairs_manifest_schema() -> None:
    with_token = json.loads(
        index_request(DIGEST, [(LAYER, "https://r.example/v2/a/blobs/x")], authorization="Bearer t")
    )
    without = json.loads(
        index_request(DIGEST, [(LAYER, "https://r.example/v2/a/blobs/x")], authorization=None)
    )

    assert _manifest_problem(with_token) is None and _manifest_problem(without) is None
    assert with_token["layers"][0]["headers"] == {"Authorization": ["Bearer t"]}
    assert without["layers"][0]["headers"] == {}
    assert _manifest_problem(shape("manifest.json")) is None  # the fake agrees with the spec


def pad(text: str) -> str:
    return text + "=" * (-len(text) % 4)


def test_psk_jwt_is_hs256_over_the_decoded_key_with_short_expiry() -> None:
    token = psk_jwt(KEY, now=NOW)
    head, body, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(pad(head)))
    claims = json.loads(base64.urlsafe_b64decode(pad(body)))
    expected = hmac.new(KEY, f"{head}.{body}".encode(), hashlib.sha256).digest()

    assert header == {"alg": "HS256", "typ": "JWT"}
    assert base64.urlsafe_b64decode(pad(signature)) == expected
    issued = int(NOW.timestamp())
    assert claims == {"iss": "regwarden", "iat": issued, "nbf": issued, "exp": issued + 300}


def test_clairs_check_accepts_a_fresh_token_and_refuses_bad_ones() -> None:
    now = time.time()
    fresh = psk_jwt(KEY, now=datetime.fromtimestamp(now, UTC))
    old = psk_jwt(KEY, now=datetime.fromtimestamp(now, UTC) - timedelta(minutes=10))

    assert check_jwt(fresh, KEY, {"regwarden"}, now) is None
    assert check_jwt(old, KEY, {"regwarden"}, now) == "expired"
    assert check_jwt(fresh, b"another key", {"regwarden"}, now) == "bad signature"
    assert check_jwt(fresh, KEY, {"quay"}, now) == "issuer 'regwarden' not allowed"


def test_psk_is_read_as_clair_holds_it_and_a_bad_one_is_named_not_shown() -> None:
    assert psk_key(base64.b64encode(KEY).decode(), name="clair-psk") == KEY
    with pytest.raises(UsageError, match="'clair-psk'") as raised:
        psk_key("not base64 at all!", name="clair-psk")
    assert "not base64" not in str(raised.value)


def test_merged_index_report_dedupes_and_names_platforms() -> None:
    shared = Finding(id="CVE-1", severity=Severity.HIGH, package="zlib", installed_version="1")
    only_arm = Finding(id="CVE-2", severity=Severity.LOW, package="musl", installed_version="2")
    amd64 = ScanReport(
        digest=OTHER, scanner="clair", source="clair", scanned_at=NOW, findings=(shared,)
    )
    arm64 = ScanReport(
        digest=LAYER,
        scanner="clair",
        source="clair",
        scanned_at=NOW - timedelta(minutes=1),
        findings=(shared, only_arm),
    )

    merged = merge_reports(DIGEST, [("linux/amd64", amd64), ("linux/arm64", arm64)])

    assert merged.digest == DIGEST and merged.findings == (shared, only_arm)
    assert merged.scanned_at == NOW - timedelta(minutes=1)
    assert "linux/amd64" in merged.note and "linux/arm64" in merged.note
    assert dedupe([shared, shared]) == (shared,)
