"""Container image signatures: cosign legacy `.sig`, Sigstore bundles, attestations.

Pure functions over bytes. Discovery (the OCI client) fetches signature manifests and
layer blobs and hands them over as `SignatureCandidate`s; `verify_candidates` returns one
`SignatureResult` per signature and never raises for a bad signature. Structurally
unusable input raises `SignatureFormatError` (keys: `KeyFormatError`).

    policy = CosignPolicy(keys=(load_public_key(pem),))
    results = verify_candidates(candidates, image_digest="sha256:…", policy=policy)

Keys live in `regwarden.signatures.keys`. Notation lives in `regwarden.signatures.notation`.
"""

from ._bundle import BundleOutcome, ParsedBundle, parse_bundle, verify_bundle
from ._discover import (
    ContentSource,
    Discovered,
    LayoutSource,
    NotationEnvelope,
    SubjectSource,
    discover,
)
from ._errors import KeyFormatError, SignatureFormatError
from ._from_policy import (
    ATTESTATION_PREDICATES,
    KMS_CACHE_SECONDS,
    attestation_policy,
    clear_cache,
    cosign_policy,
    notation_trust,
    result_formats,
    searched,
    signature_repository,
)
from ._image import NotationTrust, VerifyReport, verify_image
from ._keyless import certificate_identity
from ._legacy import (
    SimpleSigningClaims,
    parse_containers_signature,
    parse_payload,
    parse_signature_manifest,
)
from ._model import (
    ANNOTATION_PREDICATE_TYPE,
    BUNDLE_MEDIA_TYPES,
    BUNDLE_V03_MEDIA_TYPE,
    COSIGN_SIGN_PREDICATE,
    COSIGN_VULN_PREDICATE,
    DSSE_MEDIA_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    SLSA_PROVENANCE_V02,
    SLSA_PROVENANCE_V1,
    VERDICT_PREDICATE,
    AttestationResult,
    CosignPolicy,
    KeylessIdentity,
    SignatureCandidate,
    SignatureLayer,
    SignatureManifest,
)
from ._publish import existing_attachment, publish
from ._sign import (
    SignedArtifact,
    attest_bundle,
    attest_legacy,
    in_toto_statement,
    resolve_predicate_type,
    sign_bundle,
    sign_legacy,
    signature_tag,
    simple_signing_payload,
)
from ._trust import TimestampAuthority, TransparencyLog, TrustedRoot
from ._util import digest_of, go_json
from ._verify import verify_attestations, verify_candidates
from .keys import KeyRef, PrivateKey, PublicKey, load_private_key, load_public_key

__all__ = [
    "ANNOTATION_PREDICATE_TYPE",
    "ATTESTATION_PREDICATES",
    "BUNDLE_MEDIA_TYPES",
    "BUNDLE_V03_MEDIA_TYPE",
    "COSIGN_SIGN_PREDICATE",
    "COSIGN_VULN_PREDICATE",
    "DSSE_MEDIA_TYPE",
    "KMS_CACHE_SECONDS",
    "SIMPLE_SIGNING_MEDIA_TYPE",
    "SLSA_PROVENANCE_V02",
    "SLSA_PROVENANCE_V1",
    "VERDICT_PREDICATE",
    "AttestationResult",
    "BundleOutcome",
    "ContentSource",
    "CosignPolicy",
    "Discovered",
    "KeyFormatError",
    "KeyRef",
    "KeylessIdentity",
    "LayoutSource",
    "NotationEnvelope",
    "NotationTrust",
    "ParsedBundle",
    "PrivateKey",
    "PublicKey",
    "SignatureCandidate",
    "SignatureFormatError",
    "SignatureLayer",
    "SignatureManifest",
    "SignedArtifact",
    "SimpleSigningClaims",
    "SubjectSource",
    "TimestampAuthority",
    "TransparencyLog",
    "TrustedRoot",
    "VerifyReport",
    "attest_bundle",
    "attest_legacy",
    "attestation_policy",
    "certificate_identity",
    "clear_cache",
    "cosign_policy",
    "digest_of",
    "discover",
    "existing_attachment",
    "go_json",
    "in_toto_statement",
    "load_private_key",
    "load_public_key",
    "notation_trust",
    "parse_bundle",
    "parse_containers_signature",
    "parse_payload",
    "parse_signature_manifest",
    "publish",
    "resolve_predicate_type",
    "result_formats",
    "searched",
    "sign_bundle",
    "sign_legacy",
    "signature_repository",
    "signature_tag",
    "simple_signing_payload",
    "verify_attestations",
    "verify_bundle",
    "verify_candidates",
    "verify_image",
]
