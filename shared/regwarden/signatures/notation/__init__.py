"""Notation (Notary Project v1) signature verification in pure Python.

    doc = load_trust_policy("notation/trustpolicy.json")
    store = load_trust_store("notation/truststore")
    result = verify_notation(envelope_bytes, "application/jose+json",
                             target=("application/vnd.oci.image.manifest.v1+json", digest, size),
                             reference=image_ref, trust_policy=doc, trust_store=store,
                             now=datetime.now(UTC))
    result.raise_if_failed()

JWS and COSE envelopes, OCI and blob trust policies, RFC 3161 timestamps. Revocation is
offline only (see docs/decisions.md).
"""

from ._envelope import MEDIA_TYPE_COSE, MEDIA_TYPE_JWS, PAYLOAD_CONTENT_TYPE, Target
from ._errors import NotationError
from ._policy import (
    SignatureVerification,
    TrustPolicyDocument,
    TrustPolicyStatement,
    ValidationAction,
    ValidationType,
    load_trust_policy,
    parse_trust_policy,
)
from ._truststore import TrustStore, load_trust_store
from ._verify import NotationResult, ValidationOutcome, parse_envelope, verify_notation

__all__ = [
    "MEDIA_TYPE_COSE",
    "MEDIA_TYPE_JWS",
    "PAYLOAD_CONTENT_TYPE",
    "NotationError",
    "NotationResult",
    "SignatureVerification",
    "Target",
    "TrustPolicyDocument",
    "TrustPolicyStatement",
    "TrustStore",
    "ValidationAction",
    "ValidationOutcome",
    "ValidationType",
    "load_trust_policy",
    "load_trust_store",
    "parse_envelope",
    "parse_trust_policy",
    "verify_notation",
]
