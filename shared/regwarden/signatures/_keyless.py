"""Keyless (Fulcio certificate) bundles, verified offline by sigstore-python.

sigstore-python checks the certificate chain to the trusted root's Fulcio CAs at the
signing time, the embedded SCT, the signature, the transparency-log entry (SET,
inclusion proof, checkpoint, body) and any RFC 3161 timestamps. regwarden adds the
identity match (exact or regex SAN and OIDC issuer) and, for DSSE bundles, the in-toto
statement checks (subject digest, predicate type).

sigstore is an optional dependency (`pip install regwarden[keyless]`), imported lazily.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from .. import der as asn1
from ..errors import NotImplementedYet
from ..model import SignatureResult
from ._bundle import BundleOutcome, ParsedBundle
from ._dsse import Envelope, check_statement
from ._model import CosignPolicy, KeylessIdentity
from ._tsa import verify_timestamps

_OID_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OID_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_OID_OTHERNAME_SAN = ObjectIdentifier("1.3.6.1.4.1.57264.1.7")
_HASHES = {"sha256": "SHA2_256", "sha384": "SHA2_384", "sha512": "SHA2_512"}


def _utf8_string(der: bytes) -> str | None:
    try:
        element = asn1.parse(der)
    except asn1.Asn1Error:
        return None
    if not element.is_universal(asn1.TAG_UTF8_STRING) or element.constructed:
        return None
    return element.content.decode("utf-8", errors="replace")


def certificate_identity(cert: x509.Certificate) -> tuple[set[str], str | None]:
    """(SAN values, OIDC issuer) of a Fulcio certificate."""
    sans: set[str] = set()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        sans.update(san.get_values_for_type(x509.RFC822Name))
        sans.update(san.get_values_for_type(x509.UniformResourceIdentifier))
        for other in san.get_values_for_type(x509.OtherName):
            if other.type_id == _OID_OTHERNAME_SAN and (value := _utf8_string(other.value)):
                sans.add(value)
    issuer = None
    for oid, der_encoded in ((_OID_ISSUER_V2, True), (_OID_ISSUER_V1, False)):
        try:
            ext = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = getattr(ext, "value", b"")
        issuer = _utf8_string(raw) if der_encoded else raw.decode("utf-8", errors="replace")
        if issuer:
            break
    return sans, issuer


class _IdentityMatch:
    """A sigstore-python VerificationPolicy: passes when any configured identity matches."""

    def __init__(self, identities: tuple[KeylessIdentity, ...], error: type[Exception]) -> None:
        self._identities = identities
        self._error = error
        self.matched: str | None = None

    def verify(self, cert: x509.Certificate) -> None:
        sans, issuer = certificate_identity(cert)
        for identity in self._identities:
            if identity.matches(sans, issuer):
                san = sorted(sans)[0] if len(sans) == 1 else ", ".join(sorted(sans))
                self.matched = f"{san} ({issuer})"
                return
        wanted = "; ".join(str(i) for i in self._identities)
        raise self._error(
            f"certificate identity got {sorted(sans)} issued by {issuer!r}, expected {wanted}"
        )


@lru_cache(maxsize=8)
def _verifier(trusted_root_json: bytes) -> Any:
    from sigstore.models import TrustedRoot as SigstoreTrustedRoot
    from sigstore.verify import Verifier
    from sigstore_models.trustroot import v1 as trustroot_v1

    inner = trustroot_v1.TrustedRoot.from_json(trusted_root_json)
    return Verifier(trusted_root=SigstoreTrustedRoot(inner))


def verify_keyless(
    bundle: ParsedBundle, *, expected_digest: str, policy: CosignPolicy, digest: str
) -> BundleOutcome:
    try:
        from sigstore.errors import Error as SigstoreError
        from sigstore.errors import VerificationError as SigstoreVerificationError
        from sigstore.hashes import Hashed
        from sigstore.models import Bundle
        from sigstore_models.common.v1 import HashAlgorithm
    except ImportError:
        raise NotImplementedYet(
            "keyless (certificate) signatures need sigstore-python",
            hint="pip install 'regwarden[keyless]'",
        ) from None

    def fail(reason: str, signer: str | None = None) -> BundleOutcome:
        return BundleOutcome(
            SignatureResult(
                format="cosign-bundle", digest=digest, verified=False, signer=signer, reason=reason
            )
        )

    root = policy.trusted_root
    assert root is not None  # CosignPolicy guarantees a trusted root with identities
    if bundle.envelope is None and bundle.signed_data_digest != expected_digest:
        return fail(f"message digest is {bundle.signed_data_digest}, expected {expected_digest}")
    matcher = _IdentityMatch(policy.identities, SigstoreVerificationError)
    try:
        verifier = _verifier(root.raw)
        sig_bundle = Bundle.from_json(bundle.raw)
        if bundle.envelope is not None:
            payload_type, payload = verifier.verify_dsse(sig_bundle, matcher)
            envelope = Envelope(str(payload_type), bytes(payload), bundle.envelope.signatures)
            statement, reason = check_statement(
                envelope, image_digest=expected_digest, predicate_types=policy.predicate_types
            )
            if statement is None:
                return fail(reason, matcher.matched)
        else:
            assert bundle.message_digest is not None
            hashed = Hashed(
                algorithm=getattr(HashAlgorithm, _HASHES[bundle.message_digest[0]]),
                digest=bundle.message_digest[1],
            )
            verifier.verify_artifact(hashed, sig_bundle, matcher)
            statement = None
    except (SigstoreError, ValueError) as exc:
        return fail(f"keyless verification failed: {exc}", matcher.matched)
    if policy.require_timestamp:
        times, reasons = verify_timestamps(
            bundle.timestamps, bundle.signature, root.timestamp_authorities
        )
        if not times:
            detail = "; ".join(reasons) or "bundle has none"
            return fail(
                f"no verified RFC 3161 timestamp, but one is required: {detail}", matcher.matched
            )
    return BundleOutcome(
        SignatureResult(
            format="cosign-bundle",
            digest=digest,
            verified=True,
            signer=matcher.matched,
            reason=f"verified keyless signature of {matcher.matched}",
        ),
        statement,
    )
