"""A loopback reverse proxy in front of a real registry, adding what distribution 2.8 lacks.

- pages `GET /v2/<repo>/tags/list` with `n`/`last` and `Link` headers (2.8 does not);
- injects faults for the next N matching requests: a status (429 with `Retry-After`,
  5xx), a connection reset, or latency; can tamper with response bodies;
- emulates OCI 1.1 tag deletion (`DELETE /v2/<repo>/manifests/<tag>`) by hiding the tag;
- opt-in (`emulate_referrers=True`): emulates the OCI 1.1 referrers API, standing in for
  a registry that has it (Harbor >= 2.8, zot), which distribution 2.8 cannot be. It answers
  `GET /v2/<repo>/referrers/<digest>` (with the `artifactType` filter) from the
  `sha256-<hex>` tag-schema index stored in the real registry, and hides those tag-schema
  tags from `tags/list`: to a client the registry has the API and no tag schema. Write
  referrers straight to the registry (or through the proxy: the client still keeps the
  index, since the proxy sends no `OCI-Subject`); the index manifests stay readable by tag;
- records every request (method, target, status, what it did) so tests can count retries.

    with RegistryProxy(registry.host) as proxy:
        proxy.inject(429, count=1, path=r"/manifests/", headers={"Retry-After": "1"})
        RegistryClient(proxy.host).get_manifest(...)
        assert proxy.count(path=r"/manifests/") == 2
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from urllib.parse import parse_qs, quote

import httpx

from support.loopback import LoopbackServer

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "host",
    }
)
_ALL_MANIFESTS = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
_TAGS = re.compile(r"^/v2/(?P<repo>.+)/tags/list$")
_MANIFEST = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")
_REFERRERS = re.compile(r"^/v2/(?P<repo>.+)/referrers/(?P<digest>[^/]+)$")
_DIGEST = re.compile(r"(sha256|sha512):([0-9a-f]{64}|[0-9a-f]{128})")
_TAG_SCHEMA = re.compile(r"(sha256|sha512)-([0-9a-f]{64})")
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass
class Rule:
    """A fault to apply to matching requests; `remaining=None` means every time."""

    kind: str  # "status" | "reset" | "delay" | "tamper"
    method: str | None
    pattern: re.Pattern[str] | None
    remaining: int | None
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    tamper: Callable[[bytes], bytes] | None = None

    def matches(self, method: str, target: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.pattern is None or self.pattern.search(target) is not None


@dataclass(frozen=True)
class Record:
    """One request the proxy saw and what it did with it."""

    method: str
    path: str
    query: str
    status: int | None  # None for a reset connection
    action: str  # forwarded | injected | reset | paged | tag-deleted | hidden | referrers
    at: float
    user_agent: str | None = None

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


class RegistryProxy:
    """Threaded loopback HTTP/1.1 proxy to `upstream` (`host:port`, plain HTTP)."""

    def __init__(
        self,
        upstream: str,
        *,
        page_tags: bool = True,
        emulate_tag_delete: bool = True,
        emulate_referrers: bool = False,
    ) -> None:
        self.upstream = upstream
        self.page_tags = page_tags
        self.emulate_tag_delete = emulate_tag_delete
        self.emulate_referrers = emulate_referrers
        """Answer the referrers API from the tag schema and hide its tags (assignable)."""
        self.records: list[Record] = []
        self._rules: list[Rule] = []
        self._hidden: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._server: LoopbackServer | None = None
        self._client = httpx.Client(
            base_url=f"http://{upstream}",
            timeout=30.0,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=128, max_keepalive_connections=128),
        )

    # -- configuration ---------------------------------------------------------------------

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    @staticmethod
    def _compile(path: str | None) -> re.Pattern[str] | None:
        return re.compile(path) if path is not None else None

    def inject(
        self,
        status: int,
        *,
        count: int | None = 1,
        method: str | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Rule:
        """Answer the next `count` matching requests with `status` (and headers) instead."""
        if body is None:
            body = json.dumps(
                {"errors": [{"code": "INJECTED", "message": f"injected {status} by test proxy"}]}
            ).encode()
        return self._add(
            Rule(
                "status",
                method,
                self._compile(path),
                count,
                status=status,
                headers=dict(headers or {}),
                body=body,
            )
        )

    def reset(
        self, *, count: int | None = 1, method: str | None = None, path: str | None = None
    ) -> Rule:
        """Reset the TCP connection (RST) instead of answering the next `count` matches."""
        return self._add(Rule("reset", method, self._compile(path), count))

    def delay(
        self,
        seconds: float,
        *,
        count: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> Rule:
        """Add latency before forwarding matching requests."""
        return self._add(Rule("delay", method, self._compile(path), count, delay=seconds))

    def tamper(
        self,
        fn: Callable[[bytes], bytes],
        *,
        count: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> Rule:
        """Rewrite the upstream response body of matching requests with `fn`."""
        return self._add(Rule("tamper", method, self._compile(path), count, tamper=fn))

    def clear(self) -> None:
        """Drop all rules and records (hidden tags stay hidden)."""
        with self._lock:
            self._rules.clear()
            self.records.clear()

    # -- observation -------------------------------------------------------------------------

    def count(
        self,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        action: str | None = None,
    ) -> int:
        return len(self.matching(method=method, path=path, status=status, action=action))

    def matching(
        self,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        action: str | None = None,
    ) -> list[Record]:
        pattern = self._compile(path)
        with self._lock:
            records = list(self.records)
        return [
            r
            for r in records
            if (method is None or r.method == method)
            and (pattern is None or pattern.search(r.target))
            and (status is None or r.status == status)
            and (action is None or r.action == action)
        ]

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError("proxy is not running")
        return self._server.host

    def start(self) -> RegistryProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = LoopbackServer(Handler).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._client.close()

    def __enter__(self) -> RegistryProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals used by the handler -------------------------------------------------------

    def _take(self, method: str, target: str) -> list[Rule]:
        """Matching rules, consuming one use of each counted rule.

        At most one answering rule (status or reset) applies per request, the oldest first;
        delays and tampering stack.
        """
        taken: list[Rule] = []
        answered = False
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, target):
                    continue
                if rule.kind in ("status", "reset"):
                    if answered:
                        continue
                    answered = True
                if rule.remaining is not None:
                    rule.remaining -= 1
                taken.append(rule)
        return taken

    def _record(
        self,
        method: str,
        path: str,
        query: str,
        status: int | None,
        action: str,
        user_agent: str | None = None,
    ) -> None:
        record = Record(method, path, query, status, action, time.monotonic(), user_agent)
        with self._lock:
            self.records.append(record)


class _Handler(BaseHTTPRequestHandler):
    owner: RegistryProxy
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_GET
    do_PUT = do_GET
    do_POST = do_GET
    do_PATCH = do_GET
    do_DELETE = do_GET

    def _log(self, method: str, path: str, query: str, status: int | None, action: str) -> None:
        self.owner._record(method, path, query, status, action, self.headers.get("User-Agent"))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline().split(b";", 1)[0].strip()
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        head_length: str | None = None,
    ) -> None:
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        if self.command == "HEAD":
            if head_length is not None:
                self.send_header("Content-Length", head_length)
            else:
                self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        self._send(status, [("Content-Type", "application/json")], body)

    def _handle(self) -> None:
        owner = self.owner
        method = self.command
        path, _, query = self.path.partition("?")
        body = self._read_body()
        rules = owner._take(method, self.path)
        for rule in rules:
            if rule.kind == "delay":
                time.sleep(rule.delay)
        for rule in rules:
            if rule.kind == "reset":
                self._log(method, path, query, None, "reset")
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()
                return
            if rule.kind == "status":
                self._log(method, path, query, rule.status, "injected")
                headers = [("Content-Type", "application/json"), *rule.headers.items()]
                self._send(rule.status, headers, rule.body)
                return
        tampers = [r.tamper for r in rules if r.kind == "tamper" and r.tamper is not None]

        referrers = _REFERRERS.match(path)
        if referrers and method == "GET" and owner.emulate_referrers:
            self._referrers(referrers.group("repo"), referrers.group("digest"), path, query)
            return
        tags = _TAGS.match(path)
        if tags and method == "GET" and (owner.page_tags or owner.emulate_referrers):
            self._paged_tags(tags.group("repo"), path, query)
            return
        manifest = _MANIFEST.match(path)
        if manifest and owner.emulate_tag_delete and ":" not in manifest.group("ref"):
            key = (manifest.group("repo"), manifest.group("ref"))
            if method == "DELETE":
                self._delete_tag(key, path, query)
                return
            if method in ("GET", "HEAD") and key in owner._hidden:
                self._log(method, path, query, 404, "hidden")
                self._error(404, "MANIFEST_UNKNOWN", f"manifest tagged {key[1]!r} is not known")
                return
            if method == "PUT":
                with owner._lock:
                    owner._hidden.discard(key)
        self._forward(method, path, query, body, tampers)

    def _upstream(
        self, method: str, target: str, body: bytes, extra: dict[str, str] | None = None
    ) -> httpx.Response:
        skip = _HOP_BY_HOP | {k.lower() for k in extra or {}}
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in skip]
        headers.append(("Host", self.headers.get("Host", self.owner.upstream)))
        headers.extend((extra or {}).items())
        return self.owner._client.request(method, target, headers=headers, content=body or None)

    def _forward(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        tampers: list[Callable[[bytes], bytes]],
    ) -> None:
        try:
            response = self._upstream(method, self.path, body)
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: proxy stopping
            self._log(method, path, query, 502, "forwarded")
            self._error(502, "UPSTREAM", str(exc))
            return
        content = response.content
        for fn in tampers:
            content = fn(content)
        headers = [
            (k, v) for k, v in response.headers.multi_items() if k.lower() not in _HOP_BY_HOP
        ]
        self._log(method, path, query, response.status_code, "forwarded")
        self._send(
            response.status_code,
            headers,
            content,
            head_length=response.headers.get("content-length") if method == "HEAD" else None,
        )

    def _paged_tags(self, repo: str, path: str, query: str) -> None:
        owner = self.owner
        response = self._upstream("GET", path, b"")
        if response.status_code != 200:
            self._log("GET", path, query, response.status_code, "forwarded")
            headers = [
                (k, v) for k, v in response.headers.multi_items() if k.lower() not in _HOP_BY_HOP
            ]
            self._send(response.status_code, headers, response.content)
            return
        doc = response.json()
        with owner._lock:
            hidden = {t for r, t in owner._hidden if r == repo}
        tags = sorted(t for t in doc.get("tags") or [] if t not in hidden)
        if owner.emulate_referrers:
            tags = [t for t in tags if not _TAG_SCHEMA.fullmatch(t)]
        params = parse_qs(query)
        last = params.get("last", [None])[0]
        if last is not None:
            tags = [t for t in tags if t > last]
        headers = [("Content-Type", "application/json")]
        n_text = params.get("n", [None])[0]
        if n_text is not None and owner.page_tags:
            n = int(n_text)
            page, more = tags[:n], len(tags) > n
            if more and page:
                link = f"/v2/{repo}/tags/list?n={n}&last={quote(page[-1], safe='')}"
                headers.append(("Link", f'<{link}>; rel="next"'))
            tags = page
        self._log("GET", path, query, 200, "paged")
        self._send(200, headers, json.dumps({"name": repo, "tags": tags}).encode())

    def _delete_tag(self, key: tuple[str, str], path: str, query: str) -> None:
        owner = self.owner
        if key in owner._hidden:
            self._log("DELETE", path, query, 404, "tag-deleted")
            self._error(404, "MANIFEST_UNKNOWN", f"tag {key[1]!r} is not known")
            return
        probe = self._upstream("HEAD", path, b"", {"Accept": _ALL_MANIFESTS})
        if probe.status_code != 200:
            self._log("DELETE", path, query, probe.status_code, "tag-deleted")
            self._error(probe.status_code, "MANIFEST_UNKNOWN", f"tag {key[1]!r} is not known")
            return
        with owner._lock:
            owner._hidden.add(key)
        self._log("DELETE", path, query, 202, "tag-deleted")
        self._send(202, [], b"")

    def _exists(self, repo: str, digest: str) -> bool:
        head = self._upstream(
            "HEAD", f"/v2/{repo}/manifests/{digest}", b"", {"Accept": _ALL_MANIFESTS}
        )
        return head.status_code == 200

    def _referrers(self, repo: str, digest: str, path: str, query: str) -> None:
        """The referrers API over the tag schema: the `sha256-<hex>` index's entries (an
        empty index when there is none: the API never answers 404 for a digest), less entries
        whose manifest is gone (the tag schema keeps them; a registry's API would not)."""
        m = _DIGEST.fullmatch(digest)
        if m is None:
            self._log("GET", path, query, 400, "referrers")
            self._error(400, "DIGEST_INVALID", f"got digest {digest!r}, expected algorithm:hex")
            return
        tag = f"{m.group(1)}-{m.group(2)[:64]}"
        with self.owner._lock:
            hidden = (repo, tag) in self.owner._hidden
        manifests: list[dict[str, object]] = []
        if not hidden:
            response = self._upstream(
                "GET", f"/v2/{repo}/manifests/{tag}", b"", {"Accept": _OCI_INDEX}
            )
            if response.status_code == 200:
                listed = list(response.json().get("manifests") or [])
                # a registry's API lists the referrers it holds: drop deleted entries
                manifests = [d for d in listed if self._exists(repo, str(d.get("digest")))]
            elif response.status_code != 404:
                self._log("GET", path, query, response.status_code, "referrers")
                headers = [
                    (k, v)
                    for k, v in response.headers.multi_items()
                    if k.lower() not in _HOP_BY_HOP
                ]
                self._send(response.status_code, headers, response.content)
                return
        headers = [("Content-Type", _OCI_INDEX)]
        wanted = parse_qs(query).get("artifactType")
        if wanted:
            manifests = [d for d in manifests if d.get("artifactType") in wanted]
            headers.append(("OCI-Filters-Applied", "artifactType"))
        body = {"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": manifests}
        self._log("GET", path, query, 200, "referrers")
        self._send(200, headers, json.dumps(body).encode())
