"""What a pushed manifest is: evidence, index, tagged image or untagged image (pure)."""

from __future__ import annotations

import pytest

from regwarden.intake import ManifestRole, classify_manifest

SUBJECT = "sha256:" + "ab" * 32
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IMAGE_CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:00"}
LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:01"}


def image(**extra: object) -> dict[str, object]:
    return {"mediaType": OCI_MANIFEST, "config": IMAGE_CONFIG, "layers": [LAYER], **extra}


@pytest.mark.parametrize(
    "tag",
    [f"sha256-{'ab' * 32}.sig", f"sha256-{'ab' * 32}.att", f"sha256-{'ab' * 32}.sbom"],
)
def test_cosign_tags_are_evidence_for_their_subject(tag: str) -> None:
    got = classify_manifest(tags=[tag], manifest=image())
    assert (got.role, got.subject) == (ManifestRole.EVIDENCE, SUBJECT)


def test_referrers_tag_schema_index_is_evidence() -> None:
    index = {"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    got = classify_manifest(tags=[f"sha256-{'ab' * 32}"], manifest=index)
    assert (got.role, got.subject) == (ManifestRole.EVIDENCE, SUBJECT)


def test_a_manifest_with_a_subject_is_evidence_even_when_tagged() -> None:
    got = classify_manifest(tags=["v1"], manifest=image(subject={"digest": SUBJECT}))
    assert (got.role, got.subject) == (ManifestRole.EVIDENCE, SUBJECT)
    assert "subject" in got.why


@pytest.mark.parametrize(
    ("where", "media_type"),
    [
        ("artifactType", "application/vnd.dev.sigstore.bundle.v0.3+json"),
        ("artifactType", "application/vnd.cncf.notary.signature"),
        ("artifactType", "application/spdx+json"),
        ("config", "application/vnd.cyclonedx+json"),
        ("config", "application/vnd.dev.cosign.artifact.sbom.v1+json"),
    ],
)
def test_signature_attestation_and_sbom_types_are_evidence(where: str, media_type: str) -> None:
    doc = image()
    if where == "artifactType":
        doc["artifactType"] = media_type
    else:
        doc["config"] = {"mediaType": media_type, "digest": "sha256:00"}
    got = classify_manifest(manifest=doc)
    assert got.role is ManifestRole.EVIDENCE and got.subject is None
    assert media_type in got.why


def test_cosign_legacy_signature_manifest_is_evidence_by_its_layers() -> None:
    layer = {"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": "x"}
    got = classify_manifest(manifest=image(layers=[layer]))
    assert got.role is ManifestRole.EVIDENCE


def test_an_image_with_one_evidence_layer_among_others_is_still_an_image() -> None:
    sbom = {"mediaType": "application/spdx+json", "digest": "sha256:02"}
    got = classify_manifest(tags=["v1"], manifest=image(layers=[LAYER, sbom]))
    assert got.role is ManifestRole.IMAGE


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ],
)
def test_indexes_are_one_unit_tagged_or_not(media_type: str) -> None:
    doc = {"mediaType": media_type, "manifests": [{"digest": SUBJECT}]}
    assert classify_manifest(tags=["v1"], manifest=doc).role is ManifestRole.INDEX
    assert classify_manifest(manifest=doc).role is ManifestRole.INDEX
    # without a body, the event's media type is enough
    assert classify_manifest(media_type=media_type).role is ManifestRole.INDEX


def test_tagged_and_untagged_image_manifests() -> None:
    assert classify_manifest(tags=["1.0.0"], manifest=image()).role is ManifestRole.IMAGE
    got = classify_manifest(tags=[], manifest=image())
    assert got.role is ManifestRole.UNTAGGED
    assert "by digest" in got.why


def test_a_quarantine_style_or_ordinary_tag_never_makes_evidence() -> None:
    for tag in ["sha256-short.sig", "sha512-" + "ab" * 64 + ".sig", "latest"]:
        assert classify_manifest(tags=[tag], manifest=image()).role is ManifestRole.IMAGE


def test_an_image_is_classified_without_loading_the_signatures_package() -> None:
    """The gate's first event pays no import of regwarden.signatures (~50 ms) for an image
    that names no predicate; an attestation's manifest still loads it to compare."""
    import subprocess
    import sys

    probe = (
        "import sys, json\n"
        "import regwarden.runtime\n"
        "from regwarden.intake import classify_manifest\n"
        "image = json.loads(sys.argv[1])\n"
        "classify_manifest(tags=['v1'], manifest=image)\n"
        "assert 'regwarden.signatures' not in sys.modules, 'loaded for an image'\n"
        "att = {**image, 'layers': [{**image['layers'][0], 'annotations': "
        "{'predicateType': 'https://slsa.dev/provenance/v1'}}]}\n"
        "assert not classify_manifest(tags=[], manifest=att).regwarden_verdict\n"
        "assert 'regwarden.signatures' in sys.modules\n"
    )
    import json

    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(image())],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
