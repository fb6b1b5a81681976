"""Inputs and options of cosign verification: what discovery hands over, and the policy."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..model import SignatureResult
from ._errors import SignatureFormatError
from ._trust import TrustedRoot
from .keys import PublicKey

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUNDLE_MEDIA_TYPES = frozenset(
    {
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    }
)
BUNDLE_V03_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
COSIGN_VULN_PREDICATE = "https://cosign.sigstore.dev/attestation/vuln/v1"
VERDICT_PREDICATE = "https://regwarden.dev/attestations/verdict/v1"
"""regwarden's own verdict attestations (`regwarden.attest`): defined here, beside the other
predicate types, so that intake can recognise them without loading the attester."""
SLSA_PROVENANCE_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
SIMPLE_SIGNING_TYPE = "cosign container image signature"

ANNOTATION_SIGNATURE = "dev.cosignproject.cosign/signature"
ANNOTATION_CERTIFICATE = "dev.sigstore.cosign/certificate"
ANNOTATION_CHAIN = "dev.sigstore.cosign/chain"
ANNOTATION_BUNDLE = "dev.sigstore.cosign/bundle"
ANNOTATION_RFC3161 = "dev.sigstore.cosign/rfc3161timestamp"
ANNOTATION_PREDICATE_TYPE = "predicateType"


@dataclass(frozen=True, slots=True)
class SignatureLayer:
    """One layer descriptor of a signature, attestation or referrer manifest."""

    media_type: str
    digest: str
    size: int | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SignatureManifest:
    """A parsed `.sig` / `.att` manifest or an OCI 1.1 referrer manifest."""

    media_type: str
    layers: tuple[SignatureLayer, ...]
    artifact_type: str | None = None
    subject_digest: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SignatureCandidate:
    """What discovery produces for each signature layer it fetched.

    `manifest_digest` is the digest of the manifest that listed the layer (the `.sig` /
    `.att` manifest or the referrer manifest); `blob` is the layer's content as fetched
    (its digest is checked against `layer.digest` before anything else).
    """

    manifest_digest: str
    layer: SignatureLayer
    blob: bytes


@dataclass(frozen=True, slots=True)
class KeylessIdentity:
    """A Fulcio certificate identity: SAN and OIDC issuer, each exact or a regex.

    Exactly one of `subject` / `subject_regex` and one of `issuer` / `issuer_regex` is
    required, as with `cosign verify --certificate-identity[-regexp]
    --certificate-oidc-issuer[-regexp]`.
    Regexes must match the whole value.
    """

    subject: str | None = None
    issuer: str | None = None
    subject_regex: str | None = None
    issuer_regex: str | None = None

    def __post_init__(self) -> None:
        if (self.subject is None) == (self.subject_regex is None):
            raise UsageError(
                "keyless identity needs exactly one of subject, subject_regex; "
                f"got subject={self.subject!r} subject_regex={self.subject_regex!r}"
            )
        if (self.issuer is None) == (self.issuer_regex is None):
            raise UsageError(
                "keyless identity needs exactly one of issuer, issuer_regex; "
                f"got issuer={self.issuer!r} issuer_regex={self.issuer_regex!r}"
            )
        for pattern in (self.subject_regex, self.issuer_regex):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise UsageError(f"invalid identity regex {pattern!r}: {exc}") from None

    def matches(self, sans: set[str], issuer: str | None) -> bool:
        if issuer is None:
            return False
        if self.issuer is not None and issuer != self.issuer:
            return False
        if self.issuer_regex is not None and not re.fullmatch(self.issuer_regex, issuer):
            return False
        if self.subject is not None:
            return self.subject in sans
        assert self.subject_regex is not None
        return any(re.fullmatch(self.subject_regex, san) for san in sans)

    def __str__(self) -> str:
        subject = self.subject if self.subject is not None else f"~{self.subject_regex}"
        issuer = self.issuer if self.issuer is not None else f"~{self.issuer_regex}"
        return f"{subject} ({issuer})"


@dataclass(frozen=True, slots=True)
class CosignPolicy:
    """What a cosign signature must satisfy.

    - `keys`: trusted public keys (key-based signatures).
    - `identities` + `trusted_root`: keyless signatures (Fulcio certificates).
    - `trusted_root`: also the Rekor keys (SETs, inclusion proofs) and TSAs.
    - `require_tlog`: a verified transparency-log entry is mandatory.
    - `require_timestamp`: a verified RFC 3161 timestamp is mandatory (bundles).
    - `docker_reference`: when set, the legacy payload's `critical.identity.docker-reference`
      must name this repository (and this tag, if it has one).
    - `annotations`: each must appear, with this exact value, in the payload's `optional`.
    - `predicate_types`: the in-toto predicate types accepted for bundles and attestations.
    """

    keys: tuple[PublicKey, ...] = ()
    identities: tuple[KeylessIdentity, ...] = ()
    trusted_root: TrustedRoot | None = None
    require_tlog: bool = False
    require_timestamp: bool = False
    docker_reference: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    predicate_types: frozenset[str] = frozenset({COSIGN_SIGN_PREDICATE})

    def __post_init__(self) -> None:
        if not self.keys and not self.identities:
            raise UsageError(
                "cosign policy trusts nothing: give at least one key or keyless identity"
            )
        if self.identities and (self.trusted_root is None or not self.trusted_root.raw):
            raise UsageError("keyless identities need a trusted root (trusted_root.json)")
        if (self.require_tlog or self.require_timestamp) and self.trusted_root is None:
            raise UsageError(
                "require_tlog / require_timestamp need a trusted root with log and TSA keys"
            )
        if not self.predicate_types:
            raise UsageError("predicate_types is empty; give at least one predicate type")


@dataclass(frozen=True, slots=True)
class AttestationResult:
    """A verified (or rejected) in-toto attestation and, when verified, its statement."""

    result: SignatureResult
    predicate_type: str | None = None
    statement: Mapping[str, Any] | None = None


def require_image_digest(value: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(
        r"sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128}", value
    ):
        raise SignatureFormatError(
            f"image digest got {value!r}, expected sha256:<64 lowercase hex>"
        )
    return value
