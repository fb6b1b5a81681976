"""Keys for cosign signatures.

- Public keys: PEM `PUBLIC KEY` (PKIX SubjectPublicKeyInfo) for ECDSA P-256/P-384/P-521,
  RSA (2048 bits or more) and Ed25519. `load_public_key` caches by PEM bytes.
- Private keys: cosign-encrypted PEM (`ENCRYPTED SIGSTORE PRIVATE KEY` and the legacy
  `ENCRYPTED COSIGN PRIVATE KEY`): a JSON document `{"kdf": scrypt, "cipher":
  nacl/secretbox, "ciphertext"}` whose plaintext is a PKCS#8 DER key. Also plain PKCS#8.
  `encrypt_private_key` writes the same format, so keys made here work with cosign.
- Key references (`KeyRef`): inline PEM, `file://`, `awskms://`, `gcpkms://`, `azurekms://`.
  `fetch_public_key` resolves them; only AWS KMS is implemented (boto3, imported lazily).

The key id used in reports is the hex sha256 of the SPKI DER; the Sigstore bundle
`publicKey.hint` is the base64 of the same hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import nacl.bindings
import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ..errors import NotImplementedYet
from ._errors import KeyFormatError

__all__ = [
    "COSIGN_PASSWORD_ENV",
    "SCRYPT_N_VALUES",
    "KeyAlgorithm",
    "KeyRef",
    "PrivateKey",
    "PublicKey",
    "encrypt_private_key",
    "fetch_public_key",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "public_key_from_der",
]

COSIGN_PASSWORD_ENV = "COSIGN_PASSWORD"  # noqa: S105 - the variable's name, not a password
SCRYPT_N_VALUES = (32768, 65536, 131072)
"""The scrypt work factors cosign accepts (r=8, p=1); anything else is refused (DoS guard)."""

KeyAlgorithm = Literal["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa", "ed25519"]
_ENCRYPTED_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)
_SCRYPT_MAXMEM = 512 * 1024 * 1024
_MIN_RSA_BITS = 2048
_CURVES: dict[str, tuple[KeyAlgorithm, type[hashes.HashAlgorithm]]] = {
    "secp256r1": ("ecdsa-p256", hashes.SHA256),
    "secp384r1": ("ecdsa-p384", hashes.SHA384),
    "secp521r1": ("ecdsa-p521", hashes.SHA512),
}
_HASH_BY_NAME: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_PublicKeyType = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
_PrivateKeyType = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, eq=False, slots=True)
class PublicKey:
    """A verification key with cosign's verification rules attached.

    ECDSA: SHA-256 (cosign's default for every curve) and the curve's own hash
    (SHA-384 for P-384, SHA-512 for P-521, as Sigstore bundles use) are both accepted.
    RSA: PKCS#1 v1.5 with SHA-256, then PSS with SHA-256. Ed25519: pure Ed25519 and
    Ed25519ph (SHA-512 prehash, what cosign signs with).
    """

    key: _PublicKeyType
    der: bytes
    algorithm: KeyAlgorithm
    key_id: str = field(init=False)
    _raw_ed25519: bytes = field(init=False, repr=False)
    _ecdsa: tuple[ec.ECDSA, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", hashlib.sha256(self.der).hexdigest())
        raw = b""
        if isinstance(self.key, ed25519.Ed25519PublicKey):
            raw = self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        object.__setattr__(self, "_raw_ed25519", raw)
        ecdsa: tuple[ec.ECDSA, ...] = ()
        if isinstance(self.key, ec.EllipticCurvePublicKey):
            own = _CURVES[self.key.curve.name][1]
            ecdsa = (ec.ECDSA(hashes.SHA256()),)
            if own is not hashes.SHA256:
                ecdsa = (ec.ECDSA(own()), *ecdsa)
        object.__setattr__(self, "_ecdsa", ecdsa)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    @property
    def hint(self) -> str:
        """The Sigstore bundle `publicKey.hint`: base64 of sha256(SPKI DER)."""
        return base64.b64encode(bytes.fromhex(self.key_id)).decode("ascii")

    @property
    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when `signature` is valid over `data` under cosign's rules; never raises."""
        key = self.key
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                for algo in self._ecdsa:
                    try:
                        key.verify(signature, data, algo)
                        return True
                    except InvalidSignature:
                        continue
                return False
            if isinstance(key, rsa.RSAPublicKey):
                return _rsa_verify(key, signature, data, hashes.SHA256)
            if len(signature) != 64:
                return False
            try:
                key.verify(signature, data)
                return True
            except InvalidSignature:
                return self._verify_ed25519ph(signature, data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return False

    def verify_digest(self, signature: bytes, digest: bytes, hash_name: str) -> bool:
        """Verify a signature made over a message whose `hash_name` digest is `digest`.

        ECDSA and RSA can check this without the message. Ed25519 cannot (pure Ed25519
        hashes the whole message itself), so this returns False for Ed25519 keys.
        """
        algo_type = _HASH_BY_NAME.get(hash_name)
        if algo_type is None or len(digest) != algo_type().digest_size:
            return False
        key = self.key
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, digest, ec.ECDSA(Prehashed(algo_type())))
                return True
            if isinstance(key, rsa.RSAPublicKey):
                return _rsa_verify(key, signature, digest, algo_type, prehashed=True)
            return False
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            return False

    def _verify_ed25519ph(self, signature: bytes, data: bytes) -> bool:
        state = nacl.bindings.crypto_sign_ed25519ph_state()
        nacl.bindings.crypto_sign_ed25519ph_update(state, data)
        try:
            return bool(
                nacl.bindings.crypto_sign_ed25519ph_final_verify(
                    state, signature, self._raw_ed25519
                )
            )
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            return False


def _rsa_verify(
    key: rsa.RSAPublicKey,
    signature: bytes,
    data: bytes,
    hash_type: type[hashes.HashAlgorithm],
    *,
    prehashed: bool = False,
) -> bool:
    algo: hashes.HashAlgorithm | Prehashed = Prehashed(hash_type()) if prehashed else hash_type()
    for pad in (
        padding.PKCS1v15(),
        padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=padding.PSS.AUTO),
    ):
        try:
            key.verify(signature, data, pad, algo)
            return True
        except InvalidSignature:
            continue
    return False


def _wrap_public(key: object, der: bytes | None = None) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVES.get(key.curve.name)
        if curve is None:
            raise KeyFormatError(
                f"unsupported ECDSA curve {key.curve.name}; valid: P-256, P-384, P-521"
            )
        algorithm: KeyAlgorithm = curve[0]
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise KeyFormatError(
                f"RSA key too small: got {key.key_size} bits, expected at least {_MIN_RSA_BITS}"
            )
        algorithm = "rsa"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        algorithm = "ed25519"
    else:
        raise KeyFormatError(
            f"unsupported public key type {type(key).__name__}; valid: ECDSA, RSA, Ed25519"
        )
    if der is None:
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return PublicKey(key=key, der=der, algorithm=algorithm)


@lru_cache(maxsize=256)
def load_public_key(pem: bytes | str) -> PublicKey:
    """Load a PEM `PUBLIC KEY` (SPKI). Cached: loading the same PEM twice is free."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError(
            f"cannot load public key: {exc}; expected a PEM 'PUBLIC KEY' block (SPKI)"
        ) from None
    return _wrap_public(key)


@lru_cache(maxsize=256)
def public_key_from_der(der: bytes) -> PublicKey:
    """Load a DER SubjectPublicKeyInfo (trusted-root and KMS form). Cached."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError(f"cannot load DER public key: {exc}") from None
    return _wrap_public(key, der)


@dataclass(frozen=True, eq=False, slots=True)
class PrivateKey:
    """A signing key that signs the way cosign does."""

    key: _PrivateKeyType

    @property
    def public_key(self) -> PublicKey:
        return _wrap_public(self.key.public_key())

    @property
    def algorithm(self) -> KeyAlgorithm:
        return self.public_key.algorithm

    def sign(self, data: bytes, *, style: Literal["legacy", "bundle"] = "legacy") -> bytes:
        """Sign `data`.

        `legacy` follows `cosign sign` for `.sig` tags: ECDSA with SHA-256 on every curve,
        RSA PKCS#1 v1.5 SHA-256, Ed25519ph. `bundle` follows Sigstore bundles: ECDSA with the
        curve's hash, RSA PKCS#1 v1.5 SHA-256, pure Ed25519.
        """
        key = self.key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algo: hashes.HashAlgorithm = hashes.SHA256()
            if style == "bundle":
                algo = _CURVES[key.curve.name][1]()
            return key.sign(data, ec.ECDSA(algo))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if style == "bundle":
            return key.sign(data)
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        state = nacl.bindings.crypto_sign_ed25519ph_state()
        nacl.bindings.crypto_sign_ed25519ph_update(state, data)
        return bytes(nacl.bindings.crypto_sign_ed25519ph_final_create(state, seed + public))

    def pkcs8_der(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate_private_key(
    algorithm: KeyAlgorithm = "ecdsa-p256", *, rsa_bits: int = 3072
) -> PrivateKey:
    """A new key; `ecdsa-p256` is cosign's default."""
    key: _PrivateKeyType
    if algorithm == "ecdsa-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "ecdsa-p384":
        key = ec.generate_private_key(ec.SECP384R1())
    elif algorithm == "ecdsa-p521":
        key = ec.generate_private_key(ec.SECP521R1())
    elif algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise KeyFormatError(
            f"unknown key algorithm {algorithm!r}; valid: ecdsa-p256, ecdsa-p384, ecdsa-p521, "
            "rsa, ed25519"
        )
    return PrivateKey(key=key)


def _password_bytes(password: str | bytes | None, env: Mapping[str, str] | None) -> bytes:
    if password is None:
        source = os.environ if env is None else env
        password = source.get(COSIGN_PASSWORD_ENV, "")
    return password.encode("utf-8") if isinstance(password, str) else password


def _pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    blocks = []
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1).decode("ascii")
        body = b"".join(match.group(2).split())
        try:
            blocks.append((label, base64.b64decode(body, validate=True)))
        except ValueError:
            raise KeyFormatError(f"PEM block {label!r} has invalid base64") from None
    return blocks


def load_private_key(
    pem: bytes | str,
    password: str | bytes | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> PrivateKey:
    """Load a cosign-encrypted private key (or a plain PKCS#8 / SEC1 / PKCS#1 PEM key).

    `password` defaults to the `COSIGN_PASSWORD` environment variable (read from `env`
    when given, else the process environment), then to the empty password, as cosign does.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    blocks = _pem_blocks(data)
    if not blocks:
        raise KeyFormatError("no PEM block found; expected an 'ENCRYPTED SIGSTORE PRIVATE KEY'")
    label, body = blocks[0]
    if label in _ENCRYPTED_PEM_TYPES:
        der = _decrypt(body, _password_bytes(password, env))
        return _private_from_der(der)
    if label in ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFormatError(f"cannot load {label}: {exc}") from None
        return _check_private(key)
    valid = ", ".join([*_ENCRYPTED_PEM_TYPES, "PRIVATE KEY"])
    raise KeyFormatError(f"unsupported PEM block {label!r}; valid: {valid}")


def _private_from_der(der: bytes) -> PrivateKey:
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError(f"decrypted key is not a PKCS#8 key: {exc}") from None
    return _check_private(key)


def _check_private(key: object) -> PrivateKey:
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise KeyFormatError(
            f"unsupported private key type {type(key).__name__}; valid: ECDSA, RSA, Ed25519"
        )
    private = PrivateKey(key=key)
    _wrap_public(key.public_key())  # same curve / size rules as for verification
    return private


def _field(doc: Mapping[str, Any], *path: str) -> Any:
    value: Any = doc
    for name in path:
        if not isinstance(value, dict) or name not in value:
            raise KeyFormatError(f"encrypted key JSON: missing field {'.'.join(path)!r}")
        value = value[name]
    return value


def _b64_field(doc: Mapping[str, Any], *path: str) -> bytes:
    value = _field(doc, *path)
    if not isinstance(value, str):
        raise KeyFormatError(f"encrypted key JSON: field {'.'.join(path)!r} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise KeyFormatError(
            f"encrypted key JSON: field {'.'.join(path)!r} is not base64"
        ) from None


def _decrypt(body: bytes, password: bytes) -> bytes:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise KeyFormatError("encrypted key: PEM body is not JSON") from None
    if not isinstance(doc, dict):
        raise KeyFormatError("encrypted key: PEM body is not a JSON object")
    kdf_name = _field(doc, "kdf", "name")
    if kdf_name != "scrypt":
        raise KeyFormatError(f"encrypted key: got kdf {kdf_name!r}, expected 'scrypt'")
    n, r, p = (_field(doc, "kdf", "params", name) for name in ("N", "r", "p"))
    if not all(type(v) is int for v in (n, r, p)) or n not in SCRYPT_N_VALUES or (r, p) != (8, 1):
        raise KeyFormatError(
            f"encrypted key: got scrypt N={n!r} r={r!r} p={p!r}, expected N in "
            f"{', '.join(map(str, SCRYPT_N_VALUES))} with r=8 p=1"
        )
    cipher_name = _field(doc, "cipher", "name")
    if cipher_name != "nacl/secretbox":
        raise KeyFormatError(
            f"encrypted key: got cipher {cipher_name!r}, expected 'nacl/secretbox'"
        )
    salt = _b64_field(doc, "kdf", "salt")
    nonce = _b64_field(doc, "cipher", "nonce")
    ciphertext = _b64_field(doc, "ciphertext")
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise KeyFormatError(f"encrypted key: got a {len(nonce)}-byte nonce, expected 24")
    secret = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)
    try:
        return bytes(nacl.secret.SecretBox(secret).decrypt(ciphertext, nonce))
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, ValueError):
        raise KeyFormatError(
            "encrypted key: decryption failed (wrong password or corrupted key)",
            hint=f"set the password with {COSIGN_PASSWORD_ENV}",
        ) from None


def encrypt_private_key(
    key: PrivateKey,
    password: str | bytes,
    *,
    pem_type: str = "ENCRYPTED SIGSTORE PRIVATE KEY",
    scrypt_n: int = 65536,
    salt: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt `key` the way `cosign generate-key-pair` does; returns the PEM bytes."""
    if pem_type not in _ENCRYPTED_PEM_TYPES:
        raise KeyFormatError(f"got PEM type {pem_type!r}, expected one of {_ENCRYPTED_PEM_TYPES}")
    if scrypt_n not in SCRYPT_N_VALUES:
        raise KeyFormatError(f"got scrypt N={scrypt_n}, expected one of {SCRYPT_N_VALUES}")
    salt = secrets.token_bytes(32) if salt is None else salt
    nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE) if nonce is None else nonce
    pw = password.encode("utf-8") if isinstance(password, str) else password
    secret = hashlib.scrypt(pw, salt=salt, n=scrypt_n, r=8, p=1, maxmem=_SCRYPT_MAXMEM, dklen=32)
    sealed = nacl.secret.SecretBox(secret).encrypt(key.pkcs8_der(), nonce).ciphertext
    doc = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": scrypt_n, "r": 8, "p": 1},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(bytes(sealed)).decode(),
    }
    body = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        f"-----BEGIN {pem_type}-----\n" + "\n".join(lines) + f"\n-----END {pem_type}-----\n"
    ).encode()


# --------------------------------------------------------------------------- key references

KeyScheme = Literal["pem", "file", "awskms", "gcpkms", "azurekms"]
_KMS_SCHEMES = ("awskms", "gcpkms", "azurekms")


@dataclass(frozen=True, slots=True)
class KeyRef:
    """Where a public key comes from.

    - `pem`: inline PEM text (`value` is the PEM)
    - `file`: `file://PATH` or a bare path (`value` is the path)
    - `awskms`: `awskms://[ENDPOINT]/KEY` with KEY a key id, ARN or `alias/NAME`
      (`endpoint` is the optional host[:port], `value` the key)
    - `gcpkms`: `gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/V]`
    - `azurekms`: `azurekms://VAULT.vault.azure.net/KEY`
    """

    scheme: KeyScheme
    value: str
    endpoint: str | None = None

    @classmethod
    def parse(cls, text: str) -> KeyRef:
        stripped = text.strip()
        if "-----BEGIN" in stripped:
            return cls(scheme="pem", value=stripped)
        scheme, sep, rest = stripped.partition("://")
        if not sep:
            if not stripped:
                raise KeyFormatError("empty key reference; expected a PEM, file:// or KMS URI")
            return cls(scheme="file", value=stripped)
        if scheme == "file":
            if not rest:
                raise KeyFormatError(f"key reference {text!r}: file:// needs a path")
            return cls(scheme="file", value=rest)
        if scheme == "awskms":
            endpoint, slash, key = rest.partition("/")
            if not slash or not key:
                raise KeyFormatError(
                    f"key reference {text!r}: expected awskms:///KEY-ID, awskms:///ARN, "
                    "awskms:///alias/NAME or awskms://ENDPOINT/KEY"
                )
            return cls(scheme="awskms", value=key, endpoint=endpoint or None)
        if scheme in ("gcpkms", "azurekms"):
            if not rest:
                raise KeyFormatError(f"key reference {text!r}: {scheme}:// needs a key name")
            return cls(scheme=scheme, value=rest)  # type: ignore[arg-type]
        valid = ", ".join(["file", *_KMS_SCHEMES])
        raise KeyFormatError(
            f"key reference {text!r}: got scheme {scheme!r}, expected inline PEM or one of: {valid}"
        )

    @property
    def aws_region(self) -> str | None:
        """The region from an ARN key reference (`arn:aws:kms:REGION:ACCOUNT:key/ID`)."""
        if self.scheme == "awskms" and self.value.startswith("arn:"):
            parts = self.value.split(":")
            return parts[3] if len(parts) > 3 and parts[3] else None
        return None

    def __str__(self) -> str:
        if self.scheme == "pem":
            return "<inline PEM>"
        if self.scheme == "awskms":
            return f"awskms://{self.endpoint or ''}/{self.value}"
        return f"{self.scheme}://{self.value}"


def fetch_public_key(ref: KeyRef | str, *, kms_client: Any | None = None) -> PublicKey:
    """Resolve a key reference to a public key (I/O: reads files, calls KMS).

    For `awskms://`, `kms_client` may be a ready boto3 KMS client (tests, custom
    credentials); otherwise one is created for the ARN's region and the URI's endpoint.
    """
    key_ref = KeyRef.parse(ref) if isinstance(ref, str) else ref
    if key_ref.scheme == "pem":
        return load_public_key(key_ref.value.encode())
    if key_ref.scheme == "file":
        try:
            data = Path(key_ref.value).read_bytes()
        except OSError as exc:
            raise KeyFormatError(
                f"cannot read key file {key_ref.value!r}: {exc.strerror}"
            ) from None
        return load_public_key(data)
    if key_ref.scheme == "awskms":
        from ._kms_aws import fetch_aws_public_key  # boto3 only when an awskms:// key is used

        return fetch_aws_public_key(key_ref, kms_client)
    raise NotImplementedYet(
        f"{key_ref.scheme}:// keys are not supported yet; valid today: inline PEM, file://, "
        "awskms://",
        hint="export the public key to a PEM file and reference it with file://",
    )
