"""Who signs regwarden's attestations: a `Signer` per key URL scheme.

The policy names a key (`attest.key`) as a URL; `SIGNERS` maps its scheme to a factory
that takes the whole URL. `file` is here; the KMS schemes (`awskms`, `gcpkms`,
`azurekms`) register in their own modules, which import their SDKs only when a key is
used. A signer returns signatures as cosign expects them (DER ECDSA, RSA PKCS#1 v1.5 or
PSS), over the bytes it is given (the KMS hashes them, or is given their digest).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from ..plugins import PluginRegistry
from ..signatures import KeyFormatError, PrivateKey, PublicKey, load_private_key

__all__ = ["SIGNERS", "FileSigner", "Signer", "SignerFactory", "signer_for"]


@runtime_checkable
class Signer(Protocol):
    """Signs attestation payloads with one key."""

    @property
    def algorithm(self) -> str: ...

    def public_key(self) -> PublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


SignerFactory = Callable[[str], Signer]
"""key URL (`file:///path/cosign.key`, `awskms:///alias/x`, …) → its signer."""

SIGNERS = PluginRegistry[SignerFactory]("attestation signer")


class FileSigner:
    """A cosign private key file (encrypted with `COSIGN_PASSWORD`, or a plain PKCS#8 PEM).

    `private_key` is kept so the cosign writers can sign each format the way cosign does
    (legacy `.att`: ECDSA SHA-256 on every curve; bundles: the curve's own hash)."""

    def __init__(self, private_key: PrivateKey) -> None:
        self.private_key = private_key

    @property
    def algorithm(self) -> str:
        return self.private_key.algorithm

    def public_key(self) -> PublicKey:
        return self.private_key.public_key

    def sign(self, data: bytes, *, style: Literal["legacy", "bundle"] = "legacy") -> bytes:
        return self.private_key.sign(data, style=style)


@SIGNERS.register("file")
def _file_signer(url: str) -> Signer:
    path = url.removeprefix("file://")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFormatError(f"cannot read signing key {path!r}: {exc.strerror}") from None
    return FileSigner(load_private_key(data, env=os.environ))


def signer_for(url: str) -> Signer:
    """The signer for a key URL; a bare path is a file."""
    scheme = url.partition("://")[0] if "://" in url else "file"
    return SIGNERS.get(scheme)(url)
