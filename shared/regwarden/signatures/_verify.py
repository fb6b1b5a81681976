"""One entry point for every cosign signature layer discovery finds.

Layers are routed by media type: simple-signing (legacy `.sig`), DSSE envelopes (legacy
`.att`), Sigstore bundles (v3 referrers). Anything else is not a signature and is not
counted. One result per signature; a bad signature never raises.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import SignatureResult
from ._bundle import verify_bundle
from ._dsse import predicate_type_hint
from ._errors import SignatureFormatError
from ._legacy import (
    is_legacy_attestation,
    is_legacy_signature,
    verify_legacy_attestation,
    verify_legacy_signature,
)
from ._model import (
    BUNDLE_MEDIA_TYPES,
    COSIGN_SIGN_PREDICATE,
    AttestationResult,
    CosignPolicy,
    SignatureCandidate,
    require_image_digest,
)
from ._util import digest_of, load_json_object, matches_digest


def _bundle_predicate(candidate: SignatureCandidate) -> str | None:
    """The predicate type a bundle claims (unauthenticated; routing only)."""
    hint = candidate.layer.annotations.get("dev.sigstore.bundle.predicateType")
    if hint:
        return hint
    try:
        doc = load_json_object(candidate.blob, "bundle")
    except SignatureFormatError:
        return None
    envelope = doc.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        return None
    payload = envelope.get("payload")
    if not isinstance(payload, str):
        return None
    import base64
    import binascii

    try:
        return predicate_type_hint(base64.b64decode(payload))
    except (binascii.Error, ValueError):
        return None


def _is_bundle(candidate: SignatureCandidate) -> bool:
    return candidate.layer.media_type in BUNDLE_MEDIA_TYPES


def _verify_bundle_candidate(
    candidate: SignatureCandidate, image_digest: str, policy: CosignPolicy
) -> AttestationResult:
    if not matches_digest(candidate.blob, candidate.layer.digest):
        return AttestationResult(
            result=SignatureResult(
                format="cosign-bundle",
                digest=candidate.layer.digest,
                verified=False,
                reason=f"bundle blob hashes to {digest_of(candidate.blob)}, not to layer digest "
                f"{candidate.layer.digest}",
            )
        )
    outcome = verify_bundle(
        candidate.blob, expected_digest=image_digest, policy=policy, digest=candidate.layer.digest
    )
    statement = outcome.statement
    predicate = statement.get("predicateType") if statement is not None else None
    return AttestationResult(
        result=outcome.result,
        predicate_type=predicate if isinstance(predicate, str) else None,
        statement=statement,
    )


def verify_candidates(
    candidates: Iterable[SignatureCandidate], *, image_digest: str, policy: CosignPolicy
) -> list[SignatureResult]:
    """Verify every cosign image signature among `candidates` (one result each).

    Legacy simple-signing layers and Sigstore bundles whose statement is a cosign image
    signature (`https://sigstore.dev/cosign/sign/v1`) or a message signature are
    signatures; attestations and other attachments are skipped here (see
    `verify_attestations`).
    """
    require_image_digest(image_digest)
    results: list[SignatureResult] = []
    for candidate in candidates:
        layer = candidate.layer
        if is_legacy_signature(layer):
            results.append(
                verify_legacy_signature(candidate, image_digest=image_digest, policy=policy)
            )
        elif _is_bundle(candidate):
            predicate = _bundle_predicate(candidate)
            if predicate not in (None, COSIGN_SIGN_PREDICATE):
                continue
            results.append(_verify_bundle_candidate(candidate, image_digest, policy).result)
    return results


def verify_attestations(
    candidates: Iterable[SignatureCandidate], *, image_digest: str, policy: CosignPolicy
) -> list[AttestationResult]:
    """Verify every in-toto attestation (legacy `.att` DSSE layers and DSSE bundles).

    `policy.predicate_types` lists the accepted predicate types; a verified result carries
    the statement (e.g. a cosign vulnerability predicate for the scanning module).
    """
    require_image_digest(image_digest)
    results: list[AttestationResult] = []
    for candidate in candidates:
        if is_legacy_attestation(candidate.layer):
            results.append(
                verify_legacy_attestation(candidate, image_digest=image_digest, policy=policy)
            )
        elif _is_bundle(candidate):
            predicate = _bundle_predicate(candidate)
            if predicate in (None, COSIGN_SIGN_PREDICATE):
                continue
            results.append(_verify_bundle_candidate(candidate, image_digest, policy))
    return results
