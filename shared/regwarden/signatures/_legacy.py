"""Cosign legacy (tag-based) signatures and attestations: `sha256-<hex>.sig` / `.att`.

Verification of one signature layer follows cosign's `verifyOCISignature` and
`SimpleClaimVerifier`:

1. the blob hashes to the layer digest;
2. the `dev.cosignproject.cosign/signature` annotation verifies over the raw blob bytes
   (never re-serialised) with one of the trusted keys;
3. the payload claims: `critical.type` is the cosign type and
   `critical.image.docker-manifest-digest` is the image digest; optionally the
   `critical.identity.docker-reference` and `optional` annotations;
4. the Rekor SET in `dev.sigstore.cosign/bundle`, when present (and required by policy):
   signed by a trusted log, recording this payload hash, signature and key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidReference
from ..model import SignatureResult
from ..reference import ImageRef
from ._dsse import check_statement, pae, parse_envelope_json
from ._errors import SignatureFormatError
from ._model import (
    ANNOTATION_BUNDLE,
    ANNOTATION_CERTIFICATE,
    ANNOTATION_SIGNATURE,
    DSSE_MEDIA_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    SIMPLE_SIGNING_TYPE,
    AttestationResult,
    CosignPolicy,
    SignatureCandidate,
    SignatureLayer,
    SignatureManifest,
)
from ._rekor import parse_legacy_bundle, verify_entry
from ._util import (
    array,
    b64decode,
    check_digest,
    digest_of,
    load_json_object,
    matches_digest,
    opt_obj,
    string,
)
from .keys import PublicKey

_MANIFEST_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    }
)
_CONTAINERS_PREFIX = b"\x00sigstore-json\n"
_MAX_LAYERS = 1024


# --------------------------------------------------------------------------- parsing


def parse_signature_manifest(data: bytes) -> SignatureManifest:
    """Parse a `.sig` / `.att` manifest or a referrer manifest (OCI or Docker schema 2)."""
    what = "signature manifest"
    doc = load_json_object(data, what)
    if doc.get("schemaVersion") != 2:
        raise SignatureFormatError(
            f"{what}: got schemaVersion {doc.get('schemaVersion')!r}, expected 2"
        )
    media_type = doc.get("mediaType", "application/vnd.oci.image.manifest.v1+json")
    if media_type not in _MANIFEST_TYPES:
        raise SignatureFormatError(
            f"{what}: got media type {media_type!r}, expected one of {sorted(_MANIFEST_TYPES)}"
        )
    layers_doc = array(doc, "layers", what)
    if len(layers_doc) > _MAX_LAYERS:
        raise SignatureFormatError(f"{what}: {len(layers_doc)} layers, at most {_MAX_LAYERS}")
    layers = tuple(_layer(item, f"{what}.layers[{i}]") for i, item in enumerate(layers_doc))
    subject = opt_obj(doc, "subject", what)
    artifact_type = doc.get("artifactType")
    config = opt_obj(doc, "config", what) or {}
    return SignatureManifest(
        media_type=media_type,
        layers=layers,
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        subject_digest=check_digest(string(subject, "digest", what), f"{what}.subject.digest")
        if subject is not None
        else None,
        config=config,
        annotations=_annotations(doc, what),
    )


def _annotations(doc: Mapping[str, Any], what: str) -> dict[str, str]:
    value = doc.get("annotations")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SignatureFormatError(f"{what}: annotations must map strings to strings")
    return dict(value)


def _layer(item: object, what: str) -> SignatureLayer:
    if not isinstance(item, dict):
        raise SignatureFormatError(f"{what}: expected an object")
    size = item.get("size")
    if size is not None and (type(size) is not int or size < 0):
        raise SignatureFormatError(f"{what}: size got {size!r}, expected a non-negative integer")
    return SignatureLayer(
        media_type=string(item, "mediaType", what),
        digest=check_digest(string(item, "digest", what), f"{what}.digest"),
        size=size,
        annotations=_annotations(item, what),
    )


def parse_containers_signature(data: bytes, *, manifest_digest: str = "") -> SignatureCandidate:
    """A signature stored by containers/image (`dir:` transport, `signature-N` files).

    Form: the bytes `\\x00sigstore-json\\n`, then JSON `{"mimeType", "payload" (base64 of
    the layer blob), "annotations"}`. The layer digest is the blob's sha256.
    """
    what = "containers/image sigstore signature"
    if not data.startswith(_CONTAINERS_PREFIX):
        raise SignatureFormatError(f"{what}: missing the \\x00sigstore-json prefix")
    doc = load_json_object(data[len(_CONTAINERS_PREFIX) :], what)
    blob = b64decode(string(doc, "payload", what), f"{what}.payload")
    layer = SignatureLayer(
        media_type=string(doc, "mimeType", what),
        digest=digest_of(blob),
        size=len(blob),
        annotations=_annotations(doc, what),
    )
    return SignatureCandidate(manifest_digest=manifest_digest, layer=layer, blob=blob)


# --------------------------------------------------------------------------- payload claims


def _ci(doc: Mapping[str, Any], name: str) -> Any:
    """Go's encoding/json field lookup: case-insensitive, the last matching key wins."""
    found: Any = None
    folded = name.casefold()
    for key, value in doc.items():
        if key.casefold() == folded:
            found = value
    return found


@dataclass(frozen=True, slots=True)
class SimpleSigningClaims:
    type: str
    manifest_digest: str
    docker_reference: str | None
    optional: Mapping[str, Any] | None


def parse_payload(blob: bytes) -> SimpleSigningClaims:
    """The cosign simple-signing payload, with very old payloads' key case normalised."""
    what = "simple-signing payload"
    doc = load_json_object(blob, what)
    critical = _ci(doc, "critical")
    if not isinstance(critical, dict):
        raise SignatureFormatError(f"{what}: no 'critical' object")
    image = _ci(critical, "image")
    identity = _ci(critical, "identity")
    kind = _ci(critical, "type")
    digest = _ci(image, "docker-manifest-digest") if isinstance(image, dict) else None
    reference = _ci(identity, "docker-reference") if isinstance(identity, dict) else None
    optional = _ci(doc, "optional")
    if not isinstance(kind, str):
        raise SignatureFormatError(f"{what}: critical.type got {kind!r}, expected a string")
    if not isinstance(digest, str):
        raise SignatureFormatError(
            f"{what}: critical.image.docker-manifest-digest got {digest!r}, expected a string"
        )
    if optional is not None and not isinstance(optional, dict):
        raise SignatureFormatError(
            f"{what}: optional got {type(optional).__name__}, expected an object"
        )
    return SimpleSigningClaims(
        type=kind,
        manifest_digest=digest,
        docker_reference=reference if isinstance(reference, str) else None,
        optional=optional,
    )


def _reference_matches(got: str | None, expected: str) -> bool:
    if got is None:
        return False
    if got == expected:
        return True
    try:
        want = ImageRef.parse(expected)
        have = ImageRef.parse(got)
    except InvalidReference:
        return False
    if (have.registry, have.repository) != (want.registry, want.repository):
        return False
    return want.tag is None or have.tag == want.tag


def check_claims(claims: SimpleSigningClaims, image_digest: str, policy: CosignPolicy) -> str:
    """'' when the claims hold, else the reason."""
    if claims.type != SIMPLE_SIGNING_TYPE:
        return f"payload critical.type got {claims.type!r}, expected {SIMPLE_SIGNING_TYPE!r}"
    if claims.manifest_digest != image_digest:
        return (
            f"payload is for {claims.manifest_digest}, expected {image_digest} "
            "(signature belongs to another image)"
        )
    if policy.docker_reference is not None and not _reference_matches(
        claims.docker_reference, policy.docker_reference
    ):
        return (
            f"payload docker-reference got {claims.docker_reference!r}, "
            f"expected {policy.docker_reference!r}"
        )
    for key, want in policy.annotations.items():
        have = (claims.optional or {}).get(key)
        if have != want:
            return f"payload annotation {key!r} got {have!r}, expected {want!r}"
    return ""


# --------------------------------------------------------------------------- verification


def _result(
    candidate: SignatureCandidate, verified: bool, reason: str, signer: str | None = None
) -> SignatureResult:
    return SignatureResult(
        format="cosign-legacy",
        digest=candidate.layer.digest,
        verified=verified,
        signer=signer,
        reason=reason,
    )


def _find_key(policy: CosignPolicy, signature: bytes, data: bytes) -> PublicKey | None:
    for key in policy.keys:
        if key.verify(signature, data):
            return key
    return None


def _tlog_reason(
    candidate: SignatureCandidate, policy: CosignPolicy, signature: bytes, key: PublicKey
) -> tuple[str, str]:
    """(failure reason, success note) for the Rekor SET annotation."""
    text = candidate.layer.annotations.get(ANNOTATION_BUNDLE)
    if text is None:
        if policy.require_tlog:
            return "no Rekor bundle annotation, but a transparency-log entry is required", ""
        return "", ""
    root = policy.trusted_root
    if root is None or not root.tlogs:
        return "", "; Rekor bundle present but not checked (no Rekor key configured)"
    try:
        entry = parse_legacy_bundle(text)
    except SignatureFormatError as exc:
        return str(exc), ""
    reason = verify_entry(
        entry, root, signatures=[signature], data_digest=digest_of(candidate.blob), key=key
    )
    if reason:
        return f"Rekor bundle rejected: {reason}", ""
    when = datetime.fromtimestamp(entry.integrated_time, tz=UTC).isoformat()
    return "", f"; Rekor entry {entry.log_index} integrated {when}"


def verify_legacy_signature(
    candidate: SignatureCandidate, *, image_digest: str, policy: CosignPolicy
) -> SignatureResult:
    layer = candidate.layer
    if not matches_digest(candidate.blob, layer.digest):
        return _result(
            candidate,
            False,
            f"payload blob hashes to {digest_of(candidate.blob)}, "
            f"not to layer digest {layer.digest}",
        )
    encoded = layer.annotations.get(ANNOTATION_SIGNATURE)
    if encoded is None:
        return _result(candidate, False, f"layer has no {ANNOTATION_SIGNATURE} annotation")
    try:
        signature = b64decode(encoded, "signature annotation")
    except SignatureFormatError as exc:
        return _result(candidate, False, str(exc))
    if not policy.keys:
        if ANNOTATION_CERTIFICATE in layer.annotations:
            return _result(
                candidate,
                False,
                "keyless legacy (.sig) signatures are not verified by regwarden; use a key or "
                "cosign v3 bundles",
            )
        return _result(candidate, False, "no key configured for legacy signatures")
    key = _find_key(policy, signature, candidate.blob)
    if key is None:
        return _result(
            candidate,
            False,
            f"signature does not verify with any of the {len(policy.keys)} configured key(s)",
        )
    try:
        claims = parse_payload(candidate.blob)
    except SignatureFormatError as exc:
        return _result(candidate, False, str(exc), key.key_id)
    if reason := check_claims(claims, image_digest, policy):
        return _result(candidate, False, reason, key.key_id)
    reason, note = _tlog_reason(candidate, policy, signature, key)
    if reason:
        return _result(candidate, False, reason, key.key_id)
    return _result(candidate, True, f"verified with key {key.key_id[:12]}{note}", key.key_id)


def verify_legacy_attestation(
    candidate: SignatureCandidate, *, image_digest: str, policy: CosignPolicy
) -> AttestationResult:
    """A `.att` layer: DSSE envelope (in-toto statement) signed with a trusted key."""

    def fail(reason: str, signer: str | None = None) -> AttestationResult:
        return AttestationResult(result=_result(candidate, False, reason, signer))

    if policy.require_tlog:
        return fail("transparency-log checks of legacy (.att) attestations are not supported")
    if not matches_digest(candidate.blob, candidate.layer.digest):
        return fail(f"envelope blob hashes to {digest_of(candidate.blob)}, not to layer digest")
    try:
        envelope = parse_envelope_json(candidate.blob, "DSSE envelope")
    except SignatureFormatError as exc:
        return fail(str(exc))
    signed = pae(envelope.payload_type, envelope.payload)
    key = next(
        (k for k in policy.keys for sig in envelope.signatures if k.verify(sig, signed)), None
    )
    if key is None:
        return fail(
            f"envelope does not verify with any of the {len(policy.keys)} configured key(s)"
        )
    statement, reason = check_statement(
        envelope, image_digest=image_digest, predicate_types=policy.predicate_types
    )
    if statement is None:
        return fail(reason, key.key_id)
    predicate_type = str(statement.get("predicateType"))
    return AttestationResult(
        result=_result(
            candidate,
            True,
            f"attestation {predicate_type} verified with key {key.key_id[:12]}",
            key.key_id,
        ),
        predicate_type=predicate_type,
        statement=statement,
    )


def is_legacy_signature(layer: SignatureLayer) -> bool:
    return layer.media_type == SIMPLE_SIGNING_MEDIA_TYPE


def is_legacy_attestation(layer: SignatureLayer) -> bool:
    return layer.media_type == DSSE_MEDIA_TYPE
