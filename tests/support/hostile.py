"""Hostile registries for tests: loopback HTTP/1.1 servers that redirect, challenge, drip,
nest and inflate, and record every request they get (headers, body size and hash).

    with FakeRegistry(users={"alice": "pw"}) as registry, HostileServer() as storage:
        digest = registry.add_blob(b"layer")
        registry.redirect(r"/blobs/", storage.url + "/s3/object?X-Amz-Signature=abc")
        storage.route("GET", r"/s3/", Reply(body=b"layer"))
        ...
        assert "authorization" not in storage.seen[0].headers

Bodies may be iterables (sent as they are produced, chunked unless `length` is given), so
a test can serve 100 MB without holding it; `drip` sends the status line, headers and body
one byte at a time. `stop()` (leaving the `with` block) ends every drip at once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, Self

from support.loopback import LoopbackServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
REPO = "team/app"
_KEEP = 1024 * 1024  # request body bytes kept for assertions (the rest is only hashed)


@dataclass(frozen=True)
class Seen:
    """One request as the server got it."""

    method: str
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes = b""
    """The first MiB of the body."""
    size: int = 0
    sha256: str = ""
    """`sha256:<hex>` of the whole body."""


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    length: int | None = None
    """Content-Length to announce for an iterable body (None: chunked)."""
    drip: float | None = None
    """Seconds between single bytes of the answer: the status line and headers too, or
    with `drip_body` only the body (the head goes at once)."""
    drip_body: bool = False


Answer = Callable[[Seen, "re.Match[str]"], Reply]


def chunks(total: int, size: int = 64 * 1024, fill: bytes = b" ") -> Iterator[bytes]:
    """`total` bytes of `fill`, `size` at a time, produced as they are sent."""
    block = (fill * size)[:size]
    sent = 0
    while sent < total:
        piece = block[: min(size, total - sent)]
        sent += len(piece)
        yield piece


def pattern_digest(total: int, size: int = 64 * 1024, fill: bytes = b" ") -> str:
    """The digest of what `chunks(total, size, fill)` produces."""
    hasher = hashlib.sha256()
    for piece in chunks(total, size, fill):
        hasher.update(piece)
    return f"sha256:{hasher.hexdigest()}"


class HostileServer:
    """A loopback server answering from routes: (method, path regex) → a Reply, or a
    function of (the request, the regex match) returning one. Unrouted: 404."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Reply | Answer]] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._server = LoopbackServer(_handler_for(self))

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def url(self) -> str:
        return self._server.url

    def route(self, method: str, pattern: str, answer: Reply | Answer) -> None:
        """Add a route; later routes win over earlier ones."""
        self.routes.insert(0, (method.upper(), re.compile(pattern), answer))

    def answer(self, request: Seen) -> Reply:
        for method, pattern, answer in list(self.routes):
            match = pattern.search(request.path)
            if match is not None and method in (request.method, "*"):
                return answer if isinstance(answer, Reply) else answer(request, match)
        return Reply(404, body=b'{"errors":[{"code":"NOT_FOUND"}]}')

    def record(self, request: Seen) -> None:
        with self._lock:
            self.seen.append(request)

    def requests(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [
                r
                for r in self.seen
                if (method is None or r.method == method)
                and (path is None or re.search(path, r.path))
            ]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return len(self.requests(method, path))

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _handler_for(server: HostileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> tuple[bytes, int, str]:
            hasher = hashlib.sha256()
            kept = bytearray()
            size = 0
            for piece in self._pieces():
                hasher.update(piece)
                size += len(piece)
                if len(kept) < _KEEP:
                    kept.extend(piece[: _KEEP - len(kept)])
            return bytes(kept), size, f"sha256:{hasher.hexdigest()}"

        def _pieces(self) -> Iterator[bytes]:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                while True:
                    line = self.rfile.readline()
                    n = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if n == 0:
                        self.rfile.readline()
                        return
                    yield self.rfile.read(n)
                    self.rfile.readline()
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                piece = self.rfile.read(min(left, 64 * 1024))
                if not piece:
                    return
                left -= len(piece)
                yield piece

        def _serve(self) -> None:
            body, size, digest = self._body()
            request = Seen(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                size=size,
                sha256=digest,
            )
            server.record(request)
            reply = server.answer(request)
            try:
                self._send(reply)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _send(self, reply: Reply) -> None:
            headers = dict(reply.headers)
            body = reply.body
            if isinstance(body, bytes):
                headers.setdefault("Content-Length", str(len(body)))
            elif reply.length is not None:
                headers.setdefault("Content-Length", str(reply.length))
            else:
                headers["Transfer-Encoding"] = "chunked"
            head = f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            if reply.drip is not None:
                self.close_connection = True
                data = head.encode() + _joined(body)
                if reply.drip_body:
                    self.wfile.write(head.encode())
                    self.wfile.flush()
                    data = _joined(body)
                for byte in data:
                    if server.stopping.wait(reply.drip):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                return
            self.wfile.write(head.encode())
            if self.command == "HEAD":
                return
            if isinstance(body, bytes):
                self.wfile.write(body)
                return
            self.close_connection = True  # a stream may be cut short by the client
            chunked = "Transfer-Encoding" in headers
            for piece in body:
                if server.stopping.is_set():
                    return
                if chunked:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def _joined(body: bytes | Iterable[bytes]) -> bytes:
    return body if isinstance(body, bytes) else b"".join(body)


def manifest_doc(doc: dict[str, Any]) -> tuple[bytes, str]:
    """Compact JSON for `doc` and its sha256 digest."""
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return raw, f"sha256:{hashlib.sha256(raw).hexdigest()}"


def descriptor(raw: bytes, digest: str, media_type: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": len(raw)}


class FakeRegistry(HostileServer):
    """Enough of the Distribution API to be read and written to: manifests by digest or tag
    (GET, HEAD, PUT) in each repository (`add_*` fill `REPO`), blobs by digest, uploads
    (POST, PUT: stored), cross-repository mounts (refused with an upload, so a copy
    streams), optional Basic or Bearer auth, and redirects."""

    def __init__(self, *, users: dict[str, str] | None = None, bearer: bool = False) -> None:
        super().__init__()
        self.users = users or {}
        self.bearer = bearer
        self.repos: dict[str, dict[str, tuple[bytes, str]]] = {REPO: {}}
        self.tags: dict[str, str] = {}
        """The tags of `REPO`."""
        self.blobs: dict[str, bytes] = {}
        self.uploads = 0
        self.token = "registry-own-token"
        self.route("GET", r"^/v2/$", Reply(200, body=b"{}"))
        self.route("*", r"^/v2/(.+)/manifests/([^/?]+)$", self._manifest)
        self.route("*", r"^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$", self._blob)
        self.route("POST", r"^/v2/(.+)/blobs/uploads/", self._start_upload)
        self.route("PUT", r"^/upload/(\d+)\?digest=(sha256%3A|sha256:)([0-9a-f]{64})", self._put)
        self.route("DELETE", r"^/upload/", Reply(204))
        self.route("GET", r"^/token", self._token)
        self.route("GET", r"^/v2/(.+)/tags/list", self._tag_list)

    # -- content -------------------------------------------------------------------------

    @property
    def manifests(self) -> dict[str, tuple[bytes, str]]:
        """The manifests of `REPO` by digest."""
        return self.repos[REPO]

    def add_manifest(self, raw: bytes, media_type: str, tag: str | None = None) -> str:
        digest = f"sha256:{hashlib.sha256(raw).hexdigest()}"
        self.manifests[digest] = (raw, media_type)
        if tag is not None:
            self.tags[tag] = digest
        return digest

    def add_doc(self, doc: dict[str, Any], tag: str | None = None) -> str:
        raw, _ = manifest_doc(doc)
        return self.add_manifest(raw, str(doc["mediaType"]), tag)

    def add_blob(self, data: bytes) -> str:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        self.blobs[digest] = data
        return digest

    def redirect(self, pattern: str, location: str, method: str = "GET") -> None:
        """Answer `method` requests matching `pattern` with 307 to `location`."""
        self.route(method, pattern, Reply(307, headers={"Location": location}))

    # -- answers -------------------------------------------------------------------------

    def answer(self, request: Seen) -> Reply:
        if request.path.startswith(("/v2/", "/upload/")) and not self._authorised(request):
            if self.bearer:
                realm = f'Bearer realm="{self.url}/token",service="fake"'
            else:
                realm = 'Basic realm="fake"'
            return Reply(401, headers={"WWW-Authenticate": realm}, body=b"{}")
        return super().answer(request)

    def _authorised(self, request: Seen) -> bool:
        if not self.users:
            return True
        given = request.headers.get("authorization", "")
        if self.bearer:
            return given == f"Bearer {self.token}"
        return any(
            given == "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()
            for u, p in self.users.items()
        )

    def _token(self, request: Seen, match: re.Match[str]) -> Reply:
        basic = request.headers.get("authorization", "")
        if not any(
            basic == "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()
            for u, p in self.users.items()
        ):
            return Reply(401, body=b"{}")
        return Reply(200, body=json.dumps({"token": self.token}).encode())

    def _tag_list(self, request: Seen, match: re.Match[str]) -> Reply:
        body = json.dumps({"name": match.group(1), "tags": sorted(self.tags)}).encode()
        return Reply(200, headers={"Content-Type": "application/json"}, body=body)

    def _manifest(self, request: Seen, match: re.Match[str]) -> Reply:
        stored = self.repos.setdefault(match.group(1), {})
        reference = match.group(2)
        digest = self.tags.get(reference, reference) if match.group(1) == REPO else reference
        if request.method == "PUT":
            stored[digest] = (request.body, request.headers.get("content-type", ""))
            return Reply(201, headers={"Docker-Content-Digest": request.sha256})
        if digest not in stored or request.method not in ("GET", "HEAD"):
            return Reply(404, body=b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
        raw, media_type = stored[digest]
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(raw))
            return Reply(200, headers=headers)
        return Reply(200, headers=headers, body=raw)

    def _blob(self, request: Seen, match: re.Match[str]) -> Reply:
        data = self.blobs.get(match.group(2))
        if data is None:
            return Reply(404, body=b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
        if request.method == "HEAD":
            return Reply(200, headers={"Content-Length": str(len(data))})
        return Reply(200, headers={"Content-Type": "application/octet-stream"}, body=data)

    def _start_upload(self, request: Seen, match: re.Match[str]) -> Reply:
        self.uploads += 1
        return Reply(202, headers={"Location": f"/upload/{self.uploads}"})

    def _put(self, request: Seen, match: re.Match[str]) -> Reply:
        digest = f"sha256:{match.group(3)}"
        if request.sha256 != digest:
            return Reply(400, body=b'{"errors":[{"code":"DIGEST_INVALID"}]}')
        if request.size <= _KEEP:
            self.blobs[digest] = request.body
        return Reply(201, headers={"Docker-Content-Digest": digest})


def image_manifest(config: str, config_size: int, note: str = "") -> dict[str, Any]:
    """An OCI image manifest with no layers (distinct per `note`)."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": config_size},
        "layers": [],
    }
    if note:
        doc["annotations"] = {"note": note}
    return doc


def index_doc(children: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}


def deep_chain(
    depth: int, config: tuple[str, int], *, claim: str | None = None
) -> list[tuple[bytes, str, str]]:
    """An image and `depth` indexes, each listing the one before: [(raw, media type,
    digest)], the image first, the top index last. `claim`: the media type each index's
    descriptor of its child says (a lie, when it is not the child's)."""
    raw, digest = manifest_doc(image_manifest(*config))
    out = [(raw, OCI_MANIFEST, digest)]
    for _ in range(depth):
        below = out[-1]
        entry = descriptor(below[0], below[2], claim or below[1])
        raw, digest = manifest_doc(index_doc([entry]))
        out.append((raw, OCI_INDEX, digest))
    return out


def wide_index(
    width: int, config: tuple[str, int], *, distinct: bool = True
) -> tuple[list[tuple[bytes, str]], tuple[bytes, str]]:
    """`width` children (distinct images, or one image listed `width` times) and the index
    over them: ([(raw, digest)] of the distinct children, (raw, digest) of the index)."""
    kids = [
        manifest_doc(image_manifest(*config, note=str(i))) for i in range(width if distinct else 1)
    ]
    entries = [descriptor(raw, digest, OCI_MANIFEST) for raw, digest in kids]
    if not distinct:
        entries = entries * width
    return kids, manifest_doc(index_doc(entries))
