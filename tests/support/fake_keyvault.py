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
"""

from __future__ import annotations

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


class FakeKeyVault:
    def __init__(self, *, token: str = "") -> None:
        self.token = token or "aad-kv-" + secrets.token_urlsafe(12)
        self.lock = threading.Lock()
        self.requests: list[Seen] = []
        self._secrets: dict[str, _Secret] = {}
        self._forbidden: set[str] = set()
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

        return _Handler

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        authorization = h.headers.get("Authorization")
        status, body, headers = self._answer(path, parse_qs(parts.query), authorization)
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


def _error(code: str, message: str, *, inner: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return {"error": error}
