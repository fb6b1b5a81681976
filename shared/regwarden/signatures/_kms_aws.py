"""`awskms://` keys: the AWS module of the signatures package (boto3 is imported here only)."""

from __future__ import annotations

from typing import Any

from ..botocore_config import botocore_config
from ..errors import NotImplementedYet, RegistryError
from ._errors import KeyFormatError
from .keys import KeyRef, PublicKey, public_key_from_der

__all__ = ["fetch_aws_public_key"]


def fetch_aws_public_key(ref: KeyRef, client: Any | None) -> PublicKey:
    """The public half of an `awskms://` key, from KMS `GetPublicKey` (DER)."""
    if client is None:
        try:
            import boto3
        except ImportError:
            raise NotImplementedYet("awskms:// keys need boto3; install regwarden[aws]") from None
        kwargs: dict[str, Any] = {}
        if ref.aws_region:
            kwargs["region_name"] = ref.aws_region
        if ref.endpoint:
            kwargs["endpoint_url"] = f"https://{ref.endpoint}"
        client = boto3.client("kms", config=botocore_config(), **kwargs)
    try:
        answer = client.get_public_key(KeyId=ref.value)
    except Exception as exc:  # botocore's error types are only known once it is imported
        if any(c.__name__ == "ClientError" for c in type(exc).__mro__):  # no key / denied
            raise KeyFormatError(
                f"AWS KMS refused get_public_key for {str(ref)!r}: {exc}"
            ) from None
        raise RegistryError(f"AWS KMS unreachable for {str(ref)!r}: {exc}") from None
    der = answer.get("PublicKey") if isinstance(answer, dict) else None
    if not isinstance(der, bytes | bytearray):
        raise KeyFormatError(f"AWS KMS returned no public key for {str(ref)!r}")
    return public_key_from_der(bytes(der))
