"""A real distribution 2.8 (`LocalRegistry`) behind token authentication, as Harbor, ACR,
GAR and Docker Hub run it: its `auth.token` config points at a small token service on
loopback that grants what the asker's Basic credentials allow, as RS256 JWTs whose `x5c`
header carries a self-signed certificate that is the registry's `rootcertbundle`.

    with TokenRegistry(users={"ci": "pw"}) as registry:
        RegistryClient(registry.host, credentials=Credentials("ci", "pw"))
        registry.claims(token)   # what a token granted (its `access` list)

Authenticated users get every action they ask for; anonymous askers a token with no access.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from regwarden.devtools import LocalRegistry
from support.loopback import LoopbackServer

SERVICE = "regwarden-test-registry"
ISSUER = "regwarden-test-token-service"
LIFETIME = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenRegistry(LocalRegistry):
    def __init__(self, *, users: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token_users = dict(users)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.now(UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )
        self.granted: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(_TokenHandler):
            registry = owner

        self._tokens = LoopbackServer(Handler)

    @property
    def realm(self) -> str:
        return f"{self._tokens.url}/token"

    def config(self, port: int) -> dict[str, Any]:
        cfg = super().config(port)
        assert self.workdir is not None
        bundle = self.workdir / "token-root.pem"
        bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        cfg["auth"] = {
            "token": {
                "realm": self.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(bundle),
            }
        }
        return cfg

    def start(self) -> TokenRegistry:
        self._tokens.start()
        super().start()
        return self

    def stop(self) -> None:
        super().stop()
        self._tokens.stop()

    def __enter__(self) -> TokenRegistry:
        return self.start()

    def issue(self, subject: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + LIFETIME,
            "nbf": now - 5,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        with self._lock:
            self.granted.append(claims)
        return f"{signing_input}.{_b64url(signature)}"

    @staticmethod
    def claims(token: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(_unb64url(token.split(".")[1]))
        return loaded


class _TokenHandler(BaseHTTPRequestHandler):
    registry: TokenRegistry
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        query = parse_qs(self.path.partition("?")[2])
        user = self._user()
        access: list[dict[str, Any]] = []
        if user is not None:
            for scope in query.get("scope", []):
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        elif self.headers.get("Authorization"):
            self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
            return
        token = self.registry.issue(user or "", access)
        self._send(200, {"token": token, "access_token": token, "expires_in": LIFETIME})

    def _user(self) -> str | None:
        value = self.headers.get("Authorization", "")
        if not value.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return user if self.registry.token_users.get(user) == password else None

    def _send(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
