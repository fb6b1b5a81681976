"""A small loopback fake of the Kubernetes API's list endpoints, for the inventory tests.

It serves the cluster-wide list endpoints regwarden reads (`/api/v1/pods`,
`/apis/apps/v1/{deployments,replicasets,statefulsets,daemonsets}`,
`/apis/batch/v1/{jobs,cronjobs}`) in the API server's shapes: a `<Kind>List` with
`metadata.resourceVersion` and, when a page is cut short, `metadata.continue`; `limit`
and `continue` query parameters; a Bearer token check answering 401 `Status` objects.
Items come from `tests/support/kube/<resource>.json` (recorded shapes of real objects).

    with FakeKube(token="t0k") as kube:
        kubeconfig = write_kubeconfig(tmp_path, {"prod": kube})
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from support.loopback import LoopbackServer

DATA = Path(__file__).parent / "kube"

RESOURCES: dict[str, tuple[str, str]] = {
    "/api/v1/pods": ("v1", "Pod"),
    "/apis/apps/v1/deployments": ("apps/v1", "Deployment"),
    "/apis/apps/v1/replicasets": ("apps/v1", "ReplicaSet"),
    "/apis/apps/v1/statefulsets": ("apps/v1", "StatefulSet"),
    "/apis/apps/v1/daemonsets": ("apps/v1", "DaemonSet"),
    "/apis/batch/v1/jobs": ("batch/v1", "Job"),
    "/apis/batch/v1/cronjobs": ("batch/v1", "CronJob"),
}


def load_items(resource: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads((DATA / f"{resource}.json").read_text())
    return items


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    authorization: str | None


@dataclass
class FakeKube:
    """The fake API server. `items` maps a resource name (`pods`) to its objects; `page`
    caps the items per answer (a real server may send fewer than `limit`); `fail` maps a
    path to a status to answer instead."""

    token: str = "test-token"
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    page: int = 2
    fail: dict[str, int] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    _server: LoopbackServer | None = None

    def __post_init__(self) -> None:
        if not self.items:
            self.items = {
                path.rsplit("/", 1)[1]: load_items(path.rsplit("/", 1)[1]) for path in RESOURCES
            }

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url

    def start(self) -> FakeKube:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                status, body = fake.answer(self.path, dict(self.headers.items()))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = LoopbackServer(Handler).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }

    def answer(self, target: str, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        self.seen.append(Seen(parts.path, query, auth))
        if auth != f"Bearer {self.token}":
            return self._status(401, "Unauthorized", "Unauthorized")
        if parts.path in self.fail:
            code = self.fail[parts.path]
            resource = parts.path.rsplit("/", 1)[1]
            return self._status(
                code,
                "Forbidden",
                f'{resource} is forbidden: User "system:serviceaccount:regwarden:retention" '
                f'cannot list resource "{resource}" in API group "" at the cluster scope',
            )
        if parts.path not in RESOURCES:
            return self._status(404, "NotFound", "the server could not find the requested resource")
        api_version, kind = RESOURCES[parts.path]
        items = self.items.get(parts.path.rsplit("/", 1)[1], [])
        limit = int(query.get("limit", ["0"])[0] or 0) or len(items) or 1
        start = 0
        if "continue" in query:
            start = int(base64.b64decode(query["continue"][0]).decode().split(":")[1])
        size = min(limit, self.page)
        chunk = items[start : start + size]
        meta: dict[str, Any] = {"resourceVersion": "918400"}
        if start + size < len(items):
            meta["continue"] = base64.b64encode(f"offset:{start + size}".encode()).decode()
            meta["remainingItemCount"] = len(items) - start - size
        body = {
            "kind": f"{kind}List",
            "apiVersion": api_version,
            "metadata": meta,
            "items": [{"kind": kind, "apiVersion": api_version, **i} for i in chunk]
            if kind == "Pod"
            else chunk,  # list items of typed lists carry no kind/apiVersion themselves
        }
        return 200, body


def write_kubeconfig(directory: Path, clusters: Mapping[str, FakeKube], *, current: str) -> Path:
    """A kubeconfig with one context per fake cluster (token auth, plain HTTP)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "clusters": [{"name": n, "cluster": {"server": k.url}} for n, k in clusters.items()],
        "users": [{"name": f"{n}-user", "user": {"token": k.token}} for n, k in clusters.items()],
        "contexts": [
            {"name": n, "context": {"cluster": n, "user": f"{n}-user", "namespace": "default"}}
            for n in clusters
        ],
    }
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path
