"""Notation signature manifests built here, good or broken, for layouts and registries.

A Notation signature is an OCI manifest with artifact type
`application/vnd.cncf.notary.signature`, a `subject` naming the signed image and one layer,
the JWS or COSE envelope. Tests give the layers they want, so a manifest can lie about
what it carries (a tar layer, no layer, two layers).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NOTATION_ARTIFACT = "application/vnd.cncf.notary.signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class SignatureManifest:
    manifest: bytes
    blobs: dict[str, bytes]

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)


def signature_manifest(
    subject: tuple[str, str, int], layers: Sequence[tuple[str, bytes]]
) -> SignatureManifest:
    """A Notation signature manifest over `subject` (media type, digest, size) whose
    layers are `layers` (media type, content), as notation 1.x lays it out."""
    blobs = {digest_of(EMPTY): EMPTY}
    descriptors = []
    for media_type, data in layers:
        blobs[digest_of(data)] = data
        descriptors.append({"mediaType": media_type, "digest": digest_of(data), "size": len(data)})
    media_type, digest, size = subject
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": NOTATION_ARTIFACT,
        "config": {"mediaType": OCI_EMPTY, "digest": digest_of(EMPTY), "size": len(EMPTY)},
        "layers": descriptors,
        "subject": {"mediaType": media_type, "digest": digest, "size": size},
        "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": "[]"},
    }
    return SignatureManifest(json.dumps(doc, separators=(",", ":")).encode(), blobs)


def add_to_layout(root: Path, signature: SignatureManifest) -> str:
    """Write the signature's blobs and manifest into the OCI layout at `root` and list the
    manifest, untagged, in `index.json` (where `notation sign --oci-layout` puts it)."""
    for digest, data in {**signature.blobs, signature.digest: signature.manifest}.items():
        path = root / "blobs" / "sha256" / digest.removeprefix("sha256:")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    index = json.loads((root / "index.json").read_text())
    index["manifests"].append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": signature.digest,
            "size": len(signature.manifest),
            "artifactType": NOTATION_ARTIFACT,
        }
    )
    (root / "index.json").write_text(json.dumps(index))
    return signature.digest
