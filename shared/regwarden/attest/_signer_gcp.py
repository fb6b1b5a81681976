"""`gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/V]` signer:
Cloud KMS `asymmetricSign` over REST (v1).

Without a version the newest ENABLED version is used (listed with
`filter=state=ENABLED`), as an asymmetric key has no primary version. The version's
`getPublicKey` gives the PEM key and its algorithm, which names the digest KMS expects
(`EC_SIGN_P256_SHA256` → sha256, `EC_SIGN_P384_SHA384` → sha384, `RSA_SIGN_PSS_*_SHA256`,
`RSA_SIGN_PKCS1_*_SHA256`); `EC_SIGN_ED25519` signs the data itself. EC signatures come
back DER, the form cosign writes.

Integrity as Google asks of callers: the request carries `digestCrc32c` (or
`dataCrc32c`); an answer that did not check it (`verifiedDigestCrc32c`), whose
`signatureCrc32c` does not match its signature, or that names another version is refused.

Endpoint: `REGWARDEN_GCP_ENDPOINT_CLOUDKMS` (`gcp_clients`), else
`https://cloudkms.googleapis.com`; a loopback http:// stand-in is called without a token.
google-auth is imported only when a token is needed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

import httpx

from .. import gcp_clients
from ..errors import RegistryError
from ..signatures import KeyFormatError, KeyRef, PublicKey
from ..signatures.keys import KeyAlgorithm, load_public_key
from ._signer import SIGNERS, Signer

__all__ = ["DEFAULT_ENDPOINT", "GcpKmsSigner", "crc32c"]

DEFAULT_ENDPOINT = "https://cloudkms.googleapis.com"
_NAME = re.compile(
    r"(?P<key>projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+)"
    r"(?:/cryptoKeyVersions/(?P<version>[^/]+))?"
)
_TIMEOUT = 10.0


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum Cloud KMS's integrity fields carry."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _digest_name(algorithm: str) -> str | None:
    """The digest a CryptoKeyVersionAlgorithm signs: its `_SHA256`/`_SHA384` suffix; None
    for Ed25519 (which signs the data)."""
    if algorithm == "EC_SIGN_ED25519":
        return None
    supported = algorithm in ("EC_SIGN_P256_SHA256", "EC_SIGN_P384_SHA384") or (
        algorithm.startswith(("RSA_SIGN_PSS_", "RSA_SIGN_PKCS1_")) and algorithm.endswith("_SHA256")
    )
    if not supported:
        raise KeyFormatError(
            f"Cloud KMS algorithm {algorithm!r} cannot make a cosign signature; valid: "
            "EC_SIGN_P256_SHA256, EC_SIGN_P384_SHA384, EC_SIGN_ED25519, RSA_SIGN_PSS_*_SHA256, "
            "RSA_SIGN_PKCS1_*_SHA256"
        )
    return "sha384" if algorithm.endswith("SHA384") else "sha256"


class GcpKmsSigner:
    """Signs with a Cloud KMS ASYMMETRIC_SIGN key version; the private key stays in KMS."""

    def __init__(
        self,
        ref: KeyRef | str,
        env: Mapping[str, str],
        *,
        credentials: Any = None,
    ) -> None:
        self.ref = KeyRef.parse(ref) if isinstance(ref, str) else ref
        match = _NAME.fullmatch(self.ref.value) if self.ref.scheme == "gcpkms" else None
        if match is None:
            raise KeyFormatError(
                f"key reference {self.ref}: expected gcpkms://projects/P/locations/L/keyRings/R/"
                "cryptoKeys/K[/cryptoKeyVersions/V]"
            )
        self._key_name = match["key"]
        self._version_name = self.ref.value if match["version"] else None
        override = gcp_clients.endpoint("cloudkms", env)
        self.endpoint = override or DEFAULT_ENDPOINT
        self._anonymous = self.endpoint.startswith("http://")
        self._credentials = credentials
        self._token: gcp_clients.AccessToken | None = None
        self._lock = threading.Lock()
        self._described: tuple[str, PublicKey, str] | None = None

    @property
    def algorithm(self) -> KeyAlgorithm:
        return self.public_key().algorithm

    def public_key(self) -> PublicKey:
        return self._describe()[1]

    def sign(self, data: bytes) -> bytes:
        version, _public, kms_algorithm = self._describe()
        digest_name = _digest_name(kms_algorithm)
        if digest_name is None:
            body: dict[str, Any] = {
                "data": base64.b64encode(data).decode(),
                "dataCrc32c": str(crc32c(data)),
            }
            checked = "verifiedDataCrc32c"
        else:
            digest = hashlib.new(digest_name, data).digest()
            body = {
                "digest": {digest_name: base64.b64encode(digest).decode()},
                "digestCrc32c": str(crc32c(digest)),
            }
            checked = "verifiedDigestCrc32c"
        answer = self._request("POST", f"/v1/{version}:asymmetricSign", json=body)
        try:
            signature = base64.b64decode(str(answer.get("signature", "")), validate=True)
        except ValueError:
            raise KeyFormatError(
                f"Cloud KMS answered an unreadable signature for {version}"
            ) from None
        if answer.get(checked) is not True:
            raise RegistryError(f"Cloud KMS did not check the request's {checked[8:]} ({version})")
        if not signature or str(answer.get("signatureCrc32c")) != str(crc32c(signature)):
            raise RegistryError(f"Cloud KMS signature for {version} failed its CRC32C check")
        if answer.get("name") != version:
            raise KeyFormatError(f"Cloud KMS signed with {answer.get('name')!r}, asked {version}")
        return signature

    # -- REST ------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if self._anonymous:
            return {}
        with self._lock:
            if self._token is None:
                credentials = self._credentials or gcp_clients.default_credentials()
                self._token = gcp_clients.AccessToken(credentials)
            token = self._token
        bearer = token.get()
        return {"Authorization": f"Bearer {bearer}"} if bearer else {}

    def _request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, json: Any = None
    ) -> dict[str, Any]:
        try:
            response = httpx.request(
                method,
                self.endpoint + path,
                params=params,
                json=json,
                headers=self._headers(),
                timeout=_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise RegistryError(f"Cloud KMS unreachable for {self.ref}: {exc}") from None
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if response.status_code >= 500 or response.status_code == 429:
            raise RegistryError(f"Cloud KMS answered HTTP {response.status_code} for {self.ref}")
        if response.status_code != 200 or not isinstance(doc, dict):
            error = doc.get("error") if isinstance(doc, dict) else None
            status = error.get("status") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise KeyFormatError(
                f"Cloud KMS refused {method} {path.rsplit('/', 1)[-1]} for {self.ref}: "
                f"HTTP {response.status_code} {status or ''} {message or ''}".rstrip()
            )
        return doc

    def _newest_enabled_version(self) -> str:
        versions: list[str] = []
        token = ""
        while True:
            params = {"filter": "state=ENABLED", "pageSize": "100"}
            if token:
                params["pageToken"] = token
            page = self._request("GET", f"/v1/{self._key_name}/cryptoKeyVersions", params=params)
            for item in page.get("cryptoKeyVersions") or []:
                if isinstance(item, dict) and item.get("state") == "ENABLED":
                    versions.append(str(item.get("name")))
            token = str(page.get("nextPageToken") or "")
            if not token:
                break
        numbered = [v for v in versions if v.rsplit("/", 1)[-1].isdigit()]
        if not numbered:
            raise KeyFormatError(f"{self.ref}: the key has no ENABLED version to sign with")
        return max(numbered, key=lambda v: int(v.rsplit("/", 1)[-1]))

    def _describe(self) -> tuple[str, PublicKey, str]:
        """(version name, public key, CryptoKeyVersionAlgorithm), asked of KMS once."""
        if self._described is not None:
            return self._described
        version = self._version_name or self._newest_enabled_version()
        answer = self._request("GET", f"/v1/{version}/publicKey")
        algorithm = str(answer.get("algorithm") or "")
        _digest_name(algorithm)  # refuse what cannot sign for cosign before anything is signed
        pem = answer.get("pem")
        if not isinstance(pem, str) or not pem:
            raise KeyFormatError(f"Cloud KMS returned no public key for {version}")
        if "pemCrc32c" in answer and str(answer["pemCrc32c"]) != str(crc32c(pem.encode())):
            raise RegistryError(f"Cloud KMS public key of {version} failed its CRC32C check")
        described = (version, load_public_key(pem.encode()), algorithm)
        self._described = described
        return described


@SIGNERS.register("gcpkms")
def _gcpkms_signer(url: str) -> Signer:
    return GcpKmsSigner(url, os.environ)
