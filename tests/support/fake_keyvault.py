"""A loopback HTTPS stand-in for an Azure Key Vault's secrets API, challenge auth included.

    with FakeKeyVault() as vault:
        vault.put("slack-hook", "https://hooks.slack.test/T/B/x")
        env = {"REGWARDEN_KEY_VAULT": "https://acme.vault.azure.net",
               "REGWARDEN_AZURE_ENDPOINT_KEYVAULT": vault.url,
               "REGWARDEN_AZURE_CA_BUNDLE": vault.ca_file}
        KeyVaultSecrets(env, credential=vault.credential())("slack-hook")

**Route** (azure-keyvault-secrets 4.12, `_generated/_operations/_operations.py
build_key_vault_get_secret_request`): `GET /secrets/{secret-name}/{secret-version}?api-
version=…` — `get_secret(name)` sends an empty version, `/secrets/NAME/`. The answer is a
`SecretBundle` (`_generated/models/_models.py`): `{value, id
("https://VAULT/secrets/NAME/VERSION"), attributes {enabled, created, updated (Unix
seconds), recoveryLevel, recoverableDays}, tags}`.

**Auth** (the SDK's `_shared/challenge_auth_policy.py`; recorded answers:
Azure/azure-sdk-for-js `sdk/keyvault/keyvault-secrets/recordings/node/…`): a request
without a bearer token this fake issued is answered `401` with `WWW-Authenticate: Bearer
authorization="https://login.windows.net/TENANT", resource="https://vault.azure.net"` and
`{"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or
PoP token."}}`; the SDK then asks its credential for `https://vault.azure.net/.default`
in that tenant (`credential()` hands out the one token accepted) and sends the request
again. Its check that the challenge's resource matches the vault's domain cannot hold
for 127.0.0.1: the client turns it off only for an endpoint named in the environment.

**Errors** (Key Vault's envelope, `{"error": {"code", "message", "innererror"?}}`):
`404 SecretNotFound` ("A secret with (name/id) NAME was not found in this key vault. …"),
`403 Forbidden` with innererror `ForbiddenByRbac` for a secret in `forbid()`, `403
Forbidden` with innererror `SecretDisabled` for a disabled one. `requests` records every
request as (path, authorization, status); `accesses(name)` counts the answered reads.

**Keys** (`add_key`: a real EC or RSA private key per version, held here so signatures
verify with the JWK handed out). Routes and shapes from Azure/azure-rest-api-specs
`specification/keyvault/data-plane/Microsoft.KeyVault/stable/7.4/keys.json` and its
examples `GetKey-example.json` and `sign-example.json`: `GET /keys/{name}/{version}`
(empty version: the current one) → `KeyBundle {key: JsonWebKey {kid
("https://VAULT/keys/NAME/VERSION"), kty, key_ops, crv, x, y | n, e} (base64url, no
padding), attributes {enabled, created, updated, recoveryLevel}, tags}`; `POST
/keys/{name}/{version}/sign {alg, value}` (value: base64url digest) → `KeyOperationResult
{kid, value}`, an EC signature as JWS R‖S. Errors: `404 KeyNotFound` ("A key with
(name/id) NAME was not found in this key vault. …"), `400 BadParameter` for an algorithm
the key cannot sign with or a digest of the wrong length, `403 Forbidden` (innererror
`KeyDisabled`: "Operation sign is not allowed on a disabled key.") for a disabled key.
"""

from __future__ import annotations

import base64
import json
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from support.fake_acr import FakeCredential, _make_tls
from support.loopback import LoopbackServer

__all__ = ["RESOURCE", "TENANT", "FakeKeyVault", "Seen"]

RESOURCE = "https://vault.azure.net"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


class Seen(NamedTuple):
    path: str
    authorization: str | None
    status: int


@dataclass
class _Secret:
    value: str
    version: str
    enabled: bool
    created: int
    updated: int


# crv → (curve, JWS algorithm, hash, half length of R‖S).
_EC = {
    "P-256": (ec.SECP256R1(), "ES256", hashes.SHA256(), 32),
    "P-384": (ec.SECP384R1(), "ES384", hashes.SHA384(), 48),
}
_RSA_ALGS = {"PS256": "pss", "RS256": "pkcs1"}


@dataclass
class _KeyVersion:
    version: str
    private: Any
    crv: str | None
    enabled: bool
    created: int


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeKeyVault:
    def __init__(self, *, token: str = "") -> None:
        self.token = token or "aad-kv-" + secrets.token_urlsafe(12)
        self.lock = threading.Lock()
        self.requests: list[Seen] = []
        self._secrets: dict[str, _Secret] = {}
        self._forbidden: set[str] = set()
        self._keys: dict[str, list[_KeyVersion]] = {}
        self._dir = tempfile.TemporaryDirectory(prefix="fake-keyvault-")
        self.ca_file, context = _make_tls(Path(self._dir.name))
        self._server = LoopbackServer(self._handler_class())
        self._server.server.socket = context.wrap_socket(
            self._server.server.socket, server_side=True
        )

    # -- configuration ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def url(self) -> str:
        """`https://127.0.0.1:PORT`: the value for `REGWARDEN_AZURE_ENDPOINT_KEYVAULT`."""
        return f"https://{self.host}"

    def credential(self) -> FakeCredential:
        return FakeCredential(self.token)

    def put(self, name: str, value: str, *, enabled: bool = True) -> None:
        """Set a secret (a new version of it when it exists)."""
        now = int(time.time())
        with self.lock:
            old = self._secrets.get(name)
            created = old.created if old else now
            self._secrets[name] = _Secret(value, uuid.uuid4().hex, enabled, created, now)

    def add_key(self, name: str, *, kty: str = "EC", crv: str = "P-256") -> str:
        """A new current version of key `name` (EC on `crv`, or RSA 2048); its version."""
        private: Any = (
            ec.generate_private_key(_EC[crv][0])
            if kty == "EC"
            else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        version = _KeyVersion(
            uuid.uuid4().hex, private, crv if kty == "EC" else None, True, int(time.time())
        )
        with self.lock:
            self._keys.setdefault(name, []).append(version)
        return version.version

    def disable_key(self, name: str) -> None:
        with self.lock:
            for version in self._keys[name]:
                version.enabled = False

    def key_public(self, name: str, version: str | None = None) -> Any:
        """The `cryptography` public key of `name` (its current version by default)."""
        with self.lock:
            versions = self._keys[name]
            chosen = (
                versions[-1]
                if version is None
                else next(v for v in versions if v.version == version)
            )
            return chosen.private.public_key()

    def forbid(self, name: str) -> None:
        """Reads of `name` are refused as the caller's role assignments would."""
        with self.lock:
            self._forbidden.add(name)

    def accesses(self, name: str) -> int:
        with self.lock:
            return sum(
                1
                for s in self.requests
                if s.status == 200 and s.path.startswith(f"/secrets/{name}/")
            )

    def __enter__(self) -> FakeKeyVault:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()
        self._dir.cleanup()

    # -- serving ---------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, Nagle holds the
            # second until the client's delayed ACK (40 ms a request on Linux).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._serve(self)

            do_POST = do_GET

        return _Handler

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        authorization = h.headers.get("Authorization")
        length = int(h.headers.get("Content-Length") or 0)
        raw_body = h.rfile.read(length) if length else b""
        status, body, headers = self._answer(path, parse_qs(parts.query), authorization)
        if status == 0:  # a keys route: authorised, with an api-version
            status, body, headers = self._key_answer(h.command, path, raw_body)
        with self.lock:
            self.requests.append(Seen(path, authorization, status))
        raw = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def _answer(
        self, path: str, query: dict[str, list[str]], authorization: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if authorization != f"Bearer {self.token}":
            message = (
                "AKV10000: Request is missing a Bearer or PoP token."
                if authorization is None
                else "AKV10032: Invalid issuer."
            )
            challenge = (
                f'Bearer authorization="https://login.windows.net/{TENANT}", resource="{RESOURCE}"'
            )
            return 401, _error("Unauthorized", message), {"WWW-Authenticate": challenge}
        if not query.get("api-version"):
            return 400, _error("BadParameter", "The api-version parameter is missing."), {}
        segments = path.strip("/").split("/")
        if segments[0] == "keys":
            return 0, {}, {}
        if len(segments) not in (2, 3) or segments[0] != "secrets":
            return 404, _error("NotFound", f"No route for {path}."), {}
        name = segments[1]
        version = segments[2] if len(segments) == 3 else ""
        with self.lock:
            secret = self._secrets.get(name)
            forbidden = name in self._forbidden
        if forbidden:
            message = (
                "Caller is not authorized to perform action on resource.\r\n"
                "If role assignments, deny assignments or role definitions were changed "
                "recently, please observe propagation time.\r\n"
                "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'"
            )
            return 403, _error("Forbidden", message, inner="ForbiddenByRbac"), {}
        if secret is None or version not in ("", secret.version):
            message = (
                f"A secret with (name/id) {name} was not found in this key vault. If you "
                "recently deleted this secret you may be able to recover it using the correct "
                "recovery command. For help resolving this issue, please see "
                "https://go.microsoft.com/fwlink/?linkid=2125182"
            )
            return 404, _error("SecretNotFound", message), {}
        if not secret.enabled:
            message = "Operation get is not allowed on a disabled secret."
            return 403, _error("Forbidden", message, inner="SecretDisabled"), {}
        return (
            200,
            {
                "value": secret.value,
                "id": f"{self.url}/secrets/{name}/{secret.version}",
                "attributes": {
                    "enabled": True,
                    "created": secret.created,
                    "updated": secret.updated,
                    "recoveryLevel": "Recoverable+Purgeable",
                    "recoverableDays": 90,
                },
                "tags": {},
            },
            {},
        )

    def _key_answer(
        self, method: str, path: str, raw_body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        segments = path.strip("/").split("/")
        sign = method == "POST" and len(segments) == 4 and segments[3] == "sign"
        if not sign and (method != "GET" or len(segments) not in (2, 3)):
            return 404, _error("NotFound", f"No route for {method} {path}."), {}
        name = segments[1]
        wanted = segments[2] if len(segments) > 2 else ""
        with self.lock:
            versions = list(self._keys.get(name, []))
        chosen = (
            (versions[-1] if versions else None)
            if not wanted
            else next((v for v in versions if v.version == wanted), None)
        )
        if chosen is None:
            return 404, _key_not_found(name), {}
        kid = f"{self.url}/keys/{name}/{chosen.version}"
        if not sign:
            return (
                200,
                {
                    "key": _jwk(kid, chosen),
                    "attributes": {
                        "enabled": chosen.enabled,
                        "created": chosen.created,
                        "updated": chosen.created,
                        "recoveryLevel": "Recoverable+Purgeable",
                    },
                    "tags": {},
                },
                {},
            )
        if not chosen.enabled:
            message = "Operation sign is not allowed on a disabled key."
            return 403, _error("Forbidden", message, inner="KeyDisabled"), {}
        try:
            params = json.loads(raw_body or b"{}")
            digest = _unb64url(str(params.get("value") or ""))
            alg = str(params.get("alg") or "")
        except (ValueError, AttributeError):
            return 400, _error("BadParameter", "The request body is not valid JSON."), {}
        signed = _sign_with(chosen, alg, digest)
        if isinstance(signed, str):
            return 400, _error("BadParameter", signed), {}
        return 200, {"kid": kid, "value": _b64url(signed)}, {}


def _key_not_found(name: str) -> dict[str, Any]:
    return _error(
        "KeyNotFound",
        f"A key with (name/id) {name} was not found in this key vault. If you recently "
        "deleted this key you may be able to recover it using the correct recovery "
        "command. For help resolving this issue, please see "
        "https://go.microsoft.com/fwlink/?linkid=2125182",
    )


def _error(code: str, message: str, *, inner: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return {"error": error}


def _jwk(kid: str, version: _KeyVersion) -> dict[str, Any]:
    public = version.private.public_key()
    ops = ["sign", "verify"]
    if version.crv is not None:
        numbers = public.public_numbers()
        half = _EC[version.crv][3]
        return {
            "kid": kid,
            "kty": "EC",
            "key_ops": ops,
            "crv": version.crv,
            "x": _b64url(numbers.x.to_bytes(half)),
            "y": _b64url(numbers.y.to_bytes(half)),
        }
    numbers = public.public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8)
    return {
        "kid": kid,
        "kty": "RSA",
        "key_ops": ["encrypt", "decrypt", *ops, "wrapKey", "unwrapKey"],
        "n": _b64url(n),
        "e": _b64url(numbers.e.to_bytes(3)),
    }


def _sign_with(version: _KeyVersion, alg: str, digest: bytes) -> bytes | str:
    """The signature, or why Key Vault refuses (a BadParameter message)."""
    if version.crv is not None:
        _curve, want, algo, half = _EC[version.crv]
        if alg != want:
            return f"Key and signing algorithm are incompatible: {alg} on {version.crv}."
        if len(digest) != algo.digest_size:
            return "Invalid length of the digest."
        r, s = decode_dss_signature(version.private.sign(digest, ec.ECDSA(Prehashed(algo))))
        return r.to_bytes(half) + s.to_bytes(half)
    kind = _RSA_ALGS.get(alg)
    if kind is None:
        return f"Key and signing algorithm are incompatible: {alg} on RSA."
    if len(digest) != 32:
        return "Invalid length of the digest."
    pad: Any = (
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        if kind == "pss"
        else padding.PKCS1v15()
    )
    return bytes(version.private.sign(digest, pad, Prehashed(hashes.SHA256())))
