"""A loopback stand-in for Azure Container Registry: ACR's control plane (`/acr/v1/…`), its
token service (`/oauth2/exchange`, `/oauth2/token`) and the `/v2/` front of a real local
docker-registry, on one HTTPS port with a self-signed test CA.

    with LocalRegistry() as reg, FakeAcr(reg.host) as acr:
        env = {"REGWARDEN_AZURE_ENDPOINT_ACR": acr.url,
               "REGWARDEN_AZURE_CA_BUNDLE": acr.ca_file}
        registry = AcrRegistry(acr.login_server, ProviderOptions(credentials=acr.credential()),
                               env=env)

The registry's name stays `NAME.azurecr.io` (`acr.login_server`: the `service` of every
challenge and exchange); `acr.host` is only where it is served. TLS: a CA and a leaf for
127.0.0.1/localhost made with `cryptography`; the CA's PEM is `acr.ca_file`, what the SDK's
`connection_verify` (and the OCI client) verify against.

**Auth** (shapes: the SDK's `_generated/models` — `AcrRefreshToken {refresh_token}`,
`AcrAccessToken {access_token}`, the exchange form `grant_type=access_token, service,
access_token` and the token form `grant_type=refresh_token, service, scope,
refresh_token`; Azure/acr `docs/AAD-OAuth.md`): every `/v2/` and `/acr/v1/` request
without an access token this fake issued gets `401` with `WWW-Authenticate: Bearer
realm="https://<front>/oauth2/token",service="<login server>",scope="…"` (the SDK reads the
scope from it). `POST /oauth2/exchange` takes an AAD token in `aad_tokens` (what
`credential()` hands out) and answers a refresh token; `/oauth2/token` takes a refresh
token (POST form, or GET with Basic `00000000-0000-0000-0000-000000000000:<refresh
token>`, the `docker login` path skopeo takes) and answers an access token. Scopes are
recorded, not enforced; a challenge's scope is ACR's (`/acr/v1/`: GET `metadata_read`,
PATCH `metadata_write`, DELETE `delete`, as the SDK's recorded challenges show). Access
tokens are JWT-shaped with an `exp` (`access_token_lifetime`, 1 h: an assumption) and
unsigned; `revoke_access_tokens()` makes every one issued so far answer 401. What each saw:
`exchanges`, `token_requests`; every 401 challenge `(method, path, scope)`: `challenges`;
every authorized `/acr/v1/` request: `acr_requests`; every `/v2/` request with its
Authorization: `v2_requests`.

**Control plane** (URL templates: the SDK's `_generated/operations`; bodies: its
`_generated/models` and the recorded answers in reference/events.md §3.3, from
Azure/acr `docs/preview/quarantine/readme.md`):

- `GET /acr/v1/_catalog` → `Repositories {repositories}` (one page);
- `fail_next(method, regex, status, headers)` answers the next matching (authorized)
  request with an error instead, `/v2/` and `/acr/v1/` alike;
- `park(n, when, matches)` holds the `n`th authorized request `matches(method, decoded
  path, headers)` accepts (an `/acr/v1/` PATCH, a `/v2/` write …) `before` it is served
  or `after` (served, the answer kept back), as `FakeGar.park`; the chaos tests kill the
  function app's host there;
- `GET /acr/v1/{name}` → `ContainerRepositoryProperties {registry, imageName, createdTime,
  lastUpdateTime, manifestCount, tagCount, changeableAttributes}`;
- `GET /acr/v1/{name}/_manifests` → `AcrManifests {registry, imageName, manifests:
  [ManifestAttributesBase]}`; each `{digest, imageSize, createdTime, lastUpdateTime,
  architecture, os, references: [{digest, architecture, os}], mediaType, configMediaType,
  tags, changeableAttributes {deleteEnabled, writeEnabled, readEnabled, listEnabled},
  quarantineState}` — every manifest, untagged ones and an index's children included;
- `GET|PATCH /acr/v1/{name}/_manifests/{digest}` → `ArtifactManifestProperties {registry,
  imageName, manifest}` (PATCH: `ManifestWriteableProperties`, plus `quarantineState` and
  `quarantineDetails` — a JSON string —, the fields the SDKs keep internal);
- `GET /acr/v1/{name}/_tags` → `TagList {registry, imageName, tags: [TagAttributesBase
  {name, digest, createdTime, lastUpdateTime, signed, changeableAttributes}]}`;
  `GET|PATCH|DELETE /acr/v1/{name}/_tags/{tag}` (`ArtifactTagProperties {registry,
  imageName, tag}`); a deleted tag is hidden from `/v2/` too (distribution 2.8 cannot
  delete a tag), until pushed again.

**Data plane** (`/v2/…`): forwarded to the real registry, with ACR's manifest locks
enforced: a GET/HEAD of a manifest whose `readEnabled` is false answers 403 `DENIED`, a PUT
over a manifest (by digest, or a tag pointing at it) whose `writeEnabled` is false and a
DELETE of one whose `deleteEnabled` is false answer 403 `DENIED` ("The operation is
disallowed on this registry, repository or image."; the message ACR gives, the status an
assumption). Push times are recorded as manifests pass the front (`acr.now` is the
clock); a manifest the front has not seen gets its time when first listed.
Errors: ACR's OCI envelope `{"errors": [{"code", "message"}]}`.

**Quarantine policy** (Azure/acr `docs/preview/quarantine/readme.md`, events.md §3.3): off
by default, and then no manifest carries `quarantineState`. With `acr.quarantine_policy =
True`, every manifest carries one: `Quarantined` until a PATCH sets `Passed` or `Failed`
(the name of the waiting state is an assumption: ACR's docs show only Passed and
Failed), and a `/v2/` read of a manifest not `Passed` is refused (by digest 403 `DENIED`,
by tag 404 `MANIFEST_UNKNOWN`, as the readme describes) unless the caller's token came
from `/oauth2/exchange` (the gate's identity, which holds AcrQuarantineWriter); tokens
from `mint_refresh_token()` (skopeo: an ordinary puller) are refused.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import ipaddress
import json
import re
import secrets
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from support.fake_gar import Matcher, Parked, _read_chunked
from support.loopback import LoopbackServer

__all__ = ["TOKEN_USER", "FakeAcr", "FakeCredential", "V2Seen"]

TOKEN_USER = "00000000-0000-0000-0000-000000000000"
_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
_DENIED = "The operation is disallowed on this registry, repository or image."
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)
_V2_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_V2_TAGS = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_ACR = re.compile(r"^/acr/v1/(?P<name>.+?)(?:/(?P<kind>_manifests|_tags)(?:/(?P<ref>[^/]+))?)?$")


class V2Seen(NamedTuple):
    method: str
    path: str
    status: int
    authorization: str | None


class _Token(NamedTuple):
    token: str
    expires_on: int


class FakeCredential:
    """An azure-core `TokenCredential` handing out one fixed AAD token; `scopes` records
    what it was asked for."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_kwargs: Any) -> _Token:
        self.scopes.append(scopes)
        expires = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
        return _Token(self.token, expires)


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _make_tls(directory: Path) -> tuple[str, ssl.SSLContext]:
    """A test CA and a leaf for 127.0.0.1/localhost signed by it: (the CA's PEM file, the
    server's context)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regwarden fake ACR CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file = directory / "leaf.pem"
    cert_file.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file)
    return str(ca_file), context


@dataclass
class _Manifest:
    digest: str
    media_type: str
    size: int
    references: list[dict[str, Any]]
    architecture: str | None
    os: str | None
    config_media_type: str | None


class FakeAcr:
    def __init__(
        self, upstream: str, *, login_server: str = "fakereg.azurecr.io", aad_token: str = ""
    ) -> None:
        self.upstream = upstream
        self.login_server = login_server
        self.aad_token = aad_token or "aad-" + secrets.token_urlsafe(12)
        self.aad_tokens: set[str] = {self.aad_token}
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.lock = threading.RLock()
        self.exchanges: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.oauth_connections: list[tuple[str, dict[str, str], tuple[str, int]]] = []
        """(path, form, the client's address) of each `/oauth2/` POST: one address per
        connection, so a client that keeps its connection alive shows one."""
        self.v2_requests: list[V2Seen] = []
        self.acr_requests: list[tuple[str, str]] = []
        self.challenges: list[tuple[str, str, str]] = []
        self.access_token_lifetime = timedelta(hours=1)
        self._refresh: set[str] = set()
        self._access: set[str] = set()
        self._reader_refresh: set[str] = set()
        self._reader_access: set[str] = set()
        self.quarantine_policy = False
        self._quarantine: dict[tuple[str, str], tuple[str, str | None]] = {}
        self._created: dict[tuple[str, str], datetime] = {}
        self._updated: dict[tuple[str, str], datetime] = {}
        self._tag_times: dict[tuple[str, str], tuple[datetime, datetime]] = {}
        self._attrs: dict[tuple[str, str], dict[str, bool]] = {}
        self._hidden: set[tuple[str, str]] = set()
        self._cache: dict[tuple[str, str], _Manifest] = {}
        self._faults: list[tuple[str, re.Pattern[str], int, dict[str, str]]] = []
        self._dir = tempfile.TemporaryDirectory(prefix="fake-acr-")
        self.ca_file, context = _make_tls(Path(self._dir.name))
        self._server = LoopbackServer(self._handler_class())
        self._server.server.socket = context.wrap_socket(
            self._server.server.socket, server_side=True
        )

    # -- serving ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def url(self) -> str:
        """`https://127.0.0.1:PORT`: the value for `REGWARDEN_AZURE_ENDPOINT_ACR`."""
        return f"https://{self.host}"

    def env(self) -> dict[str, str]:
        return {"REGWARDEN_AZURE_ENDPOINT_ACR": self.url, "REGWARDEN_AZURE_CA_BUNDLE": self.ca_file}

    def credential(self) -> FakeCredential:
        return FakeCredential(self.aad_token)

    def mint_refresh_token(self, *, quarantine_reader: bool = False) -> str:
        """A refresh token as `/oauth2/exchange` would give (for skopeo's `--dest-creds`);
        `quarantine_reader`: its access tokens may pull manifests not yet `Passed`."""
        token = "rt-" + secrets.token_urlsafe(16)
        with self.lock:
            self._refresh.add(token)
            if quarantine_reader:
                self._reader_refresh.add(token)
        return token

    def quarantine_state(self, repository: str, digest: str) -> tuple[str, str | None]:
        """(quarantineState, quarantineDetails) of a manifest under the quarantine policy."""
        with self.lock:
            return self._quarantine.get((repository, digest), ("Quarantined", None))

    def fail_next(
        self, method: str, pattern: str, status: int, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next authorized request matching (method, decoded-path regex) with
        `status` in ACR's error envelope (429 `TOOMANYREQUESTS` with `Retry-After`, 503 …)."""
        with self.lock:
            self._faults.append((method.upper(), re.compile(pattern), status, dict(headers or {})))

    def _take_fault(self, method: str, path: str) -> tuple[int, dict[str, str]] | None:
        with self.lock:
            for i, (m, rx, status, headers) in enumerate(self._faults):
                if m == method and rx.fullmatch(path):
                    del self._faults[i]
                    return status, headers
        return None

    _park: Parked | None = None

    def park(self, n: int, when: Literal["before", "after"], matches: Matcher) -> Parked:
        """Hold the `n`th authorized request from now on that `matches(method, decoded
        path, headers)` accepts — an `/acr/v1/` PATCH or DELETE, a `/v2/` write —
        `before` it is served (it never lands) or `after` (served, its answer kept back);
        `Parked.reached` is set while it waits and `release()` drops its connection
        unanswered, as FakeGar.park does. One park at a time."""
        parked = Parked(n, when, matches)
        with self.lock:
            self._park = parked
        return parked

    def unpark(self) -> None:
        """Stop counting; a request still held is released."""
        with self.lock:
            parked, self._park = self._park, None
        if parked is not None:
            parked.release()

    def _claim(self, method: str, path: str, headers: Any) -> Parked | None:
        with self.lock:
            parked = self._park
            if parked is None or not parked.matches(method, path, headers):
                return None
            parked.counted.append(f"{method} {path}")
            if len(parked.counted) != parked.n:
                return None
            self._park = None  # claimed: serving it "after" below counts nothing again
            parked.request = f"{method} {path}"
            return parked

    def _hold(self, h: BaseHTTPRequestHandler, parked: Parked) -> None:
        if parked.when == "after":
            real, h.wfile = h.wfile, io.BytesIO()
            try:
                self._serve(h)
                status_line = h.wfile.getvalue().split(b"\r\n", 1)[0].split()
            finally:
                h.wfile = real
            parked.status = int(status_line[1]) if len(status_line) > 1 else None
        else:
            self._body(h)
        parked._hold()
        h.close_connection = True  # nothing answered: the connection just ends

    def attributes(self, repository: str, digest: str) -> dict[str, bool]:
        with self.lock:
            return dict(self._attrs_of(repository, digest))

    def __enter__(self) -> FakeAcr:
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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, Nagle holds the
            # second until the client's delayed ACK (40 ms a request on Linux).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _route(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _route

        return _Handler

    # -- plumbing --------------------------------------------------------------------------

    @staticmethod
    def _body(h: BaseHTTPRequestHandler) -> bytes:
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            return b"".join(_read_chunked(h))
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    @staticmethod
    def _reply(
        h: BaseHTTPRequestHandler,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        raw = (
            body
            if isinstance(body, bytes)
            else (json.dumps(body).encode() if body is not None else b"")
        )
        h.send_response(status)
        if body is not None and not isinstance(body, bytes):
            h.send_header("Content-Type", "application/json; charset=utf-8")
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        if h.command != "HEAD" and raw:
            h.wfile.write(raw)

    def _error(
        self, h: BaseHTTPRequestHandler, status: int, code: str, message: str, **headers: str
    ) -> None:
        self._reply(h, status, {"errors": [{"code": code, "message": message}]}, headers)

    def _upstream(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        host, _, port = self.upstream.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path = parts.path
        query = parse_qs(parts.query)
        if path.startswith("/oauth2/"):
            return self._oauth(h, path, query)
        authorization = h.headers.get("Authorization")
        if not self._authorized(authorization):
            body = self._body(h)
            del body
            scope = self._scope(unquote(path), h.command)  # the SDK sends `/` as %2F
            challenge = (
                f'Bearer realm="{self.url}/oauth2/token",service="{self.login_server}",'
                f'scope="{scope}"'
            )
            status_path = path
            with self.lock:
                self.challenges.append((h.command, path, scope))
            if path.startswith("/v2/"):
                with self.lock:
                    self.v2_requests.append(V2Seen(h.command, status_path, 401, authorization))
            return self._error(
                h, 401, "UNAUTHORIZED", "authentication required", **{"WWW-Authenticate": challenge}
            )
        fault = self._take_fault(h.command, unquote(path))
        if fault is not None:
            self._body(h)
            code = "TOOMANYREQUESTS" if fault[0] == 429 else "UNAVAILABLE"
            return self._error(h, fault[0], code, f"injected {fault[0]}", **fault[1])
        parked = self._claim(h.command, unquote(path), h.headers)
        if parked is not None:
            return self._hold(h, parked)
        if path.startswith("/acr/v1/"):
            with self.lock:
                self.acr_requests.append((h.command, path))
            return self._control(h, unquote(path), query)
        if path.startswith("/v2/"):
            return self._v2(h, path, authorization)
        return self._error(h, 404, "NOT_FOUND", f"no route {path}")

    @staticmethod
    def _scope(path: str, method: str) -> str:
        if path.startswith("/acr/v1/_catalog") or path == "/v2/_catalog":
            return "registry:catalog:*"
        m = re.match(r"^/(?:v2|acr/v1)/(.+?)/(?:manifests|blobs|tags|_manifests|_tags)", path)
        name = m.group(1) if m else unquote(path.removeprefix("/acr/v1/"))
        if path.startswith("/acr/v1/"):  # ACR's metadata scopes (SDK recordings' challenges)
            action = {"PATCH": "metadata_write", "DELETE": "delete"}.get(method, "metadata_read")
        else:
            action = "pull" if method in ("GET", "HEAD") else "pull,push,delete"
        return f"repository:{name}:{action}" if path != "/v2/" else ""

    def _access_token(self, scope: str) -> str:
        """A JWT-shaped access token (its signature random: nothing checks it here) whose
        `exp` is `access_token_lifetime` from `now()`, as ACR's access tokens carry one."""

        def part(doc: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

        now = self.now()
        claims = {
            "jti": secrets.token_urlsafe(12),
            "iss": "Azure Container Registry",
            "aud": self.login_server,
            "iat": int(now.timestamp()),
            "exp": int((now + self.access_token_lifetime).timestamp()),
            "access": scope,
        }
        head = part({"alg": "RS256", "typ": "JWT"})
        # "at-" marks the fake's access tokens (tests tell them from refresh tokens by it)
        return f"at-{head}.{part(claims)}.{secrets.token_urlsafe(16)}"

    def revoke_access_tokens(self) -> None:
        """Forget every access token issued so far: each is answered 401 from now on."""
        with self.lock:
            self._access.clear()
            self._reader_access.clear()

    def _authorized(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self.lock:
            return authorization.removeprefix("Bearer ") in self._access

    # -- token service ---------------------------------------------------------------------

    def _oauth(self, h: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]]) -> None:
        body = self._body(h)
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if h.command == "POST":
            with self.lock:
                self.oauth_connections.append((path, form, h.client_address[:2]))
        if path == "/oauth2/exchange" and h.command == "POST":
            with self.lock:
                self.exchanges.append(form)
            ok = (
                form.get("grant_type") == "access_token"
                and form.get("service") == self.login_server
                and form.get("access_token") in self.aad_tokens
            )
            if not ok:
                return self._error(h, 401, "UNAUTHORIZED", "invalid AAD access token")
            token = self.mint_refresh_token(quarantine_reader=True)
            return self._reply(h, 200, {"refresh_token": token})
        if path == "/oauth2/token":
            if h.command == "GET":  # docker login's path: Basic user:refresh token
                form = {k: " ".join(v) for k, v in query.items()}
                value = h.headers.get("Authorization") or ""
                if value.startswith("Basic "):
                    user, _, password = base64.b64decode(value[6:]).decode().partition(":")
                    if user == TOKEN_USER:
                        form["refresh_token"] = password
                        form["grant_type"] = "refresh_token"
            with self.lock:
                self.token_requests.append(form)
                ok = (
                    form.get("grant_type") == "refresh_token"
                    and form.get("refresh_token") in self._refresh
                    and form.get("service") == self.login_server
                )
                if ok:
                    token = self._access_token(form.get("scope", ""))
                    self._access.add(token)
                    if form.get("refresh_token") in self._reader_refresh:
                        self._reader_access.add(token)
            if not ok:
                return self._error(h, 401, "UNAUTHORIZED", "invalid refresh token")
            answer = {"access_token": token}
            if h.command == "GET":
                answer["token"] = token  # docker's token response field
            return self._reply(h, 200, answer)
        return self._error(h, 404, "NOT_FOUND", f"no route {path}")

    # -- state -----------------------------------------------------------------------------

    def _attrs_of(self, name: str, digest: str) -> dict[str, bool]:
        return self._attrs.setdefault(
            (name, digest),
            {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True},
        )

    def _catalog(self) -> list[str]:
        names: list[str] = []
        path: str | None = "/v2/_catalog?n=1000"
        while path:
            status, headers, data = self._upstream("GET", path)
            if status != 200:
                break
            names.extend(json.loads(data).get("repositories") or [])
            link = re.match(r"<([^>]+)>", headers.get("link", ""))
            path = link.group(1) if link else None
        return names

    def _tags(self, name: str) -> dict[str, str]:
        """tag → digest, hidden tags left out."""
        status, _, data = self._upstream("GET", f"/v2/{name}/tags/list")
        if status != 200:
            return {}
        out: dict[str, str] = {}
        for tag in json.loads(data).get("tags") or []:
            if (name, tag) in self._hidden:
                continue
            st, headers, _ = self._upstream(
                "HEAD", f"/v2/{name}/manifests/{tag}", headers={"Accept": _ACCEPT}
            )
            if st == 200:
                out[tag] = headers["docker-content-digest"]
        return out

    def _manifest(self, name: str, digest: str) -> _Manifest | None:
        cached = self._cache.get((name, digest))
        if cached is not None:
            return cached
        status, headers, raw = self._upstream(
            "GET", f"/v2/{name}/manifests/{digest}", headers={"Accept": _ACCEPT}
        )
        if status != 200:
            return None
        doc = json.loads(raw)
        media = str(doc.get("mediaType") or headers.get("content-type", ""))
        references: list[dict[str, Any]] = []
        arch = os_ = config_type = None
        if "manifests" in doc:
            size = 0
            for child in doc["manifests"]:
                platform = child.get("platform") or {}
                references.append(
                    {
                        "digest": child["digest"],
                        "architecture": platform.get("architecture"),
                        "os": platform.get("os"),
                    }
                )
                sub = self._manifest(name, child["digest"])
                size += sub.size if sub is not None else 0
        else:
            config = doc.get("config") or {}
            config_type = config.get("mediaType")
            size = int(config.get("size") or 0) + sum(int(x["size"]) for x in doc["layers"])
            st, _, blob = self._upstream("GET", f"/v2/{name}/blobs/{config.get('digest')}")
            if st == 200:
                try:
                    parsed = json.loads(blob)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict) and parsed.get("architecture"):
                    arch, os_ = parsed.get("architecture"), parsed.get("os")
        found = _Manifest(digest, media, size, references, arch, os_, config_type)
        self._cache[(name, digest)] = found
        return found

    def _digests(self, name: str) -> tuple[dict[str, _Manifest], dict[str, str]]:
        """Every manifest ACR would list (tagged, their children, those pushed through the
        front), and tag → digest."""
        tags = self._tags(name)
        wanted = list(
            dict.fromkeys([*tags.values(), *(d for (n, d) in self._created if n == name)])
        )
        out: dict[str, _Manifest] = {}
        while wanted:
            digest = wanted.pop(0)
            if digest in out:
                continue
            found = self._manifest(name, digest)
            if found is None:
                continue
            out[digest] = found
            self._created.setdefault((name, digest), self.now())
            wanted.extend(r["digest"] for r in found.references)
        return out, tags

    def _manifest_body(self, name: str, m: _Manifest, tags: dict[str, str]) -> dict[str, Any]:
        created = self._created[(name, m.digest)]
        body: dict[str, Any] = {
            "digest": m.digest,
            "imageSize": m.size,
            "createdTime": _rfc3339(created),
            "lastUpdateTime": _rfc3339(self._updated.get((name, m.digest), created)),
            "mediaType": m.media_type,
            "tags": sorted(t for t, d in tags.items() if d == m.digest) or None,
            "changeableAttributes": dict(self._attrs_of(name, m.digest)),
        }
        if self.quarantine_policy:
            state, details = self._quarantine.get((name, m.digest), ("Quarantined", None))
            body["quarantineState"] = state
            body["quarantineDetails"] = details
        if m.architecture:
            body["architecture"] = m.architecture
            body["os"] = m.os
        if m.references:
            body["references"] = m.references
        if m.config_media_type:
            body["configMediaType"] = m.config_media_type
        return {k: v for k, v in body.items() if v is not None}

    def _tag_body(self, name: str, tag: str, digest: str) -> dict[str, Any]:
        created, updated = self._tag_times.get((name, tag), (self.now(), self.now()))
        return {
            "name": tag,
            "digest": digest,
            "createdTime": _rfc3339(created),
            "lastUpdateTime": _rfc3339(updated),
            "signed": False,
            "changeableAttributes": {
                "deleteEnabled": True,
                "writeEnabled": True,
                "readEnabled": True,
                "listEnabled": True,
            },
        }

    # -- control plane ---------------------------------------------------------------------

    def _control(self, h: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]]) -> None:
        body = self._body(h)
        method = h.command
        if path == "/acr/v1/_catalog" and method == "GET":
            with self.lock:
                return self._reply(h, 200, {"repositories": sorted(self._catalog())})
        m = _ACR.match(path)
        if m is None:
            return self._error(h, 404, "NAME_UNKNOWN", "repository name not known to registry")
        name, kind, ref = m.group("name"), m.group("kind"), m.group("ref")
        with self.lock:
            if name not in self._catalog():
                return self._error(h, 404, "NAME_UNKNOWN", "repository name not known to registry")
            manifests, tags = self._digests(name)
            head = {"registry": self.login_server, "imageName": name}
            if kind is None and method == "GET":
                times = [self._created[(name, d)] for d in manifests] or [self.now()]
                return self._reply(
                    h,
                    200,
                    {
                        **head,
                        "createdTime": _rfc3339(min(times)),
                        "lastUpdateTime": _rfc3339(max(times)),
                        "manifestCount": len(manifests),
                        "tagCount": len(tags),
                        "changeableAttributes": {
                            "deleteEnabled": True,
                            "writeEnabled": True,
                            "readEnabled": True,
                            "listEnabled": True,
                            "teleportEnabled": False,
                        },
                    },
                )
            if kind == "_manifests" and ref is None and method == "GET":
                items = sorted(manifests.values(), key=lambda x: self._created[(name, x.digest)])
                listed = [self._manifest_body(name, x, tags) for x in items]
                return self._reply(h, 200, {**head, "manifests": listed})
            if kind == "_manifests" and ref is not None:
                found = manifests.get(ref)
                if found is None:
                    return self._error(h, 404, "MANIFEST_UNKNOWN", "manifest unknown")
                if method == "PATCH":
                    change = json.loads(body or b"{}")
                    attrs = self._attrs_of(name, ref)
                    for key in ("deleteEnabled", "writeEnabled", "readEnabled", "listEnabled"):
                        if isinstance(change.get(key), bool):
                            attrs[key] = change[key]
                    state = change.get("quarantineState")
                    if isinstance(state, str):
                        details = change.get("quarantineDetails")
                        self._quarantine[(name, ref)] = (
                            state,
                            details if isinstance(details, str) else None,
                        )
                elif method != "GET":
                    return self._error(h, 405, "UNSUPPORTED", "method not allowed")
                return self._reply(
                    h, 200, {**head, "manifest": self._manifest_body(name, found, tags)}
                )
            if kind == "_tags" and ref is None and method == "GET":
                wanted = query.get("digest")
                digest = wanted[0] if wanted else None
                tag_items = [
                    self._tag_body(name, t, d)
                    for t, d in sorted(tags.items())
                    if digest is None or d == digest
                ]
                return self._reply(h, 200, {**head, "tags": tag_items})
            if kind == "_tags" and ref is not None:
                if ref not in tags:
                    return self._error(
                        h, 404, "TAG_UNKNOWN", f"the specified tag does not exist: {ref}"
                    )
                if method == "DELETE":
                    self._hidden.add((name, ref))
                    return self._reply(h, 202)
                if method in ("GET", "PATCH"):
                    return self._reply(
                        h, 200, {**head, "tag": self._tag_body(name, ref, tags[ref])}
                    )
        return self._error(h, 405, "UNSUPPORTED", "method not allowed")

    # -- data plane ------------------------------------------------------------------------

    def _v2(self, h: BaseHTTPRequestHandler, path: str, authorization: str | None) -> None:
        method = h.command
        body = self._body(h)
        path = unquote(path)  # ACR's client encodes `/` in names and `:` in digests
        m = _V2_MANIFEST.match(path)
        t = _V2_TAGS.match(path)

        def seen(status: int) -> None:
            with self.lock:
                self.v2_requests.append(V2Seen(method, path, status, authorization))

        if m is not None:
            name, ref = m.group("name"), m.group("ref")
            is_tag = not ref.startswith("sha256:")
            with self.lock:
                if is_tag and method in ("GET", "HEAD", "DELETE") and (name, ref) in self._hidden:
                    seen(404)
                    return self._error(
                        h, 404, "MANIFEST_UNKNOWN", f"manifest tagged by {ref!r} is not found"
                    )
                digest: str | None = ref if not is_tag else None
                if is_tag:
                    st, headers, _ = self._upstream(
                        "HEAD", f"/v2/{name}/manifests/{ref}", headers={"Accept": _ACCEPT}
                    )
                    digest = headers.get("docker-content-digest") if st == 200 else None
                attrs = self._attrs.get((name, digest)) if digest else None
                held = (
                    self.quarantine_policy
                    and digest is not None
                    and method in ("GET", "HEAD")
                    and self._quarantine.get((name, digest), ("Quarantined", None))[0] != "Passed"
                    and (authorization or "").removeprefix("Bearer ") not in self._reader_access
                )
                if held:
                    seen(404 if is_tag else 403)
                    if is_tag:
                        return self._error(
                            h, 404, "MANIFEST_UNKNOWN", f"manifest tagged by {ref!r} is not found"
                        )
                    return self._error(h, 403, "DENIED", _DENIED)
                if attrs is not None:
                    locked = (
                        (method in ("GET", "HEAD") and not attrs["readEnabled"])
                        or (method == "PUT" and not attrs["writeEnabled"])
                        or (method == "DELETE" and not attrs["deleteEnabled"])
                    )
                    if locked:
                        seen(403)
                        return self._error(h, 403, "DENIED", _DENIED)
                if method == "DELETE" and is_tag:
                    if digest is None:
                        seen(404)
                        return self._error(h, 404, "MANIFEST_UNKNOWN", "manifest unknown")
                    self._hidden.add((name, ref))
                    seen(202)
                    return self._reply(h, 202)
        if t is not None and method == "GET":
            with self.lock:
                tags = self._tags(t.group("name"))
            seen(200)
            return self._reply(h, 200, {"name": t.group("name"), "tags": sorted(tags)})
        headers = {
            k: v
            for k, v in h.headers.items()
            if k.lower() not in _HOP and k.lower() != "authorization"
        }
        headers["Host"] = self.upstream
        status, answer, data = self._upstream(method, h.path, body, headers)
        if m is not None and method == "PUT" and status == 201:
            self._pushed(
                m.group("name"), m.group("ref"), answer.get("docker-content-digest", ""), body
            )
        if m is not None and method == "DELETE" and status == 202:
            with self.lock:
                self._cache.pop((m.group("name"), m.group("ref")), None)
        seen(status)
        out = {k: v for k, v in answer.items() if k not in _HOP and k != "content-length"}
        if "location" in out and out["location"].startswith(f"http://{self.upstream}"):
            out["location"] = out["location"].replace(f"http://{self.upstream}", self.url, 1)
        h.send_response(status)
        for key, value in out.items():
            h.send_header(key, value)
        h.send_header(
            "Content-Length",
            str(len(data) if method != "HEAD" else answer.get("content-length", "0")),
        )
        h.end_headers()
        if method != "HEAD" and data:
            h.wfile.write(data)

    def _pushed(self, name: str, ref: str, digest: str, raw: bytes) -> None:
        digest = digest or "sha256:" + hashlib.sha256(raw).hexdigest()
        now = self.now()
        with self.lock:
            self._created.setdefault((name, digest), now)
            self._updated[(name, digest)] = now
            if not ref.startswith("sha256:"):
                self._hidden.discard((name, ref))
                created = self._tag_times.get((name, ref), (now, now))[0]
                self._tag_times[(name, ref)] = (created, now)
