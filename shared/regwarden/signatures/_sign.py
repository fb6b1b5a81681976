"""A cosign-compatible signer and attester (pure: returns what to push, pushes nothing).

- `sign_legacy`: the simple-signing payload, its signature annotation and the `.sig`
  manifest (cosign's layout: an OCI config whose `rootfs.diff_ids` lists the payloads);
  appending to an existing `.sig` manifest keeps its layers.
- `sign_bundle`: a v0.3 Sigstore bundle (DSSE in-toto statement, predicate
  `https://sigstore.dev/cosign/sign/v1`, `publicKey.hint`) in an OCI 1.1 referrer manifest.
  No transparency-log entry is made, as with `cosign sign --tlog-upload=false`.
- `attest_legacy` / `attest_bundle`: in-toto attestations (vuln, SLSA provenance, any URI)
  as a `.att` DSSE layer or as a bundle referrer.

Each returns a `SignedArtifact`: manifest bytes and media type, the blobs to upload first
(digest → bytes), and where the manifest goes: a tag (`sha256-<hex>.sig` / `.att`) or a
subject (referrers; registries without the referrers API use the `sha256-<hex>` index tag).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ..errors import UsageError
from ._dsse import pae
from ._legacy import parse_signature_manifest
from ._model import (
    ANNOTATION_PREDICATE_TYPE,
    ANNOTATION_SIGNATURE,
    BUNDLE_V03_MEDIA_TYPE,
    COSIGN_SIGN_PREDICATE,
    COSIGN_VULN_PREDICATE,
    DSSE_MEDIA_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    SIMPLE_SIGNING_TYPE,
    SLSA_PROVENANCE_V02,
    SLSA_PROVENANCE_V1,
    SignatureLayer,
    require_image_digest,
)
from ._util import digest_of, go_json
from .keys import PrivateKey, PublicKey

if TYPE_CHECKING:  # the attest package builds on this one: no import at run time
    from ..attest import Signer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
_ZERO_TIME = "0001-01-01T00:00:00Z"

PREDICATE_TYPES: Mapping[str, str] = {
    "vuln": COSIGN_VULN_PREDICATE,
    "slsaprovenance": SLSA_PROVENANCE_V02,
    "slsaprovenance02": SLSA_PROVENANCE_V02,
    "slsaprovenance1": SLSA_PROVENANCE_V1,
}


@dataclass(frozen=True, slots=True)
class SignedArtifact:
    """A manifest to push, with its blobs and its destination (tag or subject)."""

    manifest: bytes
    media_type: str
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    tag: str | None = None
    subject: Mapping[str, Any] | None = None

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)


def signature_tag(image_digest: str, suffix: str = "sig") -> str:
    """`sha256:<hex>` → `sha256-<hex>.sig` (or `.att`); empty suffix → the referrers tag."""
    require_image_digest(image_digest)
    base = image_digest.replace(":", "-", 1)
    return f"{base}.{suffix}" if suffix else base


def resolve_predicate_type(name: str) -> str:
    """`vuln`, `slsaprovenance` (v0.2), `slsaprovenance1`, or a predicate type URI."""
    if name in PREDICATE_TYPES:
        return PREDICATE_TYPES[name]
    if name.startswith(("https://", "http://")):
        return name
    valid = ", ".join(PREDICATE_TYPES)
    raise UsageError(f"unknown attestation type {name!r}; valid: {valid}, or a predicate type URI")


def simple_signing_payload(
    image_digest: str, docker_reference: str, annotations: Mapping[str, str] | None = None
) -> bytes:
    """The exact bytes `cosign sign` writes (Go struct order; `optional` keys sorted)."""
    require_image_digest(image_digest)
    optional = {k: annotations[k] for k in sorted(annotations)} if annotations else None
    return go_json(
        {
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": image_digest},
                "type": SIMPLE_SIGNING_TYPE,
            },
            "optional": optional,
        }
    )


def _descriptor(
    media_type: str, data: bytes, annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": media_type, "size": len(data), "digest": digest_of(data)}
    if annotations:
        out["annotations"] = dict(annotations)
    return out


def _layer_descriptor(layer: SignatureLayer) -> dict[str, Any]:
    if layer.size is None:
        raise UsageError(f"existing signature layer {layer.digest} has no size; cannot append")
    out: dict[str, Any] = {
        "mediaType": layer.media_type,
        "size": layer.size,
        "digest": layer.digest,
    }
    if layer.annotations:
        out["annotations"] = dict(layer.annotations)
    return out


def _attachment_manifest(
    new_layer: dict[str, Any],
    blob: bytes,
    existing_manifest: bytes | None,
    tag: str,
) -> SignedArtifact:
    media_type = OCI_MANIFEST
    layers: list[dict[str, Any]] = []
    if existing_manifest is not None:
        existing = parse_signature_manifest(existing_manifest)
        media_type = existing.media_type
        layers = [_layer_descriptor(layer) for layer in existing.layers]
    duplicate = any(
        layer["digest"] == new_layer["digest"]
        and layer.get("annotations") == new_layer.get("annotations")
        for layer in layers
    )
    if not duplicate:
        layers.append(new_layer)
    config = go_json(
        {
            "architecture": "",
            "created": _ZERO_TIME,
            "history": [{"created": _ZERO_TIME} for _ in layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
            "config": {},
        }
    )
    config_type = DOCKER_CONFIG if media_type == DOCKER_MANIFEST else OCI_CONFIG
    manifest = go_json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": _descriptor(config_type, config),
            "layers": layers,
        }
    )
    blobs = {digest_of(config): config}
    if not duplicate:
        blobs[new_layer["digest"]] = blob
    return SignedArtifact(manifest=manifest, media_type=media_type, blobs=blobs, tag=tag)


def sign_legacy(
    *,
    image_digest: str,
    docker_reference: str,
    key: PrivateKey,
    annotations: Mapping[str, str] | None = None,
    existing_manifest: bytes | None = None,
) -> SignedArtifact:
    """Sign like `cosign sign --new-bundle-format=false`: a `.sig` tag layer."""
    payload = simple_signing_payload(image_digest, docker_reference, annotations)
    signature = key.sign(payload, style="legacy")
    layer = _descriptor(
        SIMPLE_SIGNING_MEDIA_TYPE,
        payload,
        {ANNOTATION_SIGNATURE: base64.b64encode(signature).decode("ascii")},
    )
    return _attachment_manifest(
        layer, payload, existing_manifest, signature_tag(image_digest, "sig")
    )


def in_toto_statement(
    image_digest: str,
    predicate_type: str,
    predicate: Mapping[str, Any],
    *,
    name: str | None,
    v1: bool,
) -> bytes:
    """The in-toto statement an attestation signs (v1 for bundles, v0.1 as cosign's
    legacy `.att` writes it), serialised as cosign does."""
    algo, _, hexpart = image_digest.partition(":")
    subject: dict[str, Any] = {"digest": {algo: hexpart}}
    if name is not None:
        subject = {"name": name, **subject}
    if v1:
        doc = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [subject],
            "predicateType": predicate_type,
            "predicate": dict(predicate),
        }
    else:
        doc = {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": predicate_type,
            "subject": [subject],
            "predicate": dict(predicate),
        }
    return go_json(doc)


def _signature(key: PrivateKey | Signer, data: bytes, style: Literal["legacy", "bundle"]) -> bytes:
    """Sign as cosign does for the format: a private key (or a file signer holding one)
    picks the hash per format; a KMS signer signs the one way its key allows, which is
    what cosign does with such a key too."""
    private = key if isinstance(key, PrivateKey) else getattr(key, "private_key", None)
    if isinstance(private, PrivateKey):
        return private.sign(data, style=style)
    return key.sign(data)


def _public(key: PrivateKey | Signer) -> PublicKey:
    return key.public_key if isinstance(key, PrivateKey) else key.public_key()


def _bundle(statement: bytes, key: PrivateKey | Signer) -> bytes:
    signature = _signature(key, pae(IN_TOTO_PAYLOAD_TYPE, statement), "bundle")
    return json.dumps(
        {
            "mediaType": BUNDLE_V03_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": _public(key).hint}},
            "dsseEnvelope": {
                "payload": base64.b64encode(statement).decode("ascii"),
                "payloadType": IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(signature).decode("ascii")}],
            },
        },
        separators=(",", ":"),
    ).encode()


def _referrer(
    bundle: bytes, subject: Mapping[str, Any], predicate_type: str, created: datetime
) -> SignedArtifact:
    for name in ("mediaType", "digest", "size"):
        if name not in subject:
            raise UsageError(f"subject descriptor lacks {name!r}; expected mediaType, digest, size")
    stamp = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = go_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_V03_MEDIA_TYPE,
            "config": _descriptor(OCI_EMPTY, EMPTY_BLOB),
            "layers": [_descriptor(BUNDLE_V03_MEDIA_TYPE, bundle)],
            "subject": {
                "mediaType": subject["mediaType"],
                "size": subject["size"],
                "digest": subject["digest"],
            },
            "annotations": {
                "dev.sigstore.bundle.content": "dsse-envelope",
                "dev.sigstore.bundle.predicateType": predicate_type,
                "org.opencontainers.image.created": stamp,
            },
        }
    )
    return SignedArtifact(
        manifest=manifest,
        media_type=OCI_MANIFEST,
        blobs={digest_of(EMPTY_BLOB): EMPTY_BLOB, digest_of(bundle): bundle},
        subject=dict(subject),
    )


def sign_bundle(
    *, subject: Mapping[str, Any], key: PrivateKey, created: datetime
) -> SignedArtifact:
    """Sign like cosign v3 (`--tlog-upload=false`): a bundle referrer of `subject`.

    `subject` is the image descriptor `{"mediaType", "digest", "size"}`.
    """
    image_digest = require_image_digest(str(subject.get("digest")))
    statement = in_toto_statement(image_digest, COSIGN_SIGN_PREDICATE, {}, name=None, v1=True)
    return _referrer(_bundle(statement, key), subject, COSIGN_SIGN_PREDICATE, created)


def attest_legacy(
    *,
    image_digest: str,
    repository: str,
    key: PrivateKey | Signer,
    predicate_type: str,
    predicate: Mapping[str, Any],
    existing_manifest: bytes | None = None,
) -> SignedArtifact:
    """Attest like `cosign attest` (legacy): a DSSE layer on the `.att` tag. `key`: a
    private key or an attestation `Signer` (a KMS key)."""
    require_image_digest(image_digest)
    uri = resolve_predicate_type(predicate_type)
    statement = in_toto_statement(image_digest, uri, predicate, name=repository, v1=False)
    signature = _signature(key, pae(IN_TOTO_PAYLOAD_TYPE, statement), "legacy")
    envelope = go_json(
        {
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": base64.b64encode(statement).decode("ascii"),
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode("ascii")}],
        }
    )
    layer = _descriptor(DSSE_MEDIA_TYPE, envelope, {ANNOTATION_PREDICATE_TYPE: uri})
    return _attachment_manifest(
        layer, envelope, existing_manifest, signature_tag(image_digest, "att")
    )


def attest_bundle(
    *,
    subject: Mapping[str, Any],
    key: PrivateKey | Signer,
    predicate_type: str,
    predicate: Mapping[str, Any],
    created: datetime,
) -> SignedArtifact:
    """Attest like cosign v3: a DSSE bundle referrer with the given predicate."""
    image_digest = require_image_digest(str(subject.get("digest")))
    uri = resolve_predicate_type(predicate_type)
    statement = in_toto_statement(image_digest, uri, predicate, name=None, v1=True)
    return _referrer(_bundle(statement, key), subject, uri, created)
