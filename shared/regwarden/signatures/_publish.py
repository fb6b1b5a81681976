"""Put what the signer produced into a registry: blobs, then the manifest under its tag
(legacy `.sig`/`.att`) or as a referrer (bundles, keeping the referrers tag schema)."""

from __future__ import annotations

from ..errors import NotFound
from ..oci import RegistryClient
from ._sign import SignedArtifact


def existing_attachment(client: RegistryClient, repo: str, tag: str) -> bytes | None:
    """The current `.sig`/`.att` manifest, so a new signature is appended, not replacing."""
    try:
        return client.get_manifest(repo, tag).raw
    except NotFound:
        return None


def publish(client: RegistryClient, repo: str, artifact: SignedArtifact) -> str:
    """Push `artifact`; return the digest of its manifest."""
    for digest, data in artifact.blobs.items():
        if not client.blob_exists(repo, digest):
            client.push_blob(repo, data, digest)
    if artifact.tag is not None:
        return client.put_manifest(repo, artifact.tag, artifact.manifest, artifact.media_type)
    return client.push_referrer(repo, artifact.manifest, artifact.media_type)
