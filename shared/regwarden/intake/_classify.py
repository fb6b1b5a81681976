"""What a pushed manifest is, before anything judges it (DESIGN "What a pushed manifest is").

Registries notify every manifest write, not every image: a multi-arch push writes each
platform's manifest (by digest, untagged) before the index; `regwarden sign --format
bundle` writes a referrer by digest; cosign writes `sha256-<hex>.sig`. Judging each of
those as an image quarantines signatures and breaks indexes. One pure function decides,
for every intake (distribution, Harbor, ECR, and the clouds that follow):

- `EVIDENCE`: a signature, attestation, SBOM or other referrer: re-evaluate its subject,
  never judge, quarantine or delete it — except regwarden's own verdict attestation
  (`regwarden_verdict`), which re-evaluates nothing (the next verdict would push the next);
- `INDEX`: an image index, judged as one unit (signatures and scans on the index digest);
- `IMAGE`: a tagged image manifest, judged now;
- `UNTAGGED`: an image manifest pushed by digest with no tag: wait the settle window, then
  judge it only if no index in the repository lists it.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ..oci import INDEX_TYPES
from ._signatures import signature_subject

__all__ = [
    "EVIDENCE_MEDIA_TYPES",
    "Classified",
    "ManifestRole",
    "classify_manifest",
    "is_verdict_attestation",
]

#: Artifact, config and layer media types of signatures, attestations, SBOMs and scan
#: reports: a manifest carrying one of these is evidence about another image.
EVIDENCE_MEDIA_TYPES: frozenset[str] = frozenset(
    {
        # cosign: legacy signatures, attestations, attachments; Sigstore bundles
        "application/vnd.dev.cosign.simplesigning.v1+json",
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        "application/vnd.dev.cosign.artifact.sbom.v1+json",
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "application/vnd.dsse.envelope.v1+json",
        "application/vnd.in-toto+json",
        # Notation
        "application/vnd.cncf.notary.signature",
        "application/jose+json",
        "application/cose",
        # SBOMs and scan reports attached with oras / cosign attach
        "application/spdx+json",
        "text/spdx",
        "text/spdx+json",
        "application/vnd.cyclonedx+json",
        "application/vnd.cyclonedx+xml",
        "application/vnd.syft+json",
        "application/sarif+json",
        "application/vnd.aquasec.trivy.report+json",
        "application/vnd.anchore.grype.report+json",
        # scan reports attached by `regwarden attach` (scanning.referrer_reports)
        "application/vnd.regwarden.report.trivy+json",
        "application/vnd.regwarden.report.grype+json",
    }
)
_EVIDENCE_PREFIXES = (
    "application/vnd.dev.sigstore.bundle",
    "application/vnd.dev.cosign.",
    "application/vnd.cncf.notary.",
    "application/vnd.in-toto",
)


class ManifestRole(enum.StrEnum):
    EVIDENCE = "evidence"
    INDEX = "index"
    IMAGE = "image"
    UNTAGGED = "untagged"


@dataclass(frozen=True, slots=True)
class Classified:
    role: ManifestRole
    subject: str | None = None
    """For EVIDENCE: the digest of the image it is about, when known."""
    why: str = ""
    regwarden_verdict: bool = False
    """EVIDENCE that is regwarden's own verdict attestation: nothing to re-evaluate."""


def _is_evidence_type(media_type: str | None) -> bool:
    if not media_type:
        return False
    base = media_type.strip().lower()
    return base in EVIDENCE_MEDIA_TYPES or base.startswith(_EVIDENCE_PREFIXES)


def _text(doc: Mapping[str, Any], *path: str) -> str | None:
    node: Any = doc
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node if isinstance(node, str) and node else None


_BUNDLE_PREDICATE = "dev.sigstore.bundle.predicateType"
_LAYER_PREDICATE = "predicateType"  # cosign's `.att` layer annotation


def is_verdict_attestation(doc: Mapping[str, Any]) -> bool:
    """Whether a manifest carries regwarden's verdict predicate: a bundle referrer whose
    `dev.sigstore.bundle.predicateType` says so, or a cosign `.att` manifest every layer of
    which does (one with others' attestations beside it is theirs too, and counts as
    evidence). Unauthenticated, as routing only: a forged one merely goes unjudged, as a
    person's re-push of an attestation never changes a verdict anyway."""
    bundle = _text(doc, "annotations", _BUNDLE_PREDICATE)
    layers = doc.get("layers")
    claimed = [
        _text(layer, "annotations", _LAYER_PREDICATE) if isinstance(layer, Mapping) else None
        for layer in (layers if isinstance(layers, list) else ())
    ]
    if bundle is None and not any(claimed):
        return False  # no predicate named at all: an image, judged without the signatures
    from ..signatures import VERDICT_PREDICATE  # only here: its package costs ~50 ms to load

    if bundle == VERDICT_PREDICATE:
        return True
    return bool(claimed) and all(c == VERDICT_PREDICATE for c in claimed)


def classify_manifest(
    *,
    tags: Collection[str] = (),
    media_type: str | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> Classified:
    """What a manifest is. `tags`: every tag known to point at it (the event's, the
    registry's, the ledger's); `manifest`: its parsed body when it was read (without it,
    only the tags and `media_type` can speak). Pure."""
    doc: Mapping[str, Any] = manifest or {}
    if doc and is_verdict_attestation(doc):
        subject = _text(doc, "subject", "digest") or next(
            (s for s in map(signature_subject, tags) if s is not None), None
        )
        from ..signatures import VERDICT_PREDICATE  # loaded by is_verdict_attestation

        return Classified(
            ManifestRole.EVIDENCE,
            subject,
            f"regwarden's own verdict attestation ({VERDICT_PREDICATE})",
            regwarden_verdict=True,
        )
    for tag in tags:
        subject = signature_subject(tag)
        if subject is not None:
            return Classified(ManifestRole.EVIDENCE, subject, f"signature tag {tag!r}")
    subject = _text(doc, "subject", "digest")
    if subject is not None:
        return Classified(ManifestRole.EVIDENCE, subject, "a referrer (has a subject)")
    kind = _text(doc, "mediaType") or media_type
    for label, value in (
        ("artifact type", _text(doc, "artifactType")),
        ("config media type", _text(doc, "config", "mediaType")),
    ):
        if _is_evidence_type(value):
            return Classified(ManifestRole.EVIDENCE, None, f"{label} {value}")
    layers = doc.get("layers")
    if isinstance(layers, list) and layers:
        types = [_text(layer, "mediaType") for layer in layers if isinstance(layer, Mapping)]
        if types and all(_is_evidence_type(t) for t in types):
            return Classified(ManifestRole.EVIDENCE, None, f"layer media type {types[0]}")
    if kind in INDEX_TYPES or isinstance(doc.get("manifests"), list):
        return Classified(ManifestRole.INDEX, None, "an image index")
    if tags:
        return Classified(ManifestRole.IMAGE, None, "a tagged image manifest")
    return Classified(ManifestRole.UNTAGGED, None, "an image manifest pushed by digest, untagged")
