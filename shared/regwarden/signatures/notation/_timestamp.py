"""RFC 3161 time-stamp tokens over a Notation signature, verified with cryptography.

A token is a CMS SignedData whose content is a TSTInfo. `verify_token` checks, in order:

1. the structure (ContentInfo → SignedData → exactly one SignerInfo → TSTInfo v1);
2. the message imprint: hash(signature bytes) equals TSTInfo.messageImprint (SHA-256/384/512);
3. the signed attributes: contentType is id-ct-TSTInfo, messageDigest is the hash of the
   TSTInfo, and signingCertificate(V2) names the signer's certificate;
4. the signer's signature over the signed attributes (RSA PKCS#1 v1.5, RSASSA-PSS, ECDSA;
   SHA-256/384/512 only);
5. a path from the signer through the certificates embedded in the token to a certificate
   of the trust store's TSA certificates, valid at genTime, built and checked by
   cryptography's verifier with the Notary Project timestamping-certificate rules as its
   extension policies (see _x509.build_path).

Revocation of the TSA chain is decided by the caller. Failures raise TimestampError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from ... import der as asn1
from ._x509 import CERT_ERRORS, ChainError, PathError, build_path, load_der, subject

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_CERTIFICATE = "1.2.840.113549.1.9.16.2.12"
OID_SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"
OID_BASELINE_POLICY = "0.4.0.2023.1.1"
OID_SHA1 = "1.3.14.3.2.26"

HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
_RSA_PKCS1: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1.2.840.113549.1.1.11": hashes.SHA256,
    "1.2.840.113549.1.1.12": hashes.SHA384,
    "1.2.840.113549.1.1.13": hashes.SHA512,
}
_ECDSA: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1.2.840.10045.4.3.2": hashes.SHA256,
    "1.2.840.10045.4.3.3": hashes.SHA384,
    "1.2.840.10045.4.3.4": hashes.SHA512,
}
OID_RSA = "1.2.840.113549.1.1.1"
OID_RSA_PSS = "1.2.840.113549.1.1.10"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_MAX_TOKEN = 1 << 20
_DER = Encoding.DER


class TimestampError(ValueError):
    """The time-stamp token is malformed, does not cover the signature, or is untrusted."""


@dataclass(frozen=True)
class VerifiedTimestamp:
    gen_time: datetime
    accuracy: timedelta
    policy: str
    tsa_chain: tuple[x509.Certificate, ...]

    @property
    def lower(self) -> datetime:
        return self.gen_time - self.accuracy

    @property
    def upper(self) -> datetime:
        return self.gen_time + self.accuracy


@dataclass(frozen=True)
class _TstInfo:
    policy: str
    hash_oid: str
    hashed_message: bytes
    gen_time: datetime
    accuracy: timedelta


@dataclass(frozen=True)
class _Token:
    certificates: tuple[x509.Certificate, ...]
    e_content: bytes
    sid_issuer: bytes | None
    sid_serial: int | None
    sid_ski: bytes | None
    digest_oid: str
    signed_attrs: asn1.Element
    signature_oid: str
    signature_params: asn1.Element | None
    signature: bytes
    tst: _TstInfo


def _hash_for(oid: str, what: str) -> hashes.HashAlgorithm:
    if oid == OID_SHA1:
        raise TimestampError(f"{what} uses SHA-1, which is not allowed")
    cls = HASHES.get(oid)
    if cls is None:
        raise TimestampError(f"{what} uses unsupported hash {oid}; expected SHA-256/384/512")
    return cls()


def _digest(algo: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algo)
    h.update(data)
    return h.finalize()


def _alg_oid(el: asn1.Element, what: str) -> tuple[str, asn1.Element | None]:
    parts = asn1.seq(el, what)
    if not parts:
        raise TimestampError(f"{what} is empty")
    params = parts[1] if len(parts) > 1 and not parts[1].is_universal(asn1.TAG_NULL) else None
    return asn1.decode_oid(parts[0]), params


def _parse_tst_info(data: bytes) -> _TstInfo:
    fields = asn1.seq(asn1.parse(data), "TSTInfo")
    if len(fields) < 5:
        raise TimestampError("TSTInfo has too few fields")
    if asn1.decode_int(fields[0]) != 1:
        raise TimestampError("TSTInfo version is not 1")
    policy = asn1.decode_oid(fields[1])
    imprint = asn1.seq(fields[2], "messageImprint")
    if len(imprint) != 2:
        raise TimestampError("messageImprint must hold an algorithm and a hash")
    hash_oid, _ = _alg_oid(imprint[0], "messageImprint.hashAlgorithm")
    hashed = asn1.decode_octets(imprint[1])
    asn1.decode_int(fields[3])  # serialNumber
    gen_time = asn1.decode_generalized_time(fields[4])
    accuracy: timedelta | None = None
    for el in fields[5:]:
        if el.is_universal(asn1.TAG_SEQUENCE):
            seconds = millis = micros = 0
            for part in el.children():
                if part.is_universal(asn1.TAG_INTEGER):
                    seconds = asn1.decode_int(part)
                elif part.is_context(0):
                    millis = asn1.decode_int(part, implicit=True)
                elif part.is_context(1):
                    micros = asn1.decode_int(part, implicit=True)
            if min(seconds, millis, micros) < 0 or millis > 999 or micros > 999:
                raise TimestampError("TSTInfo accuracy is out of range")
            accuracy = timedelta(seconds=seconds, milliseconds=millis, microseconds=micros)
    if accuracy is None:
        accuracy = timedelta(seconds=1) if policy == OID_BASELINE_POLICY else timedelta(0)
    return _TstInfo(policy, hash_oid, hashed, gen_time, accuracy)


def issuer_raw(cert: x509.Certificate) -> bytes:
    """The issuer Name exactly as encoded in the certificate."""
    tbs = asn1.seq(asn1.parse(cert.tbs_certificate_bytes), "TBSCertificate")
    offset = 1 if tbs and tbs[0].is_context(0) else 0
    return tbs[offset + 2].raw


def _parse(token: bytes) -> _Token:
    if len(token) > _MAX_TOKEN:
        raise TimestampError(f"time-stamp token of {len(token)} bytes is too large")
    outer = asn1.seq(asn1.parse(token), "ContentInfo")
    if (
        len(outer) != 2
        or asn1.decode_oid(outer[0]) != OID_SIGNED_DATA
        or not outer[1].is_context(0)
    ):
        raise TimestampError("the time-stamp token is not a CMS SignedData ContentInfo")
    wrapped = outer[1].children()
    if len(wrapped) != 1:
        raise TimestampError("ContentInfo content must hold exactly one SignedData")
    sd = asn1.seq(wrapped[0], "SignedData")
    if len(sd) < 4:
        raise TimestampError("SignedData has too few fields")
    encap = asn1.seq(sd[2], "encapContentInfo")
    if len(encap) != 2 or asn1.decode_oid(encap[0]) != OID_TST_INFO:
        raise TimestampError("the SignedData does not encapsulate a TSTInfo")
    if not encap[1].is_context(0):
        raise TimestampError("the TSTInfo content is missing")
    inner = encap[1].children()
    if len(inner) != 1:
        raise TimestampError("the TSTInfo content must be one OCTET STRING")
    e_content = asn1.decode_octets(inner[0])

    certificates: list[x509.Certificate] = []
    rest = sd[3:]
    signer_infos = rest[-1]
    for el in rest[:-1]:
        if el.is_context(0):
            for choice in el.children():
                if choice.is_universal(asn1.TAG_SEQUENCE):
                    try:
                        certificates.append(load_der(choice.raw))
                    except CERT_ERRORS as exc:
                        raise TimestampError(
                            f"an embedded certificate is malformed: {exc}"
                        ) from None
    if not signer_infos.is_universal(asn1.TAG_SET):
        raise TimestampError("SignedData.signerInfos is missing")
    infos = signer_infos.children()
    if len(infos) != 1:
        raise TimestampError(f"expected exactly one SignerInfo, got {len(infos)}")
    si = asn1.seq(infos[0], "SignerInfo")
    if len(si) < 5:
        raise TimestampError("SignerInfo has too few fields")
    sid = si[1]
    sid_issuer = sid_ski = None
    sid_serial = None
    if sid.is_universal(asn1.TAG_SEQUENCE):
        ias = sid.children()
        if len(ias) != 2:
            raise TimestampError("SignerInfo issuerAndSerialNumber is malformed")
        sid_issuer, sid_serial = ias[0].raw, asn1.decode_int(ias[1])
    elif sid.is_context(0) and not sid.constructed:
        sid_ski = sid.content
    else:
        raise TimestampError("SignerInfo has an unknown signer identifier")
    digest_oid, _ = _alg_oid(si[2], "SignerInfo.digestAlgorithm")
    idx = 3
    if not si[idx].is_context(0):
        raise TimestampError("SignerInfo has no signed attributes, which RFC 3161 requires")
    signed_attrs = si[idx]
    if signed_attrs.raw[1:2] == b"\x80":
        raise TimestampError("SignerInfo signed attributes must be DER (definite length)")
    if len(si) < idx + 3:
        raise TimestampError("SignerInfo has too few fields")
    signature_oid, signature_params = _alg_oid(si[idx + 1], "SignerInfo.signatureAlgorithm")
    signature = asn1.decode_octets(si[idx + 2])
    return _Token(
        certificates=tuple(certificates),
        e_content=e_content,
        sid_issuer=sid_issuer,
        sid_serial=sid_serial,
        sid_ski=sid_ski,
        digest_oid=digest_oid,
        signed_attrs=signed_attrs,
        signature_oid=signature_oid,
        signature_params=signature_params,
        signature=signature,
        tst=_parse_tst_info(e_content),
    )


def _find_signer(tok: _Token) -> x509.Certificate:
    for cert in tok.certificates:
        if tok.sid_ski is not None:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            except CERT_ERRORS:
                continue
            if ski.value.digest == tok.sid_ski:
                return cert
        elif cert.serial_number == tok.sid_serial and issuer_raw(cert) == tok.sid_issuer:
            return cert
    raise TimestampError("the time-stamp token does not embed the TSA's signing certificate")


def _check_attributes(tok: _Token, signer: x509.Certificate) -> None:
    attrs: dict[str, list[asn1.Element]] = {}
    for attr in tok.signed_attrs.children():
        parts = asn1.seq(attr, "Attribute")
        if len(parts) != 2 or not parts[1].is_universal(asn1.TAG_SET):
            raise TimestampError("a signed attribute is malformed")
        oid = asn1.decode_oid(parts[0])
        if oid in attrs:
            raise TimestampError(f"signed attribute {oid} appears twice")
        attrs[oid] = parts[1].children()
    content_type = attrs.get(OID_CONTENT_TYPE)
    if not content_type or asn1.decode_oid(content_type[0]) != OID_TST_INFO:
        raise TimestampError("signed attribute contentType is missing or not id-ct-TSTInfo")
    message_digest = attrs.get(OID_MESSAGE_DIGEST)
    digest_algo = _hash_for(tok.digest_oid, "SignerInfo.digestAlgorithm")
    if not message_digest or asn1.decode_octets(message_digest[0]) != _digest(
        digest_algo, tok.e_content
    ):
        raise TimestampError("signed attribute messageDigest does not match the TSTInfo")
    der = signer.public_bytes(_DER)
    if OID_SIGNING_CERTIFICATE_V2 in attrs:
        ess = _first_ess_cert_id(attrs[OID_SIGNING_CERTIFICATE_V2], "signingCertificateV2")
        first = ess[0]
        algo: hashes.HashAlgorithm = hashes.SHA256()
        if first.is_universal(asn1.TAG_SEQUENCE):
            algo = _hash_for(_alg_oid(first, "ESSCertIDv2.hashAlgorithm")[0], "ESSCertIDv2")
            ess = ess[1:]
        if not ess or asn1.decode_octets(ess[0]) != _digest(algo, der):
            raise TimestampError("signingCertificateV2 does not name the TSA signing certificate")
    elif OID_SIGNING_CERTIFICATE in attrs:
        ess = _first_ess_cert_id(attrs[OID_SIGNING_CERTIFICATE], "signingCertificate")
        # ESSCertID v1 identifies the certificate by its SHA-1 hash (RFC 2634).
        if asn1.decode_octets(ess[0]) != hashlib.sha1(der, usedforsecurity=False).digest():
            raise TimestampError("signingCertificate does not name the TSA signing certificate")
    else:
        raise TimestampError("signed attribute signingCertificate(V2) is missing")


def _first_ess_cert_id(values: list[asn1.Element], what: str) -> list[asn1.Element]:
    if not values:
        raise TimestampError(f"{what} attribute is empty")
    outer = asn1.seq(values[0], what)
    if not outer:
        raise TimestampError(f"{what} lists no certificates")
    certs = asn1.seq(outer[0], f"{what}.certs")
    if not certs:
        raise TimestampError(f"{what} lists no certificates")
    ess = asn1.seq(certs[0], f"{what} ESSCertID")
    if not ess:
        raise TimestampError(f"{what} ESSCertID is empty")
    return ess


def _check_signature(tok: _Token, signer: x509.Certificate) -> None:
    data = b"\x31" + tok.signed_attrs.raw[1:]
    oid = tok.signature_oid
    try:
        key = signer.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            if oid == OID_RSA:
                algo = _hash_for(tok.digest_oid, "the TSA signature")
                key.verify(tok.signature, data, padding.PKCS1v15(), algo)
            elif oid in _RSA_PKCS1:
                key.verify(tok.signature, data, padding.PKCS1v15(), _RSA_PKCS1[oid]())
            elif oid == OID_RSA_PSS:
                algo, salt = _pss_params(tok.signature_params)
                key.verify(tok.signature, data, padding.PSS(padding.MGF1(algo), salt), algo)
            else:
                raise TimestampError(f"unsupported TSA signature algorithm {oid} for an RSA key")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if oid in _ECDSA:
                algo = _ECDSA[oid]()
            elif oid == OID_EC_PUBLIC_KEY:
                algo = _hash_for(tok.digest_oid, "the TSA signature")
            else:
                raise TimestampError(f"unsupported TSA signature algorithm {oid} for an EC key")
            key.verify(tok.signature, data, ec.ECDSA(algo))
        else:
            raise TimestampError(f"unsupported TSA key type {type(key).__name__}")
    except TimestampError:
        raise
    except InvalidSignature:
        raise TimestampError(
            "the TSA signature over the time-stamp token does not verify"
        ) from None
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise TimestampError(f"the TSA signature cannot be checked: {exc}") from None


def _pss_params(params: asn1.Element | None) -> tuple[hashes.HashAlgorithm, int]:
    if params is None:
        raise TimestampError("RSASSA-PSS without parameters implies SHA-1, which is not allowed")
    algo: hashes.HashAlgorithm | None = None
    salt = 20
    for part in asn1.seq(params, "RSASSA-PSS-params"):
        inner = part.children()
        if part.is_context(0) and inner:
            algo = _hash_for(_alg_oid(inner[0], "PSS hashAlgorithm")[0], "RSASSA-PSS")
        elif part.is_context(2) and inner:
            salt = asn1.decode_int(inner[0])
    if algo is None:
        raise TimestampError("RSASSA-PSS with the default hash (SHA-1) is not allowed")
    return algo, salt


def verify_token(
    token: bytes, message: bytes, roots: Sequence[x509.Certificate]
) -> VerifiedTimestamp:
    """Verify `token` as an RFC 3161 time stamp over `message` (see module doc)."""
    try:
        return _verify_token(token, message, roots)
    except TimestampError:
        raise
    except CERT_ERRORS as exc:
        raise TimestampError(f"the time-stamp token holds a malformed certificate: {exc}") from None


def _verify_token(
    token: bytes, message: bytes, roots: Sequence[x509.Certificate]
) -> VerifiedTimestamp:
    try:
        tok = _parse(token)
    except asn1.Asn1Error as exc:
        raise TimestampError(f"the time-stamp token is malformed: {exc}") from None
    imprint_algo = _hash_for(tok.tst.hash_oid, "the time-stamp message imprint")
    if _digest(imprint_algo, message) != tok.tst.hashed_message:
        raise TimestampError("the time stamp is not over this signature (message imprint mismatch)")
    if not roots:
        raise TimestampError("no trusted TSA certificate is configured in the trust store")
    try:
        signer = _find_signer(tok)
        _check_attributes(tok, signer)
    except asn1.Asn1Error as exc:
        raise TimestampError(f"the time-stamp token is malformed: {exc}") from None
    _check_signature(tok, signer)
    pool = [c for c in tok.certificates if c is not signer]
    gen = tok.tst.gen_time
    try:
        chain = build_path(signer, pool, roots, "timestamping", gen)
    except PathError as exc:
        raise TimestampError(
            f"the TSA certificate {subject(signer)!r} does not chain to a trusted TSA root "
            f"valid at the time stamp {gen.isoformat()}: {exc}"
        ) from None
    except ChainError as exc:
        raise TimestampError(f"the TSA certificate chain is invalid: {exc}") from None
    return VerifiedTimestamp(gen, tok.tst.accuracy, tok.tst.policy, tuple(c.cert for c in chain))
