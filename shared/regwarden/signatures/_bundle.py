"""Sigstore bundles (v0.1, v0.2, v0.3): cosign v3 image signatures and attestations.

Key-based bundles (`verificationMaterial.publicKey`) are verified here in full:

1. the signature: DSSE over PAE(payloadType, payload), or a message signature over the
   artifact whose digest is `messageSignature.messageDigest` (checked prehashed);
2. the content: for DSSE an in-toto statement about the image digest with an accepted
   predicate type; for message signatures the digest itself must be the expected one;
3. the transparency-log entries, when a trusted root is given: log known, SET, inclusion
   proof to a checkpoint signed by the log, and the entry body recording this signature
   and key (v0.2+ bundles must carry an inclusion proof);
4. RFC 3161 timestamps, when the trusted root has TSAs (required when policy says so).

Certificate bundles (keyless) go to sigstore-python (see `_keyless.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..model import SignatureResult
from ._dsse import Envelope, check_statement, pae, parse_envelope
from ._errors import SignatureFormatError
from ._model import BUNDLE_MEDIA_TYPES, CosignPolicy
from ._rekor import TlogEntry, parse_bundle_entry, verify_entry
from ._tsa import verify_timestamps
from ._util import array, b64decode, load_json_object, obj, opt_obj, string
from .keys import PublicKey

_HASH_NAMES = {"SHA2_256": "sha256", "SHA2_384": "sha384", "SHA2_512": "sha512"}
_MAX_ENTRIES = 16


@dataclass(frozen=True, slots=True)
class ParsedBundle:
    media_type: str
    version: str
    public_key_hint: str | None
    certificates: tuple[bytes, ...]
    tlog_entries: tuple[TlogEntry, ...]
    timestamps: tuple[bytes, ...]
    envelope: Envelope | None
    message_digest: tuple[str, bytes] | None
    message_signature: bytes | None
    raw: bytes

    @property
    def signature(self) -> bytes:
        """The signature timestamps and log entries are about."""
        if self.envelope is not None:
            return self.envelope.signatures[0]
        assert self.message_signature is not None
        return self.message_signature

    @property
    def signed_data_digest(self) -> str:
        """`algo:hex` of what the log entry must record (DSSE payload or artifact)."""
        if self.envelope is not None:
            return self.envelope.payload_digest
        assert self.message_digest is not None
        return f"{self.message_digest[0]}:{self.message_digest[1].hex()}"


def _version(media_type: str) -> str:
    if media_type.endswith("v0.3+json"):
        return "0.3"
    return media_type.rpartition("version=")[2]


def parse_bundle(data: bytes) -> ParsedBundle:
    """Parse a Sigstore bundle; SignatureFormatError when it is not one."""
    what = "sigstore bundle"
    doc = load_json_object(data, what)
    media_type = string(doc, "mediaType", what, alt="media_type")
    if media_type not in BUNDLE_MEDIA_TYPES:
        raise SignatureFormatError(
            f"{what}: got media type {media_type!r}, expected one of {sorted(BUNDLE_MEDIA_TYPES)}"
        )
    material = obj(doc, "verificationMaterial", what, alt="verification_material")
    hint = None
    certificates: list[bytes] = []
    public_key = opt_obj(material, "publicKey", what, alt="public_key")
    chain = opt_obj(material, "x509CertificateChain", what, alt="x509_certificate_chain")
    leaf = opt_obj(material, "certificate", what)
    if sum(x is not None for x in (public_key, chain, leaf)) != 1:
        raise SignatureFormatError(
            f"{what}: verificationMaterial needs exactly one of publicKey, x509CertificateChain, "
            "certificate"
        )
    if public_key is not None:
        value = public_key.get("hint")
        hint = value if isinstance(value, str) else None
    elif chain is not None:
        for i, cert in enumerate(array(chain, "certificates", what)):
            if not isinstance(cert, dict):
                raise SignatureFormatError(f"{what}: certificate {i} is not an object")
            certificates.append(
                b64decode(string(cert, "rawBytes", what, alt="raw_bytes"), f"{what} certificate")
            )
        if not certificates:
            raise SignatureFormatError(f"{what}: empty x509CertificateChain")
    elif leaf is not None:
        certificates.append(
            b64decode(string(leaf, "rawBytes", what, alt="raw_bytes"), f"{what} certificate")
        )
    entries_doc = array(material, "tlogEntries", what, alt="tlog_entries")
    if len(entries_doc) > _MAX_ENTRIES:
        raise SignatureFormatError(
            f"{what}: {len(entries_doc)} tlog entries, at most {_MAX_ENTRIES}"
        )
    entries = tuple(
        parse_bundle_entry(e, f"{what}.tlogEntries[{i}]") for i, e in enumerate(entries_doc)
    )
    timestamps: list[bytes] = []
    tvd = opt_obj(material, "timestampVerificationData", what, alt="timestamp_verification_data")
    if tvd is not None:
        for i, ts in enumerate(array(tvd, "rfc3161Timestamps", what, alt="rfc3161_timestamps")):
            if not isinstance(ts, dict):
                raise SignatureFormatError(f"{what}: timestamp {i} is not an object")
            timestamps.append(
                b64decode(
                    string(ts, "signedTimestamp", what, alt="signed_timestamp"), f"{what} timestamp"
                )
            )
    envelope_doc = opt_obj(doc, "dsseEnvelope", what, alt="dsse_envelope")
    message_doc = opt_obj(doc, "messageSignature", what, alt="message_signature")
    if (envelope_doc is None) == (message_doc is None):
        raise SignatureFormatError(f"{what}: needs exactly one of dsseEnvelope, messageSignature")
    envelope = (
        parse_envelope(envelope_doc, f"{what}.dsseEnvelope") if envelope_doc is not None else None
    )
    message_digest = None
    message_signature = None
    if message_doc is not None:
        md = obj(message_doc, "messageDigest", what, alt="message_digest")
        algo = string(md, "algorithm", what)
        if algo not in _HASH_NAMES:
            raise SignatureFormatError(
                f"{what}: message digest algorithm got {algo!r}, "
                f"expected one of {sorted(_HASH_NAMES)}"
            )
        digest = b64decode(string(md, "digest", what), f"{what} message digest")
        if len(digest) != hashlib.new(_HASH_NAMES[algo]).digest_size:
            raise SignatureFormatError(f"{what}: message digest has the wrong length for {algo}")
        message_digest = (_HASH_NAMES[algo], digest)
        message_signature = b64decode(string(message_doc, "signature", what), f"{what} signature")
    return ParsedBundle(
        media_type=media_type,
        version=_version(media_type),
        public_key_hint=hint,
        certificates=tuple(certificates),
        tlog_entries=entries,
        timestamps=tuple(timestamps),
        envelope=envelope,
        message_digest=message_digest,
        message_signature=message_signature,
        raw=data,
    )


@dataclass(frozen=True, slots=True)
class BundleOutcome:
    """A bundle's verification result plus, for DSSE bundles, the verified statement."""

    result: SignatureResult
    statement: Mapping[str, Any] | None = None


def _fail(digest: str, reason: str, signer: str | None = None) -> BundleOutcome:
    return BundleOutcome(
        SignatureResult(
            format="cosign-bundle", digest=digest, verified=False, signer=signer, reason=reason
        )
    )


def _key_signature(
    bundle: ParsedBundle, policy: CosignPolicy, artifact: bytes | None
) -> tuple[PublicKey | None, str]:
    if bundle.envelope is not None:
        signed = pae(bundle.envelope.payload_type, bundle.envelope.payload)
        for key in policy.keys:
            if any(key.verify(sig, signed) for sig in bundle.envelope.signatures):
                return key, ""
        return (
            None,
            f"DSSE signature does not verify with any of the {len(policy.keys)} configured key(s)",
        )
    assert bundle.message_digest is not None and bundle.message_signature is not None
    hash_name, digest = bundle.message_digest
    for key in policy.keys:
        if key.algorithm == "ed25519":
            if (
                artifact is not None
                and hashlib.new(hash_name, artifact).digest() == digest
                and key.verify(bundle.message_signature, artifact)
            ):
                return key, ""
            continue
        if key.verify_digest(bundle.message_signature, digest, hash_name):
            return key, ""
    return (
        None,
        f"message signature does not verify with any of the {len(policy.keys)} configured key(s)",
    )


def _content(
    bundle: ParsedBundle, expected_digest: str, policy: CosignPolicy
) -> tuple[Mapping[str, Any] | None, str]:
    if bundle.envelope is not None:
        return check_statement(
            bundle.envelope, image_digest=expected_digest, predicate_types=policy.predicate_types
        )
    if bundle.signed_data_digest != expected_digest:
        return None, f"message digest is {bundle.signed_data_digest}, expected {expected_digest}"
    return None, ""


def check_evidence(
    bundle: ParsedBundle, policy: CosignPolicy, *, key: PublicKey | None, cert_der: bytes | None
) -> tuple[str, str]:
    """Transparency-log and timestamp evidence: (failure reason, success note)."""
    notes: list[str] = []
    root = policy.trusted_root
    verified_entries = 0
    if bundle.tlog_entries and root is not None and root.tlogs:
        for entry in bundle.tlog_entries:
            reason = verify_entry(
                entry,
                root,
                signatures=bundle.envelope.signatures if bundle.envelope else [bundle.signature],
                data_digest=bundle.signed_data_digest,
                key=key,
                cert_der=cert_der,
                require_proof=bundle.version != "0.1",
            )
            if reason:
                return f"transparency-log entry rejected: {reason}", ""
            verified_entries += 1
            when = datetime.fromtimestamp(entry.integrated_time, tz=UTC).isoformat()
            notes.append(f"tlog entry {entry.log_index} integrated {when}")
    elif bundle.tlog_entries:
        notes.append("tlog entry present but not checked (no trusted root)")
    if policy.require_tlog and verified_entries == 0:
        return "no verified transparency-log entry, but one is required", ""
    if bundle.timestamps and root is not None and root.timestamp_authorities:
        times, reasons = verify_timestamps(
            bundle.timestamps, bundle.signature, root.timestamp_authorities
        )
        if times:
            notes.append("timestamped " + ", ".join(t.isoformat() for t in times))
        if policy.require_timestamp and not times:
            return "; ".join(reasons) or "no verified RFC 3161 timestamp", ""
    elif policy.require_timestamp:
        return "no verifiable RFC 3161 timestamp, but one is required", ""
    return "", ("; " + "; ".join(notes)) if notes else ""


def verify_bundle(
    data: bytes,
    *,
    expected_digest: str,
    policy: CosignPolicy,
    digest: str | None = None,
    artifact: bytes | None = None,
) -> BundleOutcome:
    """Verify one bundle against the image (DSSE) or artifact (message) digest.

    Never raises for a bad signature; `digest` names the bundle in the result (default:
    sha256 of `data`).
    """
    name = digest or "sha256:" + hashlib.sha256(data).hexdigest()
    try:
        bundle = parse_bundle(data)
    except SignatureFormatError as exc:
        return _fail(name, str(exc))
    if bundle.certificates:
        if not policy.identities:
            return _fail(
                name,
                "bundle is signed with a certificate (keyless); no keyless identity configured",
            )
        from ._keyless import verify_keyless

        return verify_keyless(bundle, expected_digest=expected_digest, policy=policy, digest=name)
    if not policy.keys:
        return _fail(name, "bundle is key-based; no key configured")
    key, reason = _key_signature(bundle, policy, artifact)
    if key is None:
        return _fail(name, reason)
    statement, reason = _content(bundle, expected_digest, policy)
    if reason:
        return _fail(name, reason, key.key_id)
    reason, note = check_evidence(bundle, policy, key=key, cert_der=None)
    if reason:
        return _fail(name, reason, key.key_id)
    return BundleOutcome(
        SignatureResult(
            format="cosign-bundle",
            digest=name,
            verified=True,
            signer=key.key_id,
            reason=f"verified with key {key.key_id[:12]}{note}",
        ),
        statement,
    )
