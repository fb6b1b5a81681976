"""The pure parts of report referrers: which image a report names, which referrer is newest,
and the manifest `attach` pushes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from regwarden.oci import Descriptor, compute_digest
from regwarden.scanning import ScanFormatError
from regwarden.scanning.referrer_reports import (
    CREATED,
    KINDS,
    TRIVY_REPORT_TYPE,
    check_report,
    newest_first,
    report_manifest,
)

IMAGE = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64
CONFIG = "sha256:" + "3" * 64


def trivy(**metadata: object) -> bytes:
    doc = {"SchemaVersion": 2, "ArtifactName": "reg.example/app:1", "Results": []}
    if "ArtifactName" in metadata:
        doc["ArtifactName"] = metadata.pop("ArtifactName")
    doc["Metadata"] = metadata
    return json.dumps(doc).encode()


def no_config() -> str | None:
    raise AssertionError("the config digest was asked for although the report names a digest")


def test_a_report_naming_the_image_is_read_with_its_source() -> None:
    report = check_report(
        KINDS["trivy"],
        trivy(RepoDigests=[f"reg.example/app@{IMAGE}"]),
        image_digest=IMAGE,
        config_digest=no_config,
    )
    assert (report.digest, report.source, report.scanner) == (IMAGE, "trivy-referrer", "trivy")


@pytest.mark.parametrize(
    "data",
    [
        trivy(RepoDigests=[f"reg.example/app@{OTHER}"]),
        trivy(ArtifactName=f"reg.example/app@{OTHER}"),
        json.dumps({"matches": [], "source": {"target": {"userInput": f"app@{OTHER}"}}}).encode(),
    ],
    ids=["repo-digests", "artifact-name", "grype-user-input"],
)
def test_a_report_naming_another_digest_is_refused(data: bytes) -> None:
    kind = KINDS["grype"] if b"matches" in data else KINDS["trivy"]
    with pytest.raises(ScanFormatError, match=f"about another image: it names {OTHER}"):
        check_report(kind, data, image_digest=IMAGE, config_digest=no_config)


def test_an_image_id_is_checked_against_the_config_only_when_no_digest_is_named() -> None:
    data = trivy(ImageID=CONFIG)
    report = check_report(KINDS["trivy"], data, image_digest=IMAGE, config_digest=lambda: CONFIG)
    assert report.digest == IMAGE
    with pytest.raises(ScanFormatError, match="its image ID"):
        check_report(KINDS["trivy"], data, image_digest=IMAGE, config_digest=lambda: OTHER)
    # an index has no one config: the image ID cannot be checked and does not refuse
    assert check_report(KINDS["trivy"], data, image_digest=IMAGE, config_digest=lambda: None)


def test_the_wrong_scanners_json_is_refused() -> None:
    with pytest.raises(ScanFormatError, match="SchemaVersion"):
        check_report(
            KINDS["trivy"], b'{"matches": []}', image_digest=IMAGE, config_digest=no_config
        )
    with pytest.raises(ScanFormatError, match="matches"):
        check_report(KINDS["grype"], trivy(), image_digest=IMAGE, config_digest=no_config)


def test_the_created_annotation_dates_a_report_without_its_own_time() -> None:
    when = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    report = check_report(
        KINDS["trivy"], trivy(), image_digest=IMAGE, config_digest=no_config, created=when
    )
    assert report.scanned_at == when


def desc(digest: str, created: str | None) -> Descriptor:
    return Descriptor(
        media_type="application/vnd.oci.image.manifest.v1+json",
        digest=digest,
        size=1,
        artifact_type=TRIVY_REPORT_TYPE,
        annotations={CREATED: created} if created else None,
    )


def test_newest_by_created_then_by_digest_and_undated_last() -> None:
    a = desc("sha256:" + "a" * 64, "2026-12-01T10:00:00Z")
    b = desc("sha256:" + "b" * 64, "2026-12-01T10:00:00Z")
    c = desc("sha256:" + "c" * 64, "2026-12-01T11:00:00Z")
    undated = desc("sha256:" + "f" * 64, None)
    garbled = desc("sha256:" + "e" * 64, "yesterday")
    assert newest_first([undated, a, garbled, b, c]) == [c, b, a, undated, garbled]


def test_the_manifest_attach_pushes() -> None:
    report = b'{"SchemaVersion": 2}'
    subject = desc(IMAGE, None)
    raw = report_manifest(
        KINDS["trivy"], subject, report, created=datetime(2026, 12, 1, 12, tzinfo=UTC)
    )
    doc = json.loads(raw)
    assert doc["artifactType"] == TRIVY_REPORT_TYPE
    assert doc["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": compute_digest(b"{}"),
        "size": 2,
    }
    assert doc["layers"] == [
        {"mediaType": "application/json", "digest": compute_digest(report), "size": len(report)}
    ]
    assert doc["subject"]["digest"] == IMAGE
    assert doc["annotations"] == {CREATED: "2026-12-01T12:00:00Z"}
