"""Trivy, Grype, Harbor and cosign vuln reports → ScanReport (synthetic, in-repo inputs)."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regwarden.errors import IntakeError
from regwarden.model import Severity
from regwarden.scanning import (
    ScanFormatError,
    ScanStatus,
    detect_format,
    parse_cosign_vuln,
    parse_grype,
    parse_harbor_overview,
    parse_harbor_report,
    parse_report,
    parse_trivy,
)

TRIVY_SAMPLE = Path(__file__).resolve().parents[2] / "events" / "oci" / "trivy-critical.json"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def trivy_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(TRIVY_SAMPLE.read_text())
    return doc


def raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


def trivy_vulns(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for r in doc.get("Results") or [] for v in r.get("Vulnerabilities") or []]


# -- Trivy -----------------------------------------------------------------------------


def test_demo_trivy_sample_is_one_fixable_critical_and_one_unfixed_high() -> None:
    doc = trivy_doc()
    report = parse_trivy(TRIVY_SAMPLE.read_bytes())
    assert report.source == "trivy-json"
    assert report.scanner == f"trivy {doc['Trivy']['Version']}"
    assert report.digest == doc["Metadata"]["RepoDigests"][0].split("@")[1]
    assert report.scanned_at == datetime.fromisoformat(doc["CreatedAt"])
    counts = report.counts()
    assert counts[Severity.CRITICAL] == 1
    assert counts[Severity.HIGH] == 1
    assert sum(counts.values()) == 2
    critical = next(f for f in report.findings if f.severity is Severity.CRITICAL)
    high = next(f for f in report.findings if f.severity is Severity.HIGH)
    assert critical.fixable
    assert not high.fixable
    assert high.fixed_version is None


def test_trivy_fields_follow_the_raw_document() -> None:
    doc = trivy_doc()
    report = parse_trivy(raw(doc))
    for finding, vuln in zip(report.findings, trivy_vulns(doc), strict=True):
        assert finding.id == vuln["VulnerabilityID"]
        assert finding.severity is Severity[vuln["Severity"]]
        assert finding.package == vuln["PkgName"]
        assert finding.installed_version == vuln["InstalledVersion"]
        assert finding.fixed_version == (vuln.get("FixedVersion") or None)
        assert finding.cvss == vuln["CVSS"]["nvd"]["V3Score"]
        assert finding.title == vuln["Title"]
        assert finding.url == vuln["PrimaryURL"]
        assert finding.exploit_available is False


def test_trivy_explicit_digest_wins() -> None:
    assert parse_trivy(TRIVY_SAMPLE.read_bytes(), digest=D1).digest == D1


def test_trivy_falls_back_to_image_id_then_asks_for_a_digest() -> None:
    doc = trivy_doc()
    del doc["Metadata"]["RepoDigests"]
    assert parse_trivy(raw(doc)).digest == doc["Metadata"]["ImageID"]
    del doc["Metadata"]["ImageID"]
    with pytest.raises(ScanFormatError, match=r"no image digest.*pass digest="):
        parse_trivy(raw(doc))


def test_trivy_several_repo_digests_are_ambiguous() -> None:
    doc = trivy_doc()
    doc["Metadata"]["RepoDigests"] = [f"a/b@{D1}", f"c/d@{D2}", f"e/f@{D1}"]
    with pytest.raises(ScanFormatError, match=r"Metadata\.RepoDigests: got .*pass digest="):
        parse_trivy(raw(doc))
    doc["Metadata"]["RepoDigests"] = [f"a/b@{D1}", f"c/d@{D1}"]
    assert parse_trivy(raw(doc)).digest == D1


@pytest.mark.parametrize(
    "results",
    [None, [], [{"Target": "x", "Class": "os-pkgs"}], [{"Vulnerabilities": None}]],
)
def test_trivy_without_vulnerabilities_is_an_empty_report(results: Any) -> None:
    doc = trivy_doc()
    doc["Results"] = results
    report = parse_trivy(raw(doc))
    assert report.findings == ()
    assert report.digest


def test_trivy_created_at_may_be_epoch_seconds() -> None:
    doc = trivy_doc()
    doc["CreatedAt"] = 1629894030
    assert parse_trivy(raw(doc)).scanned_at == datetime.fromtimestamp(1629894030, UTC)


@pytest.mark.parametrize(
    ("cvss", "source", "expected"),
    [
        ({"nvd": {"V3Score": 7.5}, "redhat": {"V3Score": 9.1}}, "redhat", 7.5),
        ({"redhat": {"V3Score": 5.0}, "ghsa": {"V3Score": 6.1}}, "redhat", 5.0),
        ({"redhat": {"V3Score": 5.0}, "ghsa": {"V3Score": 6.1}}, "alpine", 6.1),
        ({"nvd": {"V2Score": 4.3}, "redhat": {"V3Score": 5.9}}, "nvd", 5.9),
        ({"nvd": {"V2Score": 4.3}}, "nvd", 4.3),
        ({"nvd": {"V40Score": 8.7, "V2Score": 4.3}}, "nvd", 8.7),
        ({}, "nvd", None),
    ],
)
def test_trivy_cvss_preference(cvss: dict[str, Any], source: str, expected: float | None) -> None:
    doc = trivy_doc()
    vuln = trivy_vulns(doc)[0]
    vuln["CVSS"], vuln["SeveritySource"] = cvss, source
    assert parse_trivy(raw(doc)).findings[0].cvss == expected


def test_trivy_fixed_version_lists_are_kept_verbatim() -> None:
    doc = trivy_doc()
    trivy_vulns(doc)[0]["FixedVersion"] = "1.2.4-r0, 1.3.1-r0"
    assert parse_trivy(raw(doc)).findings[0].fixed_version == "1.2.4-r0, 1.3.1-r0"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(SchemaVersion=1), r"at SchemaVersion: got 1, expected 2"),
        (lambda d: d.pop("SchemaVersion"), r"at SchemaVersion: got nothing"),
        (
            lambda d: d["Results"][0]["Vulnerabilities"][1].update(Severity="SEVERE"),
            r"Results\[0\]\.Vulnerabilities\[1\]\.Severity: got 'SEVERE', expected a severity",
        ),
        (
            lambda d: d["Results"][0]["Vulnerabilities"][0].pop("VulnerabilityID"),
            r"Results\[0\]\.Vulnerabilities\[0\]\.VulnerabilityID: got nothing",
        ),
        (
            lambda d: d["Results"][0]["Vulnerabilities"][0]["CVSS"]["nvd"].update(V3Score=11),
            r"CVSS\.nvd\.V3Score: got 11, expected a number between 0\.0 and 10\.0",
        ),
        (lambda d: d.update(Results={"a": 1}), r"at Results: got an object, expected a list"),
        (lambda d: d.update(CreatedAt="later"), r"at CreatedAt: got 'later'"),
        (
            lambda d: d["Metadata"].update(RepoDigests=["no-digest-here"]),
            r"Metadata\.RepoDigests\[0\]: got 'no-digest-here', expected name@digest",
        ),
    ],
)
def test_trivy_malformed_reports_name_the_path(edit: Any, message: str) -> None:
    doc = trivy_doc()
    edit(doc)
    with pytest.raises(ScanFormatError, match=message):
        parse_trivy(raw(doc))


def test_scan_format_error_is_an_intake_error_and_checks_the_digest_argument() -> None:
    with pytest.raises(IntakeError, match=r"invalid digest argument: got 'latest'"):
        parse_trivy(TRIVY_SAMPLE.read_bytes(), digest="latest")
    with pytest.raises(ScanFormatError, match=r"not valid JSON"):
        parse_trivy(b"{")


# -- Grype -----------------------------------------------------------------------------


def grype_match(
    vid: str,
    severity: str,
    *,
    fix: dict[str, Any],
    cvss: list[dict[str, Any]] | None = None,
    related: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "vulnerability": {
            "id": vid,
            "dataSource": f"https://example.invalid/{vid}",
            "namespace": "alpine:distro:alpine:3.19",
            "severity": severity,
            "urls": [f"https://example.invalid/ref/{vid}"],
            "description": f"{vid} description\nsecond line",
            "cvss": cvss or [],
            "fix": fix,
            **extra,
        },
        "relatedVulnerabilities": related or [],
        "artifact": {"id": "x", "name": "libdemo", "version": "1.2.3-r0", "type": "apk"},
    }


def cvss_entry(source: str, version: str, score: float, kind: str = "Primary") -> dict[str, Any]:
    return {"source": source, "type": kind, "version": version, "metrics": {"baseScore": score}}


def grype_doc() -> dict[str, Any]:
    return {
        "matches": [
            grype_match(
                "CVE-2099-20001",
                "Critical",
                fix={"versions": ["1.2.4-r0"], "state": "fixed"},
                cvss=[cvss_entry("vendor@example", "3.1", 9.0, "Secondary")],
                related=[
                    {
                        "id": "CVE-2099-20001",
                        "namespace": "nvd:cpe",
                        "cvss": [
                            cvss_entry("nvd@nist.gov", "3.1", 9.8),
                            cvss_entry("nvd@nist.gov", "2.0", 7.5),
                        ],
                    }
                ],
            ),
            grype_match("CVE-2099-20002", "High", fix={"versions": [], "state": "not-fixed"}),
            grype_match(
                "CVE-2099-20003",
                "Medium",
                fix={"versions": ["2.0.0"], "state": "wont-fix"},
                cvss=[cvss_entry("a@example", "3.0", 4.1), cvss_entry("b@example", "3.1", 5.5)],
                knownExploited=[{"cve": "CVE-2099-20003"}],
            ),
            grype_match(
                "GHSA-xxxx-yyyy-zzzz",
                "Negligible",
                fix={"versions": ["1.0.1", "2.0.1"], "state": "fixed"},
                cvss=[cvss_entry("nvd@nist.gov", "2.0", 2.1)],
            ),
        ],
        "source": {
            "type": "image",
            "target": {
                "userInput": "demo/app:1.0.0",
                "imageID": D3,
                "manifestDigest": D1,
                "repoDigests": [f"demo/app@{D2}"],
            },
        },
        "descriptor": {"name": "grype", "version": "0.94.0", "timestamp": "2025-06-19T11:43:35Z"},
    }


def test_grype_counts_fix_states_and_scores() -> None:
    doc = grype_doc()
    report = parse_grype(raw(doc))
    assert report.digest == D1  # manifestDigest before repoDigests
    assert report.scanner == "grype 0.94.0"
    assert report.source == "grype-json"
    assert report.scanned_at == datetime(2025, 6, 19, 11, 43, 35, tzinfo=UTC)
    assert [f.severity for f in report.findings] == [
        Severity.parse(m["vulnerability"]["severity"]) for m in doc["matches"]
    ]
    fixed = [f.fixed_version for f in report.findings]
    assert fixed == ["1.2.4-r0", None, None, "1.0.1, 2.0.1"]  # only state "fixed" counts
    assert [f.cvss for f in report.findings] == [9.8, None, 5.5, 2.1]
    assert [f.exploit_available for f in report.findings] == [False, False, True, False]
    first = report.findings[0]
    assert (first.package, first.installed_version) == ("libdemo", "1.2.3-r0")
    assert first.url == doc["matches"][0]["vulnerability"]["dataSource"]
    assert first.title == "CVE-2099-20001 description"


def test_grype_digest_fallbacks() -> None:
    doc = grype_doc()
    del doc["source"]["target"]["manifestDigest"]
    assert parse_grype(raw(doc)).digest == D2
    del doc["source"]["target"]["repoDigests"]
    assert parse_grype(raw(doc)).digest == D3
    del doc["source"]["target"]["imageID"]
    with pytest.raises(ScanFormatError, match=r"no image digest.*pass digest="):
        parse_grype(raw(doc))
    assert parse_grype(raw(doc), digest=D2).digest == D2


def test_grype_no_matches_is_an_empty_report_but_no_matches_key_is_not_grype() -> None:
    doc = grype_doc()
    doc["matches"] = []
    assert parse_grype(raw(doc)).findings == ()
    del doc["matches"]
    with pytest.raises(ScanFormatError, match=r"expected a Grype report"):
        parse_grype(raw(doc))


def test_grype_malformed_match_names_the_path() -> None:
    doc = grype_doc()
    doc["matches"][2]["vulnerability"]["fix"]["versions"] = [1]
    with pytest.raises(ScanFormatError, match=r"matches\[2\]\.vulnerability\.fix\.versions\[0\]"):
        parse_grype(raw(doc))
    doc = grype_doc()
    doc["descriptor"]["name"] = "syft"
    with pytest.raises(ScanFormatError, match=r"descriptor\.name: got 'syft', expected 'grype'"):
        parse_grype(raw(doc))


# -- Harbor pluggable scanner report -----------------------------------------------------


def harbor_report() -> dict[str, Any]:
    return {
        "generated_at": "2025-03-14T09:31:00Z",
        "artifact": {
            "repository": "library/demo",
            "digest": D1,
            "mime_type": "application/vnd.oci.image.manifest.v1+json",
        },
        "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50.1"},
        "severity": "Critical",
        "vulnerabilities": [
            {
                "id": "CVE-2099-30001",
                "package": "libdemo",
                "version": "1.2.3",
                "fix_version": "1.2.4",
                "severity": "Critical",
                "description": "synthetic",
                "links": ["https://example.invalid/CVE-2099-30001"],
                "preferred_cvss": {"score_v3": 9.1, "score_v2": 7.0},
                "vendor_attributes": {"CVSS": {"nvd": {"V3Score": 9.8}}},
            },
            {
                "id": "CVE-2099-30002",
                "package": "demo-utils",
                "version": "0.9",
                "fix_version": "",
                "severity": "Low",
                "links": [],
                "cvss": {"score_v3": 3.3},
            },
            {"id": "CVE-2099-30003", "package": "x", "version": "1", "severity": "Unknown"},
        ],
    }


def test_harbor_report_maps_fields() -> None:
    doc = harbor_report()
    report = parse_harbor_report(raw(doc))
    assert report.digest == doc["artifact"]["digest"]
    assert report.scanner == "Trivy 0.50.1"
    assert report.source == "harbor-scanner"
    assert report.scanned_at == datetime(2025, 3, 14, 9, 31, tzinfo=UTC)
    assert [f.severity for f in report.findings] == [
        Severity.parse(v["severity"]) for v in doc["vulnerabilities"]
    ]
    assert [f.fixed_version for f in report.findings] == ["1.2.4", None, None]
    assert [f.cvss for f in report.findings] == [9.8, 3.3, None]
    assert [f.url for f in report.findings] == [doc["vulnerabilities"][0]["links"][0], None, None]


def test_harbor_report_without_nvd_vendor_score_uses_preferred_cvss() -> None:
    doc = harbor_report()
    del doc["vulnerabilities"][0]["vendor_attributes"]
    assert parse_harbor_report(raw(doc)).findings[0].cvss == 9.1


def test_harbor_report_digest_argument_and_missing_artifact() -> None:
    doc = harbor_report()
    assert parse_harbor_report(raw(doc), digest=D2).digest == D2
    del doc["artifact"]
    with pytest.raises(ScanFormatError, match=r"'artifact' is absent; pass digest="):
        parse_harbor_report(raw(doc))


def test_harbor_report_bad_severity_names_the_path() -> None:
    doc = harbor_report()
    doc["vulnerabilities"][1]["severity"] = "Meh"
    with pytest.raises(ScanFormatError, match=r"vulnerabilities\[1\]\.severity: got 'Meh'"):
        parse_harbor_report(raw(doc))


# -- Harbor scan overview ----------------------------------------------------------------

OVERVIEW_KEY = "application/vnd.security.vulnerability.report; version=1.1"


def overview(status: str = "Success", summary: Any = None) -> dict[str, Any]:
    return {
        OVERVIEW_KEY: {
            "report_id": "r-1",
            "scan_status": status,
            "severity": "High",
            "summary": summary
            if summary is not None
            else {"total": 5, "fixable": 4, "summary": {"High": 4, "Unknown": 1}},
            "end_time": "2023-04-03T06:12:55Z",
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "v0.37.2"},
        }
    }


def test_overview_success_has_counts() -> None:
    data = overview()
    result = parse_harbor_overview(data, digest=D1)
    assert result is not None
    assert result.status is ScanStatus.SUCCEEDED
    assert result.report_id == "r-1"
    summary = result.summary
    assert summary is not None
    raw_counts = data[OVERVIEW_KEY]["summary"]["summary"]
    assert summary.counts()[Severity.HIGH] == raw_counts["High"]
    assert summary.counts()[Severity.UNKNOWN] == raw_counts["Unknown"]
    assert summary.counts()[Severity.CRITICAL] == 0
    assert summary.highest is Severity.HIGH
    assert (summary.total, summary.fixable) == (5, 4)
    assert summary.scanner == "Trivy v0.37.2"
    assert parse_harbor_overview(raw(data), digest=D1) == result  # bytes work too


def test_overview_with_nothing_found() -> None:
    result = parse_harbor_overview(
        overview(summary={"total": 0, "fixable": 0, "summary": {}}), digest=D1
    )
    assert result is not None
    assert result.summary is not None
    assert result.summary.highest is None
    assert sum(result.summary.counts().values()) == 0


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Error", ScanStatus.FAILED),
        ("Stopped", ScanStatus.STOPPED),
        ("Running", ScanStatus.PENDING),
        ("Pending", ScanStatus.PENDING),
    ],
)
def test_overview_that_did_not_succeed_has_no_counts(status: str, expected: ScanStatus) -> None:
    result = parse_harbor_overview(overview(status=status), digest=D1)
    assert result is not None
    assert (result.status, result.summary) == (expected, None)


def test_overview_without_a_vulnerability_report_is_none() -> None:
    sbom_only = {"application/vnd.security.sbom.report+json; version=1.0": {"scan_status": "x"}}
    assert parse_harbor_overview(sbom_only, digest=D1) is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.update(scan_status="Exploded"), r"scan_status: got 'Exploded'"),
        (lambda e: e.update(summary=None), r"\.summary: got null, expected an object"),
        (lambda e: e["summary"]["summary"].update(High=-1), r"summary\.High: got -1"),
        (lambda e: e["summary"]["summary"].update(Bad=1), r"summary\.summary: got 'Bad'"),
        (lambda e: e["summary"].pop("total"), r"summary\.total: got nothing"),
    ],
)
def test_overview_malformed_names_the_path(edit: Any, message: str) -> None:
    data = overview()
    edit(data[OVERVIEW_KEY])
    with pytest.raises(ScanFormatError, match=message):
        parse_harbor_overview(data, digest=D1)


# -- cosign vuln attestation -------------------------------------------------------------

VULN_TYPE = "https://cosign.sigstore.dev/attestation/vuln/v1"


def predicate(result: Any = None) -> dict[str, Any]:
    return {
        "invocation": {"parameters": None, "uri": "", "event_id": "", "builder.id": ""},
        "scanner": {
            "uri": "pkg:github/aquasecurity/trivy@v0.50.1",
            "version": "0.50.1",
            "db": {"uri": "", "version": ""},
            "result": trivy_doc() if result is None else result,
        },
        "metadata": {
            "scanStartedOn": "2025-03-14T09:30:00Z",
            "scanFinishedOn": "2025-03-14T09:30:12Z",
        },
    }


def statement(subjects: list[str], pred: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": VULN_TYPE,
        "subject": [
            {"name": "localhost:5000/demo/app", "digest": {d.split(":")[0]: d.split(":")[1]}}
            for d in subjects
        ],
        "predicate": pred or predicate(),
    }


def test_cosign_statement_takes_the_digest_from_its_subject() -> None:
    report = parse_cosign_vuln(raw(statement([D1])))
    direct = parse_trivy(TRIVY_SAMPLE.read_bytes())
    assert report.digest == D1
    assert report.source == "cosign-vuln"
    assert report.scanner == "trivy 0.50.1"
    assert report.scanned_at == datetime(2025, 3, 14, 9, 30, 12, tzinfo=UTC)
    assert report.findings == direct.findings


def test_cosign_digest_argument_must_be_a_subject() -> None:
    assert parse_cosign_vuln(raw(statement([D1, D2])), digest=D2).digest == D2
    with pytest.raises(ScanFormatError, match=r"at subject: got .*expected a subject with digest"):
        parse_cosign_vuln(raw(statement([D1])), digest=D2)
    with pytest.raises(ScanFormatError, match=r"at subject: got 2, expected exactly one"):
        parse_cosign_vuln(raw(statement([D1, D2])))


def test_cosign_bare_predicate_needs_a_digest() -> None:
    with pytest.raises(ScanFormatError, match=r"bare predicate names no image; pass digest="):
        parse_cosign_vuln(raw(predicate()))
    assert parse_cosign_vuln(raw(predicate()), digest=D3).digest == D3


def test_cosign_dsse_envelope_is_refused_unverified() -> None:
    envelope = {
        "payloadType": "application/vnd.in-toto+json",
        "payload": base64.b64encode(raw(statement([D1]))).decode(),
        "signatures": [{"keyid": "", "sig": "AAAA"}],
    }
    with pytest.raises(ScanFormatError, match=r"DSSE envelope.*verify"):
        parse_cosign_vuln(raw(envelope))


def test_cosign_missing_result_is_an_error_not_a_clean_report() -> None:
    pred = predicate()
    del pred["scanner"]["result"]
    with pytest.raises(ScanFormatError, match=r"scanner\.result: got nothing"):
        parse_cosign_vuln(raw(pred), digest=D1)


def test_cosign_accepts_the_old_predicate_type_and_the_scanners_list() -> None:
    doc = statement([D1])
    doc["predicateType"] = "cosign.sigstore.dev/attestation/vuln/v1"
    doc["_type"] = "https://in-toto.io/Statement/v1"
    pred = doc["predicate"]
    pred["scanners"] = [pred.pop("scanner"), copy.deepcopy(grype_doc_scanner())]
    report = parse_cosign_vuln(raw(doc))
    assert report.scanner == "trivy 0.50.1 + grype 0.94.0"
    assert len(report.findings) == len(trivy_vulns(trivy_doc())) + len(grype_doc()["matches"])


def grype_doc_scanner() -> dict[str, Any]:
    return {"uri": "pkg:github/anchore/grype@v0.94.0", "version": "0.94.0", "result": grype_doc()}


def test_cosign_wrong_predicate_type_is_refused() -> None:
    doc = statement([D1])
    doc["predicateType"] = "https://slsa.dev/provenance/v1"
    with pytest.raises(ScanFormatError, match=r"at predicateType: got 'https://slsa\.dev"):
        parse_cosign_vuln(raw(doc))


# -- format detection --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "name"),
    [
        (trivy_doc(), "trivy"),
        (grype_doc(), "grype"),
        (harbor_report(), "harbor"),
        (statement([D1]), "cosign-vuln"),
        (predicate(), "cosign-vuln"),
    ],
)
def test_detect_format_and_parse_report(doc: dict[str, Any], name: str) -> None:
    assert detect_format(raw(doc)) == name
    report = parse_report(raw(doc), digest=D1)
    assert report.digest == D1
    assert report.findings


def test_unknown_report_lists_the_valid_formats() -> None:
    with pytest.raises(ScanFormatError, match=r"valid formats: trivy, grype, harbor, cosign-vuln"):
        parse_report(b'{"bomFormat": "CycloneDX"}')
