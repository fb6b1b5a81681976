"""Recognise signature, attestation and referrer pushes."""

from __future__ import annotations

import re

from ..errors import IntakeError
from ..jsondoc import load_json
from ._common import digest_at

# cosign attaches to `sha256-<hex>.sig|.att|.sbom`; the OCI 1.1 referrers tag schema (the
# fallback index for registries without the referrers API) is the bare `sha256-<hex>`.
_SIGNATURE_TAG = re.compile(r"(sha256)-([0-9a-f]{64})(?:\.(?:sig|att|sbom))?")


def signature_subject(tag: str | None) -> str | None:
    """The subject digest a signature/attestation/referrer tag points at, else None.

    `sha256-<hex>.sig`, `.att`, `.sbom` (cosign) and `sha256-<hex>` (OCI referrers tag
    schema) give `sha256:<hex>`. Other algorithms are not recognised: the tag schema
    truncates longer digests, so the subject could not be recovered exactly.
    """
    if not tag:
        return None
    m = _SIGNATURE_TAG.fullmatch(tag)
    if m is None:
        return None
    return f"{m.group(1)}:{m.group(2)}"


def manifest_subject(manifest: bytes) -> str | None:
    """The `subject.digest` of an OCI manifest body (a referrer), or None without one.

    Distribution events do not carry the manifest body; use this after fetching it to
    tell a referrer (signature, SBOM, attestation) from an image. Raises IntakeError.
    """
    root = load_json(manifest, label="manifest", error=IntakeError)
    subject = root.field("subject")
    if not subject.present:
        return None
    return digest_at(subject.field("digest"))
