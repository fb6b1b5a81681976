"""`awskms://[ENDPOINT]/KEY` signer: AWS KMS `Sign` with the key's own algorithm.

KEY is a key id, ARN or `alias/NAME`. The key's spec (from `GetPublicKey`, which also
gives the public key) picks the algorithm cosign's verifiers accept for it:
ECC_NIST_P256 → ECDSA_SHA_256, P384 → ECDSA_SHA_384, P521 → ECDSA_SHA_512, RSA_* →
RSASSA_PSS_SHA_256. KMS answers DER ECDSA signatures, the form cosign writes.

A message up to KMS's 4096-byte limit is sent whole (MessageType RAW: KMS hashes it);
a longer one is hashed here and sent as its digest (MessageType DIGEST). Both sign the
same bytes, so the signature does not depend on the payload's size.

The region comes from an ARN, else from the environment (as boto3 reads it); ENDPOINT
names another host (https), and `AWS_ENDPOINT_URL_KMS` is honoured by boto3 itself.
boto3 is imported on first use, never with this module.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from ..botocore_config import botocore_config
from ..errors import NotImplementedYet, RegistryError
from ..signatures import KeyFormatError, KeyRef, PublicKey
from ..signatures.keys import KeyAlgorithm, public_key_from_der
from ._signer import SIGNERS, Signer

__all__ = ["RAW_MESSAGE_LIMIT", "AwsKmsSigner"]

RAW_MESSAGE_LIMIT = 4096
"""The largest message KMS `Sign` takes whole (its API reference: Message, 1-4096 bytes)."""

# KeySpec → (SigningAlgorithm, hashlib name of its digest).
_ALGORITHMS: dict[str, tuple[str, str]] = {
    "ECC_NIST_P256": ("ECDSA_SHA_256", "sha256"),
    "ECC_NIST_P384": ("ECDSA_SHA_384", "sha384"),
    "ECC_NIST_P521": ("ECDSA_SHA_512", "sha512"),
    "RSA_2048": ("RSASSA_PSS_SHA_256", "sha256"),
    "RSA_3072": ("RSASSA_PSS_SHA_256", "sha256"),
    "RSA_4096": ("RSASSA_PSS_SHA_256", "sha256"),
}


class AwsKmsSigner:
    """Signs with an AWS KMS asymmetric SIGN_VERIFY key; the private key never leaves KMS."""

    def __init__(self, ref: KeyRef | str, *, client: Any | None = None) -> None:
        self.ref = KeyRef.parse(ref) if isinstance(ref, str) else ref
        if self.ref.scheme != "awskms":
            raise KeyFormatError(f"not an awskms:// key: {self.ref}")
        self._client = client
        self._lock = threading.Lock()
        self._described: tuple[PublicKey, str, str] | None = None

    @property
    def algorithm(self) -> KeyAlgorithm:
        return self.public_key().algorithm

    def public_key(self) -> PublicKey:
        return self._describe()[0]

    def sign(self, data: bytes) -> bytes:
        _public, algorithm, hash_name = self._describe()
        if len(data) <= RAW_MESSAGE_LIMIT:
            message, message_type = data, "RAW"
        else:
            message, message_type = hashlib.new(hash_name, data).digest(), "DIGEST"
        answer = self._call(
            "sign",
            KeyId=self.ref.value,
            Message=message,
            MessageType=message_type,
            SigningAlgorithm=algorithm,
        )
        signature = answer.get("Signature") if isinstance(answer, dict) else None
        if not isinstance(signature, bytes | bytearray) or not signature:
            raise KeyFormatError(f"AWS KMS returned no signature for {self.ref}")
        return bytes(signature)

    # -- KMS -------------------------------------------------------------------------------

    def _kms(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import boto3
                except ImportError:
                    raise NotImplementedYet(
                        "awskms:// keys need boto3; install regwarden[aws]"
                    ) from None
                kwargs: dict[str, Any] = {}
                if self.ref.aws_region:
                    kwargs["region_name"] = self.ref.aws_region
                if self.ref.endpoint:
                    kwargs["endpoint_url"] = f"https://{self.ref.endpoint}"
                self._client = boto3.client("kms", config=botocore_config(), **kwargs)
            return self._client

    def _call(self, operation: str, **params: Any) -> Any:
        try:
            return getattr(self._kms(), operation)(**params)
        except Exception as exc:  # botocore's types are only known once it is imported
            if any(c.__name__ == "ClientError" for c in type(exc).__mro__):  # no key, denied
                raise KeyFormatError(f"AWS KMS refused {operation} for {self.ref}: {exc}") from None
            raise RegistryError(f"AWS KMS unreachable for {self.ref}: {exc}") from None

    def _describe(self) -> tuple[PublicKey, str, str]:
        """(public key, signing algorithm, digest name), asked of KMS once."""
        if self._described is not None:
            return self._described
        answer = self._call("get_public_key", KeyId=self.ref.value)
        if not isinstance(answer, dict):
            raise KeyFormatError(f"AWS KMS returned no public key for {self.ref}")
        der = answer.get("PublicKey")
        usage = answer.get("KeyUsage")
        spec = str(answer.get("KeySpec") or answer.get("CustomerMasterKeySpec") or "")
        if usage != "SIGN_VERIFY":
            raise KeyFormatError(f"{self.ref}: key usage is {usage!r}, expected SIGN_VERIFY")
        chosen = _ALGORITHMS.get(spec)
        if chosen is None:
            valid = ", ".join(_ALGORITHMS)
            raise KeyFormatError(f"{self.ref}: key spec {spec!r} cannot sign; valid: {valid}")
        offered = answer.get("SigningAlgorithms") or []
        if chosen[0] not in offered:
            raise KeyFormatError(f"{self.ref}: key does not offer {chosen[0]} (offers {offered})")
        if not isinstance(der, bytes | bytearray):
            raise KeyFormatError(f"AWS KMS returned no public key for {self.ref}")
        described = (public_key_from_der(bytes(der)), *chosen)
        self._described = described
        return described


@SIGNERS.register("awskms")
def _awskms_signer(url: str) -> Signer:
    return AwsKmsSigner(url)
