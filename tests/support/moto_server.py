"""moto in server mode on loopback, and a proxy that gives it ECR's real paging and batch limits.

    from support import moto_server as support     # tests/ is on sys.path (tests/conftest.py)
    moto_server, moto = support.moto_server, support.moto  # register the fixtures

    def test_something(moto: MotoServer) -> None:
        ecr = moto.client("ecr")          # boto3 over the wire to 127.0.0.1:<free port>

`moto_server` (session scope) starts one `ThreadedMotoServer` per test process on a free
port of 127.0.0.1 and stops it at the end. `moto` (function scope) resets moto's state and
sets dummy AWS credentials in the environment for the test.

moto ignores `maxResults`/`nextToken` and ECR's 100-id batch limits. `EcrLimitsProxy`
sits between boto3 and moto and applies them as ECR documents them: it strips paging
parameters before forwarding, slices the list in moto's answer into pages with an opaque
`nextToken`, and answers oversized batches with ECR's `ValidationException`. Everything
else passes through unchanged, so boto3 still speaks the real wire protocol end to end.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from support.loopback import LoopbackServer

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account for any access key
REGISTRY_HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}

_SESSION_LOCK = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()  # service models load once per test process


_ECR_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."


@dataclass(frozen=True)
class _Paged:
    keys: tuple[tuple[str, ...], ...]
    """Paths (in the response) of the lists to page over, sliced together."""
    default: int
    maximum: int


# Operation → how ECR pages it (API reference: maxResults ranges and defaults).
_ECR_PAGED = {
    "DescribeImages": _Paged((("imageDetails",),), 100, 1000),
    "DescribeRepositories": _Paged((("repositories",),), 100, 1000),
    "ListImages": _Paged((("imageIds",),), 100, 1000),
    "DescribeImageScanFindings": _Paged(
        (("imageScanFindings", "findings"), ("imageScanFindings", "enhancedFindings")), 100, 1000
    ),
}
# Operation → (request member, ECR's limit on its length).
_ECR_BATCH_LIMITS = {
    "BatchDeleteImage": ("imageIds", 100),
    "BatchGetImage": ("imageIds", 100),
    "BatchCheckLayerAvailability": ("layerDigests", 100),
    "DescribeImages": ("imageIds", 100),
}
_INSPECTOR_LIST_FINDINGS = _Paged((("findings",),), 50, 100)


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _offset(token: str | None) -> int:
    if not token:
        return 0
    kind, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
    if kind != "offset" or not number.isdigit():
        raise ValueError(f"bad nextToken {token!r}")
    return int(number)


def _dig(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _report_untagged_deletes(request: Mapping[str, Any], payload: bytes) -> bytes:
    """moto deletes an untagged image asked for by digest but reports it nowhere (it lists
    one entry per tag); ECR lists every deleted image in `imageIds`."""
    doc = json.loads(payload)
    seen = {i.get("imageDigest") for i in doc.get("imageIds") or []}
    seen |= {(f.get("imageId") or {}).get("imageDigest") for f in doc.get("failures") or []}
    for image_id in request.get("imageIds") or []:
        digest = image_id.get("imageDigest")
        if digest and "imageTag" not in image_id and digest not in seen:
            doc.setdefault("imageIds", []).append({"imageDigest": digest})
    return json.dumps(doc).encode()


@dataclass
class ProxyCall:
    """One request the proxy saw: operation name and decoded JSON body."""

    operation: str
    body: dict[str, Any]
    status: int = 200


class EcrLimitsProxy:
    """Loopback HTTP proxy in front of moto that enforces ECR's paging and batch limits."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.calls: list[ProxyCall] = []
        self.rewrite: dict[str, Callable[[dict[str, Any]], None]] = {}
        """Operation → function that edits moto's JSON answer in place (odd server data)."""
        self._http = httpx.Client(timeout=30.0)
        self._server = LoopbackServer(self._handler_class())

    @property
    def endpoint_url(self) -> str:
        return self._server.url

    def start(self) -> EcrLimitsProxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._http.close()

    def operations(self, name: str) -> list[ProxyCall]:
        return [c for c in self.calls if c.operation == name]

    # -- request handling ---------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return  # keep pytest output clean

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = proxy.handle(
                    "POST", self.path, dict(self.headers.items()), body
                )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST
            do_DELETE = do_POST
            do_PUT = do_POST

        return Handler

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        target = headers.get("X-Amz-Target") or headers.get("x-amz-target") or ""
        if target.startswith(_ECR_TARGET_PREFIX):
            return self._ecr(target.removeprefix(_ECR_TARGET_PREFIX), method, path, headers, body)
        if method == "POST" and path.split("?")[0] == "/findings/list":
            return self._paged(
                "Inspector2.ListFindings",
                _INSPECTOR_LIST_FINDINGS,
                method,
                path,
                headers,
                body,
                rest=True,
            )
        return self._forward(method, path, headers, body)

    def _forward(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        skip = {"host", "content-length", "connection", "accept-encoding"}
        response = self._http.request(
            method,
            self.upstream + path,
            headers={k: v for k, v in headers.items() if k.lower() not in skip},
            content=body,
        )
        keep = {
            k: v
            for k, v in response.headers.items()
            if k.lower() in {"content-type", "x-amzn-requestid", "x-amzn-errortype"}
        }
        return response.status_code, keep, response.content

    def _error(
        self, operation: str, message: str, rest: bool = False
    ) -> tuple[int, dict[str, str], bytes]:
        self.calls.append(ProxyCall(operation, {}, 400))
        payload = json.dumps({"__type": "ValidationException", "message": message}).encode()
        headers = {
            "Content-Type": "application/x-amz-json-1.1",
            "x-amzn-ErrorType": "ValidationException",
        }
        if rest:
            headers["Content-Type"] = "application/json"
        return 400, headers, payload

    def _ecr(
        self, operation: str, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        request = json.loads(body or b"{}")
        limit = _ECR_BATCH_LIMITS.get(operation)
        if limit is not None:
            member, most = limit
            items = request.get(member) or []
            if len(items) > most:
                return self._error(
                    operation,
                    f"1 validation error detected: Value at '{member}' failed to satisfy "
                    f"constraint: Member must have length less than or equal to {most}",
                )
        paged = _ECR_PAGED.get(operation)
        if paged is not None and not request.get("imageIds"):
            return self._paged(operation, paged, method, path, headers, body)
        self.calls.append(ProxyCall(operation, request))
        status, out_headers, payload = self._forward(method, path, headers, body)
        if operation == "BatchDeleteImage" and status == 200:
            payload = _report_untagged_deletes(request, payload)
        edit = self.rewrite.get(operation)
        if edit is None or status != 200:
            return status, out_headers, payload
        doc = json.loads(payload)
        edit(doc)
        return status, out_headers, json.dumps(doc).encode()

    def _paged(
        self,
        operation: str,
        paged: _Paged,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        *,
        rest: bool = False,
    ) -> tuple[int, dict[str, str], bytes]:
        request = json.loads(body or b"{}")
        size = request.pop("maxResults", None)
        token = request.pop("nextToken", None)
        if size is None:
            size = paged.default
        if not isinstance(size, int) or not 1 <= size <= paged.maximum:
            return self._error(
                operation,
                f"1 validation error detected: Value '{size}' at 'maxResults' failed to satisfy "
                f"constraint: Member must have value less than or equal to {paged.maximum}",
                rest,
            )
        try:
            start = _offset(token)
        except ValueError as exc:
            return self._error(operation, str(exc), rest)
        self.calls.append(ProxyCall(operation, {**request, "maxResults": size, "nextToken": token}))
        status, out_headers, payload = self._forward(
            method, path, headers, json.dumps(request).encode()
        )
        if status != 200:
            return status, out_headers, payload
        doc = json.loads(payload)
        edit = self.rewrite.get(operation)
        if edit is not None:
            edit(doc)
        more = False
        for key_path in paged.keys:
            items = _dig(doc, key_path)
            if not isinstance(items, list):
                continue
            parent = _dig(doc, key_path[:-1]) if len(key_path) > 1 else doc
            parent[key_path[-1]] = items[start : start + size]
            more = more or len(items) > start + size
        doc.pop("nextToken", None)
        if more:
            doc["nextToken"] = _token(start + size)
        return status, out_headers, json.dumps(doc).encode()


@dataclass
class MotoServer:
    """A running moto server: endpoint, client factory and moto's configuration API."""

    endpoint_url: str
    region: str = REGION
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30.0))

    def client(self, service: str, *, endpoint_url: str | None = None) -> Any:
        """A boto3 client over the wire to moto (or to `endpoint_url`, e.g. a proxy)."""
        with _SESSION_LOCK:
            return _session().client(
                service,
                region_name=self.region,
                endpoint_url=endpoint_url or self.endpoint_url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                aws_session_token="testing",
                config=Config(retries={"mode": "standard", "max_attempts": 2}),
            )

    def reset(self) -> None:
        self._http.post(f"{self.endpoint_url}/moto-api/reset").raise_for_status()

    def set_ecr_scan_findings(self, *results: Mapping[str, Any]) -> None:
        """Queue describe_image_scan_findings answers (moto matches repository + image id)."""
        response = self._http.post(
            f"{self.endpoint_url}/moto-api/static/ecr/scan-finding-results",
            json={"results": list(results), "region": self.region},
        )
        response.raise_for_status()

    def set_inspector2_findings(self, *results: list[Mapping[str, Any]]) -> None:
        """Queue inspector2 list_findings answers (one list of findings per distinct query)."""
        response = self._http.post(
            f"{self.endpoint_url}/moto-api/static/inspector2/findings-results",
            json={"results": list(results), "region": self.region, "account_id": ACCOUNT},
        )
        response.raise_for_status()

    def limits_proxy(self) -> EcrLimitsProxy:
        return EcrLimitsProxy(self.endpoint_url).start()

    def close(self) -> None:
        self._http.close()


_DYNAMODB_REQUEST = threading.Lock()


def _dynamodb_requests_one_at_a_time() -> None:
    """DynamoDB applies each request atomically (a conditional put checks and writes as
    one); moto's threaded server runs each request's Python check-then-write with no lock,
    so two racing conditional writes could both pass there, never on DynamoDB. Serialising
    moto's DynamoDB requests (in this process, where the server runs) restores what the
    ledger's race tests rely on; requests to every other service are untouched."""
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "_one_at_a_time", False):
        return
    unlocked = DynamoHandler.call_action

    @functools.wraps(unlocked)
    def call_action(self: DynamoHandler) -> Any:
        with _DYNAMODB_REQUEST:
            return unlocked(self)

    call_action._one_at_a_time = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server per test process on a free loopback port; stopped at the end."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    _dynamodb_requests_one_at_a_time()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    handle = MotoServer(endpoint_url=f"http://{host}:{port}")
    try:
        yield handle
    finally:
        handle.close()
        server.stop()


@pytest.fixture
def moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """Fresh moto state and dummy AWS credentials in the environment for one test."""
    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/regwarden-test-aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/regwarden-test-aws-creds")
    moto_server.reset()
    return moto_server


@pytest.fixture
def ecr_proxy(moto: MotoServer) -> Iterator[EcrLimitsProxy]:
    """An `EcrLimitsProxy` in front of the (freshly reset) moto server."""
    proxy = moto.limits_proxy()
    try:
        yield proxy
    finally:
        proxy.stop()


# -- helpers for ECR tests ------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def sha256(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def oci_manifest(
    seed: str,
    *,
    config_media_type: str = OCI_CONFIG,
    layers: int = 1,
    subject: str | None = None,
) -> tuple[bytes, str]:
    """A small, valid OCI image manifest (blobs named by seeded digests); (raw, digest)."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_media_type, "digest": sha256(f"{seed}/config"), "size": 7},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256(f"{seed}/layer/{n}"),
                "size": 1000 + n,
            }
            for n in range(layers)
        ],
    }
    if subject is not None:
        doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 100}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return raw, sha256(raw)


def put_manifest(
    ecr: Any,
    repository: str,
    raw: bytes,
    *,
    tag: str | None = None,
    media_type: str | None = None,
    digest: str | None = None,
) -> str:
    """put_image as a pusher would (ECR computes the digest from the bytes; moto needs it
    passed, else it invents one from the layer digests)."""
    params: dict[str, Any] = {
        "repositoryName": repository,
        "imageManifest": raw.decode(),
        "imageManifestMediaType": media_type or json.loads(raw)["mediaType"],
        "imageDigest": digest or sha256(raw),
    }
    if tag is not None:
        params["imageTag"] = tag
    response = ecr.put_image(**params)
    return str(response["image"]["imageId"]["imageDigest"])


@dataclass
class CallLog:
    """Client-side record of every API call (botocore `before-call` hook): the operation
    name and the request parameters as sent on the wire."""

    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, model: Any, params: Mapping[str, Any], **_: Any) -> None:
        body = params.get("body") or b"{}"
        decoded = json.loads(body) if isinstance(body, bytes | str) and body else {}
        self.seen.append((str(model.name), decoded))

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.seen if name == operation]

    def count(self, operation: str) -> int:
        return len(self.of(operation))


def watch(client: Any, service: str = "ecr") -> CallLog:
    """Count `client`'s API calls from now on."""
    log = CallLog()
    client.meta.events.register(f"before-call.{service}.*", log)
    return log
