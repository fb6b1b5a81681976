"""Signature algorithms of the Notary Project signature specification.

The signing certificate's key decides the algorithm (RSA 2048/3072/4096 → PS256/384/512,
EC P-256/P-384/P-521 → ES256/384/512) and the envelope must name exactly that one.
ECDSA signatures travel as raw r‖s; RSASSA-PSS uses MGF1 with the same hash and a salt as
long as the hash.
"""

from __future__ import annotations

import enum

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ._errors import NotationError


class Algorithm(enum.Enum):
    """(name, COSE alg id, hash, key type, key size)."""

    PS256 = ("PS256", -37, "sha256", "RSA", 2048)
    PS384 = ("PS384", -38, "sha384", "RSA", 3072)
    PS512 = ("PS512", -39, "sha512", "RSA", 4096)
    ES256 = ("ES256", -7, "sha256", "EC", 256)
    ES384 = ("ES384", -35, "sha384", "EC", 384)
    ES512 = ("ES512", -36, "sha512", "EC", 521)

    @property
    def jws_name(self) -> str:
        return self.value[0]

    @property
    def cose_id(self) -> int:
        return self.value[1]

    def hash(self) -> hashes.HashAlgorithm:
        return _HASHES[self.value[2]]()

    @property
    def is_ec(self) -> bool:
        return self.name.startswith("ES")

    @property
    def coordinate_size(self) -> int:
        return (self.value[4] + 7) // 8


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_BY_JWS = {a.jws_name: a for a in Algorithm}
_BY_COSE = {a.cose_id: a for a in Algorithm}
_EC_CURVES: dict[str, int] = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}

JWS_NAMES = tuple(_BY_JWS)


def _scheme(alg: Algorithm) -> tuple[hashes.HashAlgorithm, padding.PSS | None, ec.ECDSA | None]:
    h = alg.hash()
    if alg.is_ec:
        return h, None, ec.ECDSA(h)
    return h, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), None


# What `verify` hands cryptography, built once (the objects are immutable).
_SCHEMES = {alg: _scheme(alg) for alg in Algorithm}


def from_jws(name: object) -> Algorithm:
    if not isinstance(name, str) or name not in _BY_JWS:
        raise NotationError(
            f"unsupported JWS algorithm {name!r}; expected one of {', '.join(JWS_NAMES)}"
        )
    return _BY_JWS[name]


def from_cose(alg_id: object) -> Algorithm:
    if isinstance(alg_id, bool) or not isinstance(alg_id, int) or alg_id not in _BY_COSE:
        valid = ", ".join(f"{a.cose_id} ({a.jws_name})" for a in Algorithm)
        raise NotationError(f"unsupported COSE algorithm {alg_id!r}; expected one of {valid}")
    return _BY_COSE[alg_id]


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def key_algorithm(key: object) -> Algorithm:
    """The one algorithm the Notary Project assigns to this public key."""
    if isinstance(key, rsa.RSAPublicKey):
        size = key.key_size
        for alg in (Algorithm.PS256, Algorithm.PS384, Algorithm.PS512):
            if alg.value[4] == size:
                return alg
        raise NotationError(
            f"RSA key size {size} bits is not supported; expected 2048, 3072 or 4096"
        )
    if isinstance(key, ec.EllipticCurvePublicKey):
        bits = _EC_CURVES.get(key.curve.name)
        for alg in (Algorithm.ES256, Algorithm.ES384, Algorithm.ES512):
            if alg.value[4] == bits:
                return alg
        raise NotationError(
            f"EC curve {key.curve.name} is not supported; expected P-256, P-384 or P-521"
        )
    raise NotationError(
        f"signing key type {type(key).__name__} is not supported; expected RSA or EC"
    )


def verify(alg: Algorithm, key: PublicKey, signature: bytes, message: bytes) -> bool:
    """True when `signature` over `message` verifies with `key` under `alg`."""
    h, pss, ecdsa = _SCHEMES[alg]
    try:
        if ecdsa is not None:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            size = alg.coordinate_size
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), message, ecdsa)
        else:
            if pss is None or not isinstance(key, rsa.RSAPublicKey):
                return False
            key.verify(signature, message, pss, h)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return True
