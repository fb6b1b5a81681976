"""Certificate rules of the Notary Project signature specification, checked with cryptography.

`validate_chain(chain, purpose)` checks an ordered chain (leaf first, self-signed root
last): each link's signature and issuer name, key usage, extended key usage, basic
constraints and path length, key types and sizes, and that nothing is signed with SHA-1
(or anything other than SHA-256/384/512). It does not look at validity periods: which
instant a chain must be valid at depends on timestamps and is decided by the caller.
Failures raise `ChainError` with the reason.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID

Purpose = Literal["codesigning", "timestamping"]

_ALLOWED_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_EC_CURVES = {"secp256r1", "secp384r1", "secp521r1"}
_ANY_EKU = x509.ObjectIdentifier("2.5.29.37.0")
_CODESIGNING_FORBIDDEN_EKU = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    _ANY_EKU: "anyExtendedKeyUsage",
}


class ChainError(ValueError):
    """The certificate chain breaks a Notary Project rule."""


# What cryptography raises for malformed certificate content (not all are ValueErrors).
# TypeError comes from Name parsing; catch it only right where names are read.
LAZY_CERT_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
CERT_ERRORS: tuple[type[Exception], ...] = (*LAZY_CERT_ERRORS, TypeError)


def load_der(der: bytes) -> x509.Certificate:
    """Load a DER certificate (one of CERT_ERRORS if malformed). Parts such as names and
    extensions are parsed lazily by cryptography, so callers turn CERT_ERRORS raised later
    into their own error too."""
    cert = x509.load_der_x509_certificate(der)
    if cert.serial_number < 0:
        raise ValueError(f"negative serial number {cert.serial_number}")
    return cert


def load_der_strict(der: bytes) -> x509.Certificate:
    """load_der, and parse now every part the checks read later (for trust stores)."""
    cert = load_der(der)
    cert.subject.rfc4514_string()
    cert.issuer.rfc4514_string()
    list(cert.extensions)
    _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.signature_algorithm_oid)
    return cert


_RFC4514_NAMES = {
    "2.5.4.3": "CN", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU",
    "2.5.4.6": "C", "2.5.4.9": "STREET", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}  # fmt: skip
_DN_SPECIAL = frozenset('\\"+,;<>#\0')


def subject(cert: x509.Certificate | x509.Name) -> str:
    """The subject in RFC 4514 form, exactly as cryptography's rfc4514_string() writes it
    (computed directly for plain names, which is several times faster). Pass the Name when
    you have it: cryptography builds a new one on every `cert.subject`."""
    try:
        name = cert.subject if isinstance(cert, x509.Certificate) else cert
        parts: list[str] = []
        for rdn in reversed(name.rdns):
            if len(rdn) != 1:
                return name.rfc4514_string()
            (attr,) = rdn
            short = _RFC4514_NAMES.get(attr.oid.dotted_string)
            value = attr.value
            if (
                short is None
                or not isinstance(value, str)
                or not value
                or value[0] == " "
                or value[-1] == " "
                or not _DN_SPECIAL.isdisjoint(value)
            ):
                return name.rfc4514_string()
            parts.append(f"{short}={value}")
        return ",".join(parts)
    except CERT_ERRORS:
        return "<unprintable subject>"


def check_signature_hash(cert: x509.Certificate) -> None:
    try:
        algo = cert.signature_hash_algorithm
    except CERT_ERRORS:
        algo = None
    if not isinstance(algo, _ALLOWED_HASHES):
        name = algo.name if algo is not None else cert.signature_algorithm_oid.dotted_string
        if isinstance(algo, hashes.SHA1):
            raise ChainError(
                f"certificate {subject(cert)!r} is signed with SHA-1, which is not allowed"
            )
        raise ChainError(
            f"certificate {subject(cert)!r} is signed with {name}; "
            "expected SHA-256, SHA-384 or SHA-512"
        )


def check_key(cert: x509.Certificate) -> None:
    try:
        key = cert.public_key()
    except CERT_ERRORS as exc:
        raise ChainError(
            f"certificate {subject(cert)!r} has an unusable public key: {exc}"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ChainError(
                f"certificate {subject(cert)!r} has an RSA key of {key.key_size} bits; "
                "at least 2048 are required"
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _EC_CURVES:
            raise ChainError(
                f"certificate {subject(cert)!r} uses curve {key.curve.name}; "
                "expected P-256, P-384 or P-521"
            )
    else:
        raise ChainError(
            f"certificate {subject(cert)!r} has a {type(key).__name__}; expected RSA or EC"
        )


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Issuer name matches and `issuer`'s key verifies `cert`'s signature."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (TypeError, InvalidSignature):
        return False
    except CERT_ERRORS:
        return False
    return True


def _ext(
    cert: x509.Certificate, cls: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType] | None:
    try:
        found: x509.Extension[x509.ExtensionType]
        for found in cert.extensions:
            if found.oid == cls.oid:
                return found
    except CERT_ERRORS as exc:  # duplicate or malformed extensions
        raise ChainError(f"certificate {subject(cert)!r} has malformed extensions: {exc}") from None
    return None


def _key_usage(cert: x509.Certificate, *, critical: bool) -> x509.KeyUsage:
    ext = _ext(cert, x509.KeyUsage)
    if ext is None:
        raise ChainError(f"certificate {subject(cert)!r}: the key usage extension must be present")
    if critical and not ext.critical:
        raise ChainError(f"certificate {subject(cert)!r}: the key usage extension must be critical")
    assert isinstance(ext.value, x509.KeyUsage)
    return ext.value


def _leaf_key_usage(cert: x509.Certificate, ku: x509.KeyUsage) -> None:
    if not ku.digital_signature:
        raise ChainError(f"certificate {subject(cert)!r}: key usage must include digitalSignature")
    bad = [
        name
        for name, on in (
            ("keyEncipherment", ku.key_encipherment),
            ("dataEncipherment", ku.data_encipherment),
            ("keyAgreement", ku.key_agreement),
            ("keyCertSign", ku.key_cert_sign),
            ("cRLSign", ku.crl_sign),
            ("encipherOnly", ku.key_agreement and ku.encipher_only),
            ("decipherOnly", ku.key_agreement and ku.decipher_only),
        )
        if on
    ]
    if bad:
        raise ChainError(
            f"certificate {subject(cert)!r}: key usage must be digitalSignature only, "
            f"but also has {', '.join(bad)}"
        )


def _leaf_basic_constraints(cert: x509.Certificate) -> None:
    ext = _ext(cert, x509.BasicConstraints)
    if ext is not None and isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
        raise ChainError(
            f"certificate {subject(cert)!r} is a CA certificate; the signing certificate "
            "must have basicConstraints ca=false when present"
        )


def _leaf(cert: x509.Certificate, purpose: Purpose) -> None:
    _leaf_basic_constraints(cert)
    _leaf_key_usage(cert, _key_usage(cert, critical=purpose == "codesigning"))
    ext = _ext(cert, x509.ExtendedKeyUsage)
    if purpose == "codesigning":
        if ext is not None:
            assert isinstance(ext.value, x509.ExtendedKeyUsage)
            ekus = list(ext.value)
            for oid in ekus:
                if oid in _CODESIGNING_FORBIDDEN_EKU:
                    raise ChainError(
                        f"certificate {subject(cert)!r}: extended key usage must not contain "
                        f"{_CODESIGNING_FORBIDDEN_EKU[oid]}"
                    )
            if ExtendedKeyUsageOID.CODE_SIGNING not in ekus:
                raise ChainError(
                    f"certificate {subject(cert)!r}: extended key usage is present but lacks "
                    "codeSigning (1.3.6.1.5.5.7.3.3)"
                )
    else:
        if ext is None or list(ext.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:  # type: ignore[call-overload]
            raise ChainError(
                f"timestamping certificate {subject(cert)!r} must have timeStamping as its "
                "only extended key usage"
            )
        if not ext.critical:
            raise ChainError(
                f"timestamping certificate {subject(cert)!r}: the extended key usage "
                "extension must be critical"
            )


def _ca(cert: x509.Certificate, below: int, purpose: Purpose) -> None:
    ext = _ext(cert, x509.BasicConstraints)
    if ext is None or not isinstance(ext.value, x509.BasicConstraints) or not ext.value.ca:
        raise ChainError(
            f"certificate {subject(cert)!r} issues others but basicConstraints ca is not true"
        )
    if ext.value.path_length is not None and ext.value.path_length < below:
        raise ChainError(
            f"certificate {subject(cert)!r} allows a path length of {ext.value.path_length}, "
            f"but {below} CA certificate(s) sit below it"
        )
    if not _key_usage(cert, critical=purpose == "codesigning").key_cert_sign:
        raise ChainError(f"certificate {subject(cert)!r}: key usage must include keyCertSign")


def validate_chain(chain: Sequence[x509.Certificate], purpose: Purpose) -> None:
    """Check an ordered chain, leaf first and self-signed root last (see module doc)."""
    if not chain:
        raise ChainError("the certificate chain is empty")
    for cert in chain:
        check_signature_hash(cert)
        check_key(cert)
    if len(chain) == 1:
        cert = chain[0]
        if not issued_by(cert, cert):
            raise ChainError(
                f"certificate {subject(cert)!r} is alone in the chain but is not self-signed"
            )
        _leaf(cert, purpose)
        return
    last = len(chain) - 1
    for i, cert in enumerate(chain):
        if i == last:
            if not issued_by(cert, cert):
                raise ChainError(
                    f"root certificate {subject(cert)!r} is not self-signed; the chain must "
                    "end with a self-signed root"
                )
        else:
            if issued_by(cert, cert):  # cryptography compares the names first
                where = "leaf" if i == 0 else "intermediate"
                raise ChainError(f"{where} certificate {subject(cert)!r} is self-signed")
            if not issued_by(cert, chain[i + 1]):
                raise ChainError(
                    f"certificate {subject(cert)!r} is not issued by the next certificate "
                    f"{subject(chain[i + 1])!r}"
                )
        if i == 0:
            _leaf(cert, purpose)
        else:
            _ca(cert, i - 1, purpose)


def valid_at(chain: Sequence[x509.Certificate], lower: datetime, upper: datetime) -> str | None:
    """None when [lower, upper] lies within every certificate's validity, else the reason."""
    for cert in chain:
        if lower < cert.not_valid_before_utc:
            return (
                f"certificate {subject(cert)!r} is not valid until "
                f"{cert.not_valid_before_utc.isoformat()}"
            )
        if upper > cert.not_valid_after_utc:
            return (
                f"certificate {subject(cert)!r} expired at {cert.not_valid_after_utc.isoformat()}"
            )
    return None


def has_revocation_info(cert: x509.Certificate) -> bool:
    """Whether the certificate names an OCSP responder or a CRL distribution point."""
    try:
        for ext in cert.extensions:
            if ext.oid == ExtensionOID.CRL_DISTRIBUTION_POINTS:
                return True
            if ext.oid == ExtensionOID.AUTHORITY_INFORMATION_ACCESS and any(
                d.access_method == AuthorityInformationAccessOID.OCSP for d in ext.value
            ):
                return True
    except CERT_ERRORS:
        return True  # cannot tell: treat as revocable, which fails closed
    return False


# -- distinguished names for x509.subject trusted identities --------------------------------

_SHORT_NAMES = {
    "2.5.4.6": "C",
    "2.5.4.8": "ST",
    "2.5.4.7": "L",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.3": "CN",
    "2.5.4.5": "SERIALNUMBER",
    "2.5.4.9": "STREET",
    "2.5.4.17": "POSTALCODE",
}
_ALIASES = {"S": "ST"}
MANDATORY_RDNS = ("C", "ST", "O")


class DNError(ValueError):
    """A distinguished name does not parse or lacks mandatory attributes."""


def _split_unescaped(text: str, seps: str) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf.append(text[i : i + 2])
            i += 2
            continue
        if ch in seps:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return parts


def _unescape(value: str, dn: str) -> str:
    """RFC 4514 value: drop unescaped leading/trailing spaces, resolve \\c and \\XX."""
    tokens: list[tuple[bytes, bool]] = []  # (UTF-8 bytes, was escaped)
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "\\":
            tokens.append((ch.encode("utf-8", "surrogatepass"), False))
            i += 1
            continue
        pair = value[i + 1 : i + 3]
        if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
            tokens.append((bytes([int(pair, 16)]), True))
            i += 3
        elif i + 1 < len(value):
            tokens.append((value[i + 1].encode("utf-8", "surrogatepass"), True))
            i += 2
        else:
            raise DNError(f"distinguished name {dn!r} ends with a lone backslash")
    while tokens and tokens[0] == (b" ", False):
        tokens.pop(0)
    while tokens and tokens[-1] == (b" ", False):
        tokens.pop()
    try:
        return b"".join(t for t, _ in tokens).decode()
    except UnicodeDecodeError:
        raise DNError(f"distinguished name {dn!r} has an invalid escaped byte") from None


def parse_dn(dn: str) -> dict[str, str]:
    """Parse an RFC 4514 DN as Notation does: single-valued RDNs, no repeated attribute,
    and C, ST and O present."""
    return dict(_parse_dn(dn))


@functools.lru_cache(maxsize=512)
def _parse_dn(dn: str) -> tuple[tuple[str, str], ...]:
    attrs: dict[str, str] = {}
    if not dn.strip():
        raise DNError("the distinguished name is empty")
    for rdn in _split_unescaped(dn, ",;"):
        if len(_split_unescaped(rdn, "+")) > 1:
            raise DNError(
                f"distinguished name {dn!r} has a multi-valued RDN, which is not supported"
            )
        kind, sep, value = rdn.partition("=")
        kind = kind.strip()
        if not sep or not kind:
            raise DNError(f"distinguished name {dn!r} has an RDN without 'type=value': {rdn!r}")
        if value.strip().startswith("#"):
            raise DNError(f"distinguished name {dn!r}: hex-encoded values are not supported")
        key = kind.upper()
        key = _ALIASES.get(key, key)
        if key in attrs:
            raise DNError(f"distinguished name {dn!r} repeats the attribute {key}")
        attrs[key] = _unescape(value, dn)
    missing = [m for m in MANDATORY_RDNS if not attrs.get(m)]
    if missing:
        raise DNError(
            f"distinguished name {dn!r} lacks {', '.join(missing)}; it must contain C, ST and O"
        )
    return tuple(attrs.items())


def subject_attributes(name: x509.Name) -> dict[str, str]:
    """A subject as attribute → value; DNError if an attribute repeats."""
    attrs: dict[str, str] = {}
    for rdn in name.rdns:
        if len(rdn) > 1:
            raise DNError(f"subject {subject(name)!r} has a multi-valued RDN")
        for attr in rdn:
            key = _SHORT_NAMES.get(attr.oid.dotted_string, attr.oid.dotted_string)
            if key in attrs:
                raise DNError(f"subject {subject(name)!r} repeats the attribute {key}")
            value = attr.value
            attrs[key] = value if isinstance(value, str) else value.hex()
    return attrs


def is_subset(wanted: dict[str, str], have: dict[str, str]) -> bool:
    return all(have.get(k) == v for k, v in wanted.items())
