"""`azurekms://VAULT/KEY[/VERSION]` signer: Azure Key Vault keys `sign` over REST.

VAULT is `NAME.vault.azure.net` (a bare NAME gets that suffix). Without a version the
key's current one is used: `GET /keys/{name}/` answers a KeyBundle whose `key.kid` names
it, so the public key and the signatures always come from one version. The JWK (`kty`
EC with `crv`, `x`, `y`; RSA with `n`, `e`) is the public key. `POST
/keys/{name}/{version}/sign {alg, value}` signs a digest: ES256/ES384/ES512 by curve,
PS256 for RSA. Key Vault answers an EC signature as JWS R‖S; it is re-encoded to the DER
form cosign writes.

Requests go through azure-core's pipeline (retries, the process's
`DefaultAzureCredential`) with Key Vault's challenge flow: the first request goes
without a token; the 401's `WWW-Authenticate` names the tenant and resource, whose
`/.default` scope the credential is asked for, and the request is sent again. The
resource must be the vault's own domain (a token for another audience is never asked
for), except for a stand-in named by `REGWARDEN_AZURE_ENDPOINT_KEYVAULT` (its CA in
`REGWARDEN_AZURE_CA_BUNDLE`). azure-core is imported on first use, never with this module.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .. import azure_clients
from ..errors import NotImplementedYet, RegistryError
from ..signatures import KeyFormatError, KeyRef, PublicKey
from ..signatures.keys import KeyAlgorithm, public_key_from_der
from ._signer import SIGNERS, Signer

__all__ = ["API_VERSION", "AzureKmsSigner", "jwk_public_key"]

API_VERSION = "7.4"
_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
_TIMEOUT = 10.0
# JWK crv → (cryptography curve, JWS algorithm, hashlib name, signature half length).
_CURVES: dict[str, tuple[ec.EllipticCurve, str, str, int]] = {
    "P-256": (ec.SECP256R1(), "ES256", "sha256", 32),
    "P-384": (ec.SECP384R1(), "ES384", "sha384", 48),
    "P-521": (ec.SECP521R1(), "ES512", "sha512", 66),
}


def _b64url(text: object, what: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise KeyFormatError(f"Key Vault JWK: {what} is missing")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise KeyFormatError(f"Key Vault JWK: {what} is not base64url") from None


def jwk_public_key(jwk: Mapping[str, Any]) -> PublicKey:
    """A Key Vault JsonWebKey's public half (EC / EC-HSM, RSA / RSA-HSM)."""
    kty = str(jwk.get("kty") or "")
    if kty in ("EC", "EC-HSM"):
        curve = _CURVES.get(str(jwk.get("crv")))
        if curve is None:
            raise KeyFormatError(f"Key Vault key curve {jwk.get('crv')!r}; valid: {list(_CURVES)}")
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(_b64url(jwk.get("x"), "x")),
            int.from_bytes(_b64url(jwk.get("y"), "y")),
            curve[0],
        )
        try:
            key: Any = numbers.public_key()
        except ValueError:
            raise KeyFormatError("Key Vault JWK: the point is not on its curve") from None
    elif kty in ("RSA", "RSA-HSM"):
        key = rsa.RSAPublicNumbers(
            int.from_bytes(_b64url(jwk.get("e"), "e")),
            int.from_bytes(_b64url(jwk.get("n"), "n")),
        ).public_key()
    else:
        raise KeyFormatError(f"Key Vault key type {kty!r} cannot sign; valid: EC, RSA")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public_key_from_der(der)


def _challenge(header: str) -> dict[str, str]:
    """The parameters of a `Bearer k="v", …` challenge."""
    return {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', header)}


def _make_policy(credential: Any, vault_host: str, verify_resource: bool) -> Any:
    from azure.core.pipeline.policies import HTTPPolicy

    class KeyVaultChallenge(HTTPPolicy):  # type: ignore[type-arg]
        """Key Vault's challenge flow (see the module's docstring); the token is kept
        until five minutes before it expires."""

        def __init__(self) -> None:
            super().__init__()
            self._scope: str | None = None
            self._tenant: str | None = None
            self._token: Any = None

        def _authorize(self, request: Any) -> None:
            if self._token is None or self._token.expires_on - time.time() < 300:
                self._token = credential.get_token(self._scope, tenant_id=self._tenant)
            request.http_request.headers["Authorization"] = f"Bearer {self._token.token}"

        def send(self, request: Any) -> Any:
            if self._scope is not None:
                self._authorize(request)
            response = self.next.send(request)
            if response.http_response.status_code != 401:
                return response
            params = _challenge(response.http_response.headers.get("WWW-Authenticate", ""))
            resource = params.get("resource") or params.get("scope", "").removesuffix("/.default")
            authority = params.get("authorization") or params.get("authorization_uri", "")
            if not resource:
                return response
            domain = urlsplit(resource).hostname or ""
            if verify_resource and not (vault_host == domain or vault_host.endswith("." + domain)):
                raise KeyFormatError(
                    f"Key Vault {vault_host} asked for a token for {resource}, not its own domain"
                )
            self._scope = resource.rstrip("/") + "/.default"
            self._tenant = urlsplit(authority).path.strip("/").split("/")[0] or None
            self._token = None
            self._authorize(request)
            return self.next.send(request)

    return KeyVaultChallenge()


class AzureKmsSigner:
    """Signs with a Key Vault (or Managed HSM) key; the private key stays in the vault."""

    def __init__(
        self, ref: KeyRef | str, env: Mapping[str, str], *, credential: Any = None
    ) -> None:
        self.ref = KeyRef.parse(ref) if isinstance(ref, str) else ref
        parts = self.ref.value.strip("/").split("/") if self.ref.scheme == "azurekms" else []
        if len(parts) not in (2, 3) or not all(_NAME.fullmatch(p) for p in parts[1:]):
            raise KeyFormatError(
                f"key reference {self.ref}: expected azurekms://VAULT.vault.azure.net/KEY[/VERSION]"
            )
        vault = parts[0] if "." in parts[0] else f"{parts[0]}.vault.azure.net"
        self.key_name = parts[1]
        self._version = parts[2] if len(parts) == 3 else ""
        override = azure_clients.endpoint("keyvault", env)
        self.vault_url = override or f"https://{vault}"
        self._stand_in = override is not None
        self._vault_host = urlsplit(self.vault_url).hostname or vault
        self._verify: str | bool = azure_clients.ca_bundle(env) or True
        self._credential = credential
        self._client: Any = None
        self._lock = threading.Lock()
        self._described: tuple[str, PublicKey, str, str, int] | None = None

    @property
    def algorithm(self) -> KeyAlgorithm:
        return self.public_key().algorithm

    def public_key(self) -> PublicKey:
        return self._describe()[1]

    def sign(self, data: bytes) -> bytes:
        version, _public, alg, hash_name, half = self._describe()
        digest = hashlib.new(hash_name, data).digest()
        body = {"alg": alg, "value": base64.urlsafe_b64encode(digest).decode().rstrip("=")}
        answer = self._request("POST", f"/keys/{quote(self.key_name)}/{version}/sign", body)
        raw = _b64url(answer.get("value"), "signature value")
        if not half:
            return raw
        if len(raw) != 2 * half:
            raise KeyFormatError(f"Key Vault {alg} signature has {len(raw)} bytes, not {2 * half}")
        return encode_dss_signature(int.from_bytes(raw[:half]), int.from_bytes(raw[half:]))

    # -- REST ------------------------------------------------------------------------------

    def _pipeline(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from azure.core import PipelineClient
                    from azure.core.pipeline.policies import RetryPolicy
                    from azure.core.pipeline.transport import RequestsTransport
                except ImportError:
                    raise NotImplementedYet(
                        "azurekms:// keys need azure-core; install regwarden[azure]"
                    ) from None
                credential = self._credential or azure_clients.default_credential()
                self._client = PipelineClient(
                    self.vault_url,
                    policies=[
                        RetryPolicy(retry_total=2),
                        _make_policy(credential, self._vault_host, not self._stand_in),
                    ],
                    transport=RequestsTransport(
                        connection_timeout=_TIMEOUT,
                        read_timeout=_TIMEOUT,
                        **azure_clients.transport_options(self._verify),
                    ),
                )
            return self._client

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError
        from azure.core.rest import HttpRequest

        request = HttpRequest(
            method, self.vault_url + path, params={"api-version": API_VERSION}, json=body
        )
        where = f"Key Vault key {self.key_name!r} in {self.vault_url}"
        try:
            response = self._pipeline().send_request(request)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise RegistryError(f"{where}: no answer ({type(exc).__name__})") from None
        try:
            doc = response.json()
        except ValueError:
            doc = None
        status = response.status_code
        if status >= 500 or status == 429:
            raise RegistryError(f"{where}: HTTP {status}")
        if status != 200 or not isinstance(doc, dict):
            error = doc.get("error") if isinstance(doc, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            raise KeyFormatError(
                f"{where}: refused {path.rsplit('/', 1)[-1]} (HTTP {status} {code})"
            )
        return doc

    def _describe(self) -> tuple[str, PublicKey, str, str, int]:
        """(version, public key, JWS algorithm, digest name, EC half length or 0)."""
        if self._described is not None:
            return self._described
        bundle = self._request("GET", f"/keys/{quote(self.key_name)}/{self._version}")
        jwk = bundle.get("key")
        if not isinstance(jwk, dict):
            raise KeyFormatError(f"Key Vault key {self.key_name!r}: the answer has no key")
        ops = jwk.get("key_ops")
        if isinstance(ops, list) and "sign" not in ops:
            raise KeyFormatError(f"Key Vault key {self.key_name!r} does not permit sign ({ops})")
        version = str(jwk.get("kid") or "").rstrip("/").rsplit("/", 1)[-1]
        if not _NAME.fullmatch(version):
            raise KeyFormatError(f"Key Vault key {self.key_name!r}: kid names no version")
        public = jwk_public_key(jwk)
        curve = _CURVES.get(str(jwk.get("crv")))
        if curve is not None:
            described = (version, public, curve[1], curve[2], curve[3])
        else:
            described = (version, public, "PS256", "sha256", 0)
        self._described = described
        return described


@SIGNERS.register("azurekms")
def _azurekms_signer(url: str) -> Signer:
    return AzureKmsSigner(url, os.environ)
