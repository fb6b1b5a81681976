"""Certificate rules of the Notary Project signature specification, checked with cryptography.

`validate_chain(chain, purpose)` checks an ordered chain (leaf first, self-signed root
last); `build_path(leaf, pool, anchors, purpose, at)` finds and checks a path to a trust
anchor (a TSA chain). Both run cryptography's RFC 5280 path validation
(`cryptography.x509.verification`: signatures, names, basicConstraints and path length,
name constraints, unknown critical extensions, algorithms) with Notation's key usage and
extended key usage rules as its extension policies, and check themselves what the library
leaves out: the root's own signature, the leaf's key, no SHA-1 anywhere. `validate_chain`
does not decide about validity periods: which instant a chain must be valid at depends on
timestamps and is decided by the caller (`valid_at`). Failures raise `ChainError` (a rule
broken) or its subclass `PathError` (no valid path) with the reason.

Certificates are handled as `Cert`: parsed once per exact DER encoding (`cert_of`, a
bounded LRU cache), with the raw parts a signature check needs and memoised views of names,
extensions and validity. Only parsing is shared; every signature and every rule is checked
again on every call.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Literal, NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification as xv
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID

from ... import der as asn1

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


Extensions = Mapping[x509.ObjectIdentifier, x509.Extension[x509.ExtensionType]]
_LEAF_FORBIDDEN_KEY_USAGE = frozenset(
    {
        "keyEncipherment",
        "dataEncipherment",
        "keyAgreement",
        "keyCertSign",
        "cRLSign",
        "encipherOnly",
        "decipherOnly",
    }
)


def _key_usage_names(ku: x509.KeyUsage) -> tuple[str, ...]:
    bits = (
        ("digitalSignature", ku.digital_signature),
        ("contentCommitment", ku.content_commitment),
        ("keyEncipherment", ku.key_encipherment),
        ("dataEncipherment", ku.data_encipherment),
        ("keyAgreement", ku.key_agreement),
        ("keyCertSign", ku.key_cert_sign),
        ("cRLSign", ku.crl_sign),
        ("encipherOnly", ku.key_agreement and ku.encipher_only),
        ("decipherOnly", ku.key_agreement and ku.decipher_only),
    )
    return tuple(name for name, on in bits if on)


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


class Cert:
    """One certificate, parsed once per exact DER encoding (build it with `cert_of`).

    Holds the cryptography object and the raw parts a signature check needs: the
    TBSCertificate exactly as signed, the issuer and subject names as encoded, and whether
    the inner and outer signature algorithms agree. Names, extensions and validity are
    parsed on first use and memoised (a malformed part raises one of CERT_ERRORS each time
    it is read). Nothing here records whether the certificate is valid or trusted.
    """

    def __init__(self, der: bytes) -> None:
        cert = x509.load_der_x509_certificate(der)
        if cert.serial_number < 0:
            raise ValueError(f"negative serial number {cert.serial_number}")
        try:  # cryptography has accepted the DER; take the raw parts out of it
            outer = asn1.seq(asn1.parse(der), "Certificate")
            if len(outer) != 3:
                raise asn1.Asn1Error(f"expected 3 fields, got {len(outer)}")
            tbs = asn1.seq(outer[0], "TBSCertificate")
            at = 1 if tbs and tbs[0].is_context(0) else 0  # [0] version is optional
            inner_alg, issuer, subject_name = tbs[at + 1], tbs[at + 2], tbs[at + 4]
        except (asn1.Asn1Error, IndexError) as exc:
            raise ValueError(f"malformed certificate structure: {exc}") from None
        self.der = der
        self.cert = cert
        self.tbs = outer[0].raw
        self.signature = cert.signature
        self.algorithms_agree = inner_alg.raw == outer[1].raw
        self.issuer_der = issuer.raw
        self.subject_der = subject_name.raw

    @functools.cached_property
    def name(self) -> x509.Name:
        """The subject (cryptography builds a new Name on every `cert.subject`)."""
        return self.cert.subject

    @functools.cached_property
    def subject_text(self) -> str:
        return _rfc4514(self.name)

    @functools.cached_property
    def attributes(self) -> Mapping[str, str]:
        """The subject as attribute → value (DNError if an attribute repeats)."""
        return subject_attributes(self.name)

    @functools.cached_property
    def extensions(self) -> Extensions:
        return {ext.oid: ext for ext in self.cert.extensions}

    @functools.cached_property
    def not_before(self) -> datetime:
        return self.cert.not_valid_before_utc

    @functools.cached_property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the DER encoding."""
        return hashlib.sha256(self.der).hexdigest()

    @functools.cached_property
    def hash_algorithm(self) -> hashes.HashAlgorithm | None:
        """The hash of the certificate's signature algorithm, None if unknown or none."""
        try:
            return self.cert.signature_hash_algorithm
        except CERT_ERRORS:
            return None

    @functools.cached_property
    def rsa_signature(self) -> tuple[padding.PKCS1v15 | padding.PSS, hashes.HashAlgorithm] | None:
        """(padding, hash) when the certificate's own signature is RSA, else None."""
        try:
            params = self.cert.signature_algorithm_parameters
        except CERT_ERRORS:
            return None
        algo = self.hash_algorithm
        if isinstance(params, padding.PKCS1v15 | padding.PSS) and algo is not None:
            return params, algo
        return None

    @functools.cached_property
    def ecdsa_signature(self) -> ec.ECDSA | None:
        """The ECDSA scheme when the certificate's own signature is ECDSA, else None."""
        try:
            params = self.cert.signature_algorithm_parameters
        except CERT_ERRORS:
            return None
        return params if isinstance(params, ec.ECDSA) else None

    @functools.cached_property
    def public_key(self) -> CertificatePublicKeyTypes:
        """The subject public key (one of CERT_ERRORS if it cannot be loaded)."""
        return self.cert.public_key()

    @functools.cached_property
    def rsa_key(self) -> rsa.RSAPublicKey | None:
        key = self.public_key
        return key if isinstance(key, rsa.RSAPublicKey) else None

    @functools.cached_property
    def ec_key(self) -> ec.EllipticCurvePublicKey | None:
        key = self.public_key
        return key if isinstance(key, ec.EllipticCurvePublicKey) else None

    @functools.cached_property
    def revocable(self) -> bool:
        """Whether it names an OCSP responder or a CRL distribution point (True when the
        extensions cannot be read: that fails closed)."""
        try:
            for oid, ext in self.extensions.items():
                if oid == ExtensionOID.CRL_DISTRIBUTION_POINTS:
                    return True
                if oid == ExtensionOID.AUTHORITY_INFORMATION_ACCESS and any(
                    d.access_method == AuthorityInformationAccessOID.OCSP
                    for d in ext.value  # type: ignore[attr-defined]
                ):
                    return True
        except CERT_ERRORS:
            return True
        return False


CertLike = x509.Certificate | Cert


@functools.lru_cache(maxsize=512)
def cert_of(der: bytes) -> Cert:
    """The certificate encoded by exactly these DER bytes (one of CERT_ERRORS if malformed).

    Parsed once and shared: a certificate is immutable, and the cache is keyed by its
    complete encoding. Parts such as names and extensions are parsed lazily, so callers
    turn CERT_ERRORS raised later into their own error too."""
    return Cert(der)


def as_cert(cert: CertLike) -> Cert:
    return cert if isinstance(cert, Cert) else cert_of(cert.public_bytes(Encoding.DER))


def load_der(der: bytes) -> x509.Certificate:
    """Load a DER certificate (one of CERT_ERRORS if malformed); see `cert_of`."""
    return cert_of(der).cert


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


def subject(cert: CertLike | x509.Name) -> str:
    """The subject in RFC 4514 form, exactly as cryptography's rfc4514_string() writes it
    (computed directly for plain names, which is several times faster). Pass a Cert or the
    Name when you have it: cryptography builds a new Name on every `cert.subject`."""
    try:
        if isinstance(cert, Cert):
            return cert.subject_text
        return _rfc4514(cert.subject if isinstance(cert, x509.Certificate) else cert)
    except CERT_ERRORS:
        return "<unprintable subject>"


def _rfc4514(name: x509.Name) -> str:
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


def check_signature_hash(cert: Cert) -> None:
    algo = cert.hash_algorithm
    if not isinstance(algo, _ALLOWED_HASHES):
        name = algo.name if algo is not None else cert.cert.signature_algorithm_oid.dotted_string
        if isinstance(algo, hashes.SHA1):
            raise ChainError(
                f"certificate {subject(cert)!r} is signed with SHA-1, which is not allowed"
            )
        raise ChainError(
            f"certificate {subject(cert)!r} is signed with {name}; "
            "expected SHA-256, SHA-384 or SHA-512"
        )


def check_key(cert: Cert) -> None:
    try:
        key = cert.public_key
    except CERT_ERRORS as exc:
        raise ChainError(
            f"certificate {subject(cert)!r} has an unusable public key: {exc}"
        ) from None
    if (rsa_key := cert.rsa_key) is not None:
        if rsa_key.key_size < 2048:
            raise ChainError(
                f"certificate {subject(cert)!r} has an RSA key of {rsa_key.key_size} bits; "
                "at least 2048 are required"
            )
    elif (ec_key := cert.ec_key) is not None:
        if ec_key.curve.name not in _EC_CURVES:
            raise ChainError(
                f"certificate {subject(cert)!r} uses curve {ec_key.curve.name}; "
                "expected P-256, P-384 or P-521"
            )
    else:
        raise ChainError(
            f"certificate {subject(cert)!r} has a {type(key).__name__}; expected RSA or EC"
        )


def issued_by(cert: CertLike, issuer: CertLike) -> bool:
    """Issuer name matches and `issuer`'s key verifies `cert`'s signature.

    What cryptography's `verify_directly_issued_by` checks (inner and outer signature
    algorithms agree, the issuer name equals the issuer's subject, the signature over the
    TBSCertificate verifies), done with the raw parts `Cert` keeps and the issuer's loaded
    key instead of re-encoding the TBSCertificate and re-loading the key each time.
    """
    return _signed_by(as_cert(cert), as_cert(issuer))


def _signed_by(c: Cert, i: Cert) -> bool:
    if c.issuer_der != i.subject_der or not c.algorithms_agree:
        return False
    try:
        if (rsa_key := i.rsa_key) is not None and (scheme := c.rsa_signature) is not None:
            rsa_key.verify(c.signature, c.tbs, *scheme)
        elif (ec_key := i.ec_key) is not None and (ecdsa := c.ecdsa_signature) is not None:
            ec_key.verify(c.signature, c.tbs, ecdsa)
        else:  # any other key or algorithm: let cryptography decide
            c.cert.verify_directly_issued_by(i.cert)
    except (TypeError, InvalidSignature):
        return False
    except CERT_ERRORS:
        return False
    return True


# -- Notation's certificate rules as cryptography extension policies -------------------------
#
# cryptography's verifier does path building and the RFC 5280 checks: signatures, issuer
# names, basicConstraints cA and path length, name constraints, validity at one instant,
# unknown critical extensions, RSA ≥ 2048 and the permitted signature and key algorithms
# for issuers. It neither checks a trust anchor's own signature nor looks at the leaf's key,
# and its default extension policies are the Web PKI's (serverAuth/clientAuth EKU, SAN), so
# Notation's rules replace them: each validator below raises with the Notary Project
# wording, and `_problems` keeps that wording, which the library only reports as text.

_problems: ContextVar[list[str] | None] = ContextVar("notation_chain_problems", default=None)


def _broken(message: str) -> NoReturn:
    found = _problems.get()
    if found is not None:
        found.append(message)
    raise ChainError(message)


def _leaf_basic_constraints(
    _policy: xv.Policy, cert: x509.Certificate, bc: x509.BasicConstraints | None
) -> None:
    if bc is not None and bc.ca:
        _broken(
            f"certificate {subject(cert)!r} is a CA certificate; the signing certificate "
            "must have basicConstraints ca=false when present"
        )


def _leaf_key_usage(_policy: xv.Policy, cert: x509.Certificate, ku: x509.KeyUsage) -> None:
    names = _key_usage_names(ku)
    if "digitalSignature" not in names:
        _broken(f"certificate {subject(cert)!r}: key usage must include digitalSignature")
    bad = [name for name in names if name in _LEAF_FORBIDDEN_KEY_USAGE]
    if bad:
        _broken(
            f"certificate {subject(cert)!r}: key usage must be digitalSignature only, "
            f"but also has {', '.join(bad)}"
        )


def _codesigning_eku(
    _policy: xv.Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None
) -> None:
    if eku is None:
        return
    for oid in eku:
        if oid in _CODESIGNING_FORBIDDEN_EKU:
            _broken(
                f"certificate {subject(cert)!r}: extended key usage must not contain "
                f"{_CODESIGNING_FORBIDDEN_EKU[oid]}"
            )
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        _broken(
            f"certificate {subject(cert)!r}: extended key usage is present but lacks "
            "codeSigning (1.3.6.1.5.5.7.3.3)"
        )


def _timestamping_eku(
    _policy: xv.Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage
) -> None:
    if list(eku) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        _broken(
            f"timestamping certificate {subject(cert)!r} must have timeStamping as its "
            "only extended key usage"
        )


def _ca_key_usage(_policy: xv.Policy, cert: x509.Certificate, ku: x509.KeyUsage) -> None:
    if not ku.key_cert_sign:
        _broken(f"certificate {subject(cert)!r}: key usage must include keyCertSign")


_ENFORCED_NAME_TYPES = (x509.DNSName, x509.IPAddress, x509.RFC822Name)


def _ca_name_constraints(
    _policy: xv.Policy, cert: x509.Certificate, nc: x509.NameConstraints | None
) -> None:
    # cryptography enforces DNS, IP and email constraints. It refuses any other kind when
    # the extension is critical but skips it when not; a directoryName constraint is the
    # one that would matter here (trusted identities are subject DNs), so refuse them all.
    if nc is None:
        return
    for tree in (nc.permitted_subtrees or [], nc.excluded_subtrees or []):
        for general in tree:
            if not isinstance(general, _ENFORCED_NAME_TYPES):
                _broken(
                    f"certificate {subject(cert)!r} has a name constraint on a "
                    f"{type(general).__name__}, which is not supported (only DNS names, IP "
                    "addresses and email addresses are)"
                )


def _extension_policies(purpose: Purpose) -> tuple[xv.ExtensionPolicy, xv.ExtensionPolicy]:
    """(CA policy, end-entity policy). Anything not named here is permitted unless it is a
    critical extension the library does not know, which it refuses."""
    # The code-signing profile wants key usage critical; the timestamping one does not
    # (RFC 3161 leaves it open) but wants the EKU critical.
    ku_criticality = (
        xv.Criticality.CRITICAL if purpose == "codesigning" else xv.Criticality.AGNOSTIC
    )
    agnostic = xv.Criticality.AGNOSTIC
    ca = (
        xv.ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, agnostic, None)  # cA and pathLen: the library
        .require_present(x509.KeyUsage, ku_criticality, _ca_key_usage)
        .may_be_present(x509.NameConstraints, agnostic, _ca_name_constraints)
    )
    ee = (
        xv.ExtensionPolicy.permit_all()
        .may_be_present(x509.BasicConstraints, agnostic, _leaf_basic_constraints)
        .require_present(x509.KeyUsage, ku_criticality, _leaf_key_usage)
    )
    if purpose == "codesigning":
        ee = ee.may_be_present(x509.ExtendedKeyUsage, agnostic, _codesigning_eku)
    else:
        ee = ee.require_present(x509.ExtendedKeyUsage, xv.Criticality.CRITICAL, _timestamping_eku)
    return ca, ee


_POLICIES: dict[Purpose, tuple[xv.ExtensionPolicy, xv.ExtensionPolicy]] = {
    "codesigning": _extension_policies("codesigning"),
    "timestamping": _extension_policies("timestamping"),
}


class PathError(ChainError):
    """No chain from the certificate to a trust anchor passes RFC 5280 path validation."""


_ENCOUNTERED = re.compile(
    r"\s*\(encountered processing <Certificate\(subject=<Name\((?P<subject>.*)\)>, \.\.\.\)>\)$"
)
_EXTENSION_NAMES = {
    "2.5.29.15": "key usage",
    "2.5.29.19": "basic constraints",
    "2.5.29.30": "name constraints",
    "2.5.29.37": "extended key usage",
}
_EXTENSION_PROBLEMS = {  # the policies above only ever require presence or criticality
    "Certificate is missing required extension": "must be present",
    "Certificate extension has incorrect criticality": "must be critical",
    "certificate contains unaccounted-for critical extensions": "is critical and not understood",
}


def _explain(exc: xv.VerificationError) -> str:
    """The library's reason in the wording of the rules above, naming the certificate when
    the library does (only the certificate's repr is dropped)."""
    text = str(exc).removeprefix("validation failed: ").removeprefix("candidates exhausted: ")
    text = text.replace(
        "all candidates exhausted with no interior errors", "no issuer found among them"
    )
    where = _ENCOUNTERED.search(text)
    if where is not None:
        text = text[: where.start()]
    if m := re.fullmatch(r"invalid extension: ([\d.]+): (.*)", text):
        oid, why = m.groups()
        name = f"{_EXTENSION_NAMES[oid]} extension" if oid in _EXTENSION_NAMES else "extension"
        text = f"the {name} {oid} {_EXTENSION_PROBLEMS.get(why, f'is refused: {why}')}"
    return f"certificate {where.group('subject')!r}: {text}" if where is not None else text


@functools.lru_cache(maxsize=256)
def _verifier(purpose: Purpose, anchors: tuple[Cert, ...], at: datetime) -> xv.ClientVerifier:
    """One verifier per trust anchors, purpose and instant. A verifier holds no result, only
    its store, whose anchors keep their public keys once loaded: shared like `cert_of`'s
    parsing, while every path is validated again on every call."""
    ca_policy, ee_policy = _POLICIES[purpose]
    return (
        xv.PolicyBuilder()
        .store(xv.Store([a.cert for a in anchors]))
        .time(at)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )


def _verify_path(
    leaf: Cert,
    intermediates: Sequence[Cert],
    anchors: Sequence[Cert],
    purpose: Purpose,
    at: datetime,
) -> list[x509.Certificate]:
    """cryptography's path validation with Notation's extension policies, at `at`."""
    verifier = _verifier(purpose, tuple(anchors), at)
    problems: list[str] = []
    token = _problems.set(problems)
    try:
        return verifier.verify(leaf.cert, [c.cert for c in intermediates]).chain
    except xv.VerificationError as exc:
        if problems:  # a Notation rule, in its own words
            raise ChainError(problems[0]) from None
        # the presence and criticality the policies require are rules too, not the path
        kind = ChainError if "invalid extension: " in str(exc) else PathError
        raise kind(_explain(exc)) from None
    except x509.UnsupportedGeneralNameType as exc:
        raise PathError(f"unsupported name in the chain: {exc}") from None
    finally:
        _problems.reset(token)


def _check_each(certs: Sequence[Cert]) -> None:
    """The Notation rules the library leaves out: no SHA-1 (or other weak hash) even in a
    trust anchor's self-signature, and a usable RSA/EC key on every certificate including
    the leaf."""
    for cert in certs:
        check_signature_hash(cert)
        check_key(cert)


def _instant_inside(certs: Sequence[Cert]) -> datetime:
    """An instant at which every certificate is valid (the latest start)."""
    start = max(certs, key=lambda c: c.not_before)
    end = min(certs, key=lambda c: c.not_after)
    if start.not_before > end.not_after:
        raise ChainError(
            f"certificate {subject(end)!r} expired at {end.not_after.isoformat()}, before "
            f"certificate {subject(start)!r} became valid at {start.not_before.isoformat()}: "
            "the chain is valid at no time"
        )
    return start.not_before


def validate_chain(chain: Sequence[CertLike], purpose: Purpose) -> None:
    """Check an ordered chain, leaf first and self-signed root last (see module doc).

    The library validates the path from the leaf through the given intermediates to the
    chain's own root. It checks validity at one instant; which instant counts (now, the
    timestamp, the authentic signing time) is Notation's authenticTimestamp step, which a
    policy may only log, so the path is validated at an instant inside every certificate's
    validity and `valid_at` decides about time.
    """
    if not chain:
        raise ChainError("the certificate chain is empty")
    certs = [c if isinstance(c, Cert) else as_cert(c) for c in chain]
    _check_each(certs)
    root = certs[-1]
    if not _signed_by(root, root):  # a trust anchor's signature is not the library's business
        if len(certs) == 1:
            raise ChainError(
                f"certificate {subject(root)!r} is alone in the chain but is not self-signed"
            )
        raise ChainError(
            f"root certificate {subject(root)!r} is not self-signed; the chain must "
            "end with a self-signed root"
        )
    # Notation wants the chain in order; the library would build a path from any order.
    for cert, issuer in itertools.pairwise(certs):
        if cert.issuer_der != issuer.subject_der:
            raise ChainError(
                f"certificate {subject(cert)!r} is not issued by the next certificate "
                f"{subject(issuer)!r}"
            )
    try:
        path = _verify_path(certs[0], certs[1:-1], [root], purpose, _instant_inside(certs))
    except PathError as exc:
        raise PathError(f"the chain of {subject(certs[0])!r} does not validate: {exc}") from None
    if path != [c.cert for c in certs]:  # e.g. two intermediates with one name
        raise ChainError(
            f"the chain of {subject(certs[0])!r} is not the path from its leaf to its root"
        )


def build_path(
    leaf: CertLike,
    pool: Sequence[CertLike],
    anchors: Sequence[CertLike],
    purpose: Purpose,
    at: datetime,
) -> tuple[Cert, ...]:
    """The path from `leaf` through certificates of `pool` to one of `anchors`, valid at
    `at`, obeying the Notation rules for `purpose` and ending in a self-signed root.
    PathError when there is no such path, ChainError when a rule is broken."""
    if not anchors:
        raise PathError("no trust anchor is configured")
    found = _verify_path(
        as_cert(leaf), [as_cert(c) for c in pool], [as_cert(a) for a in anchors], purpose, at
    )
    path = tuple(as_cert(c) for c in found)
    _check_each(path)
    root = path[-1]
    if not _signed_by(root, root):
        raise ChainError(
            f"root certificate {subject(root)!r} is not self-signed; the chain must "
            "end with a self-signed root"
        )
    return path


def valid_at(chain: Sequence[CertLike], lower: datetime, upper: datetime) -> str | None:
    """None when [lower, upper] lies within every certificate's validity, else the reason."""
    for c in chain:
        cert = c if isinstance(c, Cert) else as_cert(c)
        if lower < cert.not_before:
            return f"certificate {subject(cert)!r} is not valid until {cert.not_before.isoformat()}"
        if upper > cert.not_after:
            return f"certificate {subject(cert)!r} expired at {cert.not_after.isoformat()}"
    return None


def has_revocation_info(cert: CertLike) -> bool:
    """Whether the certificate names an OCSP responder or a CRL distribution point."""
    return as_cert(cert).revocable


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


def is_subset(wanted: Mapping[str, str], have: Mapping[str, str]) -> bool:
    return wanted.items() <= have.items()
