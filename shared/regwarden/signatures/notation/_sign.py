"""A small Notation signer for tests, benchmarks and `regwarden demo`.

It writes JWS and COSE envelopes the way notation-go does (crit headers, times, x5c
chain), can add an RFC 3161 time-stamp token made by a local test TSA, and issues test
certificates. It is not a production signing tool: keys live in memory.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ... import der as asn1
from ._algorithms import Algorithm, key_algorithm
from ._cose import sig_structure
from ._envelope import (
    H_AUTHENTIC_SIGNING_TIME,
    H_EXPIRY,
    H_SIGNING_AGENT,
    H_SIGNING_SCHEME,
    H_SIGNING_TIME,
    H_TIMESTAMP,
    PAYLOAD_CONTENT_TYPE,
    SCHEME_SIGNING_AUTHORITY,
    SCHEME_X509,
    Target,
)
from ._timestamp import (
    OID_CONTENT_TYPE,
    OID_MESSAGE_DIGEST,
    OID_SIGNED_DATA,
    OID_SIGNING_CERTIFICATE_V2,
    OID_TST_INFO,
    issuer_raw,
)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_OID_SHA = {
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}


@dataclass(frozen=True)
class SigningIdentity:
    """A private key and its certificate chain (leaf first, root last)."""

    key: PrivateKey
    chain: tuple[x509.Certificate, ...]

    @property
    def algorithm(self) -> Algorithm:
        return key_algorithm(self.key.public_key())


# -- certificates --------------------------------------------------------------------------


def new_key(kind: str = "rsa", size: int = 2048) -> PrivateKey:
    """`rsa` with `size` bits, or `ec` on P-256/P-384/P-521 for size 256/384/521."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    curves: dict[int, ec.EllipticCurve] = {
        256: ec.SECP256R1(),
        384: ec.SECP384R1(),
        521: ec.SECP521R1(),
    }
    return ec.generate_private_key(curves[size])


def name(
    common_name: str, org: str = "regwarden test", country: str = "US", state: str = "WA"
) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, state),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue(
    subject: x509.Name,
    key: PrivateKey,
    *,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    ca: bool = False,
    path_length: int | None = None,
    not_before: datetime,
    not_after: datetime,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CODE_SIGNING,),
    eku_critical: bool = False,
    key_usage: Mapping[str, bool] | None = None,
    hash_algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None,
) -> x509.Certificate:
    """Issue a certificate (self-signed when `issuer` is None) with Notation-friendly
    extensions: critical key usage (keyCertSign for CAs, digitalSignature otherwise)."""
    usage = {
        "digital_signature": not ca,
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "key_cert_sign": ca,
        "crl_sign": ca,
        "encipher_only": False,
        "decipher_only": False,
    }
    usage.update(key_usage or {})
    issuer_name, signing_key = (subject, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.KeyUsage(**usage), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    if eku and not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=eku_critical)
    algo = hash_algorithm
    if algo is None:
        size = signing_key.key_size if isinstance(signing_key, ec.EllipticCurvePrivateKey) else 0
        algo = (
            hashes.SHA384() if size == 384 else hashes.SHA512() if size == 521 else hashes.SHA256()
        )
    return builder.sign(signing_key, algo)


def demo_identity(
    now: datetime, *, kind: str = "rsa", size: int = 2048, leaf_days: int = 365
) -> tuple[SigningIdentity, x509.Certificate]:
    """A leaf signed by a fresh root CA: (identity with chain [leaf, root], root)."""
    root_key = new_key(kind, size)
    root = issue(
        name("regwarden test root"),
        root_key,
        ca=True,
        path_length=1,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=3650),
    )
    leaf_key = new_key(kind, size)
    leaf = issue(
        name("regwarden test signer"),
        leaf_key,
        issuer=(root, root_key),
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=leaf_days),
    )
    return SigningIdentity(leaf_key, (leaf, root)), root


# -- signatures ----------------------------------------------------------------------------


def raw_signature(key: PrivateKey, alg: Algorithm, message: bytes) -> bytes:
    """The signature as Notation envelopes carry it (raw r‖s for ECDSA)."""
    h = alg.hash()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(h)))
        n = alg.coordinate_size
        return r.to_bytes(n, "big") + s.to_bytes(n, "big")
    return key.sign(message, padding.PSS(padding.MGF1(h), h.digest_size), h)


def payload(target: Target, annotations: Mapping[str, str] | None = None) -> bytes:
    desc: dict[str, Any] = {
        "mediaType": target.media_type,
        "digest": target.digest,
        "size": target.size,
    }
    if annotations:
        desc["annotations"] = dict(annotations)
    return json.dumps({"targetArtifact": desc}, separators=(",", ":")).encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Timestamper:
    """A local test TSA: key, chain (TSA leaf first) and the time it stamps."""

    key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    gen_time: datetime
    accuracy_seconds: int = 1
    policy: str = "1.3.6.1.4.1.99999.1"

    def stamp(self, signature: bytes) -> bytes:
        return timestamp_token(signature, self)


def sign_jws(
    identity: SigningIdentity,
    target: Target,
    *,
    signing_time: datetime,
    expiry: datetime | None = None,
    scheme: str = SCHEME_X509,
    annotations: Mapping[str, str] | None = None,
    extra_protected: Mapping[str, Any] | None = None,
    extra_critical: Sequence[str] = (),
    timestamper: Timestamper | None = None,
    algorithm: Algorithm | None = None,
) -> bytes:
    """A Notation JWS envelope (flattened JSON serialization)."""
    alg = algorithm or identity.algorithm
    time_header = H_SIGNING_TIME if scheme != SCHEME_SIGNING_AUTHORITY else H_AUTHENTIC_SIGNING_TIME
    crit = [H_SIGNING_SCHEME]
    if scheme == SCHEME_SIGNING_AUTHORITY:
        crit.append(H_AUTHENTIC_SIGNING_TIME)
    protected: dict[str, Any] = {
        "alg": alg.jws_name,
        "cty": PAYLOAD_CONTENT_TYPE,
        H_SIGNING_SCHEME: scheme,
        time_header: _rfc3339(signing_time),
    }
    if expiry is not None:
        protected[H_EXPIRY] = _rfc3339(expiry)
        crit.append(H_EXPIRY)
    protected.update(extra_protected or {})
    protected["crit"] = crit + list(extra_critical)
    protected_b64 = _b64url(json.dumps(protected, separators=(",", ":")).encode())
    payload_b64 = _b64url(payload(target, annotations))
    sig = raw_signature(identity.key, alg, f"{protected_b64}.{payload_b64}".encode())
    header: dict[str, Any] = {
        "x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in identity.chain],
        H_SIGNING_AGENT: "regwarden-test-signer/1.0",
    }
    if timestamper is not None:
        header[H_TIMESTAMP] = base64.b64encode(timestamper.stamp(sig)).decode()
    env = {
        "payload": payload_b64,
        "protected": protected_b64,
        "header": header,
        "signature": _b64url(sig),
    }
    return json.dumps(env).encode()


def sign_cose(
    identity: SigningIdentity,
    target: Target,
    *,
    signing_time: datetime,
    expiry: datetime | None = None,
    scheme: str = SCHEME_X509,
    annotations: Mapping[str, str] | None = None,
    extra_protected: Mapping[object, Any] | None = None,
    extra_critical: Sequence[object] = (),
    timestamper: Timestamper | None = None,
) -> bytes:
    """A Notation COSE_Sign1_Tagged envelope."""
    alg = identity.algorithm
    time_header = H_SIGNING_TIME if scheme != SCHEME_SIGNING_AUTHORITY else H_AUTHENTIC_SIGNING_TIME
    crit: list[object] = [H_SIGNING_SCHEME]
    if scheme == SCHEME_SIGNING_AUTHORITY:
        crit.append(H_AUTHENTIC_SIGNING_TIME)
    protected: dict[object, Any] = {
        1: alg.cose_id,
        3: PAYLOAD_CONTENT_TYPE,
        H_SIGNING_SCHEME: scheme,
        time_header: cbor2.CBORTag(1, int(signing_time.timestamp())),
    }
    if expiry is not None:
        protected[H_EXPIRY] = cbor2.CBORTag(1, int(expiry.timestamp()))
        crit.append(H_EXPIRY)
    protected.update(extra_protected or {})
    protected[2] = crit + list(extra_critical)
    protected_raw = cbor2.dumps(protected)
    body = payload(target, annotations)
    sig = raw_signature(identity.key, alg, sig_structure(protected_raw, body))
    unprotected: dict[object, Any] = {
        33: [c.public_bytes(Encoding.DER) for c in identity.chain],
        H_SIGNING_AGENT: "regwarden-test-signer/1.0",
    }
    if timestamper is not None:
        unprotected[H_TIMESTAMP] = timestamper.stamp(sig)
    return cbor2.dumps(cbor2.CBORTag(18, [protected_raw, unprotected, body, sig]))


# -- RFC 3161 time-stamp tokens ------------------------------------------------------------


def _alg_id(oid: str, null: bool = True) -> bytes:
    return asn1.der_seq(asn1.der_oid(oid), asn1.der_null() if null else b"")


def timestamp_token(signature: bytes, tsa: Timestamper) -> bytes:
    """A DER TimeStampToken over `signature`, signed by the test TSA (SHA-256)."""
    imprint = hashes.Hash(hashes.SHA256())
    imprint.update(signature)
    tst_info = asn1.der_seq(
        asn1.der_int(1),
        asn1.der_oid(tsa.policy),
        asn1.der_seq(_alg_id(_OID_SHA["sha256"]), asn1.der_octets(imprint.finalize())),
        asn1.der_int(x509.random_serial_number()),
        asn1.der_generalized_time(tsa.gen_time),
        asn1.der_seq(asn1.der_int(tsa.accuracy_seconds)),
    )
    leaf = tsa.chain[0]
    leaf_der = leaf.public_bytes(Encoding.DER)

    def sha256(data: bytes) -> bytes:
        h = hashes.Hash(hashes.SHA256())
        h.update(data)
        return h.finalize()

    attrs = [
        asn1.der_seq(asn1.der_oid(OID_CONTENT_TYPE), asn1.der_set([asn1.der_oid(OID_TST_INFO)])),
        asn1.der_seq(
            asn1.der_oid(OID_MESSAGE_DIGEST), asn1.der_set([asn1.der_octets(sha256(tst_info))])
        ),
        asn1.der_seq(
            asn1.der_oid(OID_SIGNING_CERTIFICATE_V2),
            asn1.der_set(
                [asn1.der_seq(asn1.der_seq(asn1.der_seq(asn1.der_octets(sha256(leaf_der)))))]
            ),
        ),
    ]
    signed_attrs = asn1.der_set(attrs)
    if isinstance(tsa.key, rsa.RSAPrivateKey):
        sig_alg = _alg_id("1.2.840.113549.1.1.11")
        sig = tsa.key.sign(signed_attrs, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig_alg = _alg_id("1.2.840.10045.4.3.2", null=False)
        sig = tsa.key.sign(signed_attrs, ec.ECDSA(hashes.SHA256()))
    signer_info = asn1.der_seq(
        asn1.der_int(1),
        asn1.der_seq(issuer_raw(leaf), asn1.der_int(leaf.serial_number)),
        _alg_id(_OID_SHA["sha256"]),
        b"\xa0" + signed_attrs[1:],
        sig_alg,
        asn1.der_octets(sig),
    )
    signed_data = asn1.der_seq(
        asn1.der_int(3),
        asn1.der_set([_alg_id(_OID_SHA["sha256"])]),
        asn1.der_seq(asn1.der_oid(OID_TST_INFO), asn1.der_explicit(0, asn1.der_octets(tst_info))),
        # certificates is a SET OF: DER sorts it (strict parsers such as rfc3161-client refuse
        # any other order)
        asn1.der_implicit_constructed(
            0, b"".join(sorted(c.public_bytes(Encoding.DER) for c in tsa.chain))
        ),
        asn1.der_set([signer_info]),
    )
    return asn1.der_seq(asn1.der_oid(OID_SIGNED_DATA), asn1.der_explicit(0, signed_data))


def demo_timestamper(
    gen_time: datetime, *, kind: str = "rsa"
) -> tuple[Timestamper, x509.Certificate]:
    """A TSA leaf under a fresh TSA root, stamping at `gen_time`: (timestamper, root)."""
    root_key = new_key(kind, 2048 if kind == "rsa" else 256)
    start = gen_time - timedelta(days=30)
    root = issue(
        name("regwarden test TSA root"),
        root_key,
        ca=True,
        path_length=0,
        not_before=start,
        not_after=gen_time + timedelta(days=3650),
    )
    leaf_key = new_key(kind, 2048 if kind == "rsa" else 256)
    leaf = issue(
        name("regwarden test TSA"),
        leaf_key,
        issuer=(root, root_key),
        not_before=start,
        not_after=gen_time + timedelta(days=365),
        eku=(ExtendedKeyUsageOID.TIME_STAMPING,),
        eku_critical=True,
    )
    return Timestamper(leaf_key, (leaf, root), gen_time), root
