"""A loopback stand-in for Google Artifact Registry: the `/v2/` front of a real local
docker-registry and the Artifact Registry v1 REST control plane, on one port.

    with LocalRegistry() as reg, FakeGar(reg.host) as gar:
        skopeo_copy(f"oci:{layout}:v1", f"docker://{gar.host}/demo-proj/repo/app:v1")
        options = ProviderOptions(data_plane_host=gar.host)
        env = {"REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": gar.url}

The registry's host stays `LOCATION-docker.pkg.dev` (`gar.gar_host`) in references and
messages; `gar.host` is only where its `/v2/` and `/v1/` are served.

**Data plane** (`/v2/…`): every request is forwarded to the real registry, bodies streamed
both ways and headers kept (skopeo and regwarden's OCI client push and pull through it),
with what GAR adds on top:

- image paths are `PROJECT/REPOSITORY/IMAGE`: a path outside the fake's project or an AR
  repository that does not exist answers 404 `NAME_UNKNOWN` (GAR never creates a
  repository on push); `repositories=` names the ones that exist from the start;
- tags deleted through the AR API (or `DELETE /v2/…/manifests/<tag>`) are hidden: left out
  of `tags/list`, and a GET/HEAD of the manifest by that tag answers 404
  `MANIFEST_UNKNOWN`; a later PUT of that tag shows it again;
- each manifest's upload time is recorded as it passes (`gar.now`, a callable, is the
  clock), and the `gcr` topic's messages are published into `gar.gcr` exactly as GAR
  sends them (reference/events.md §2.1, cloud.google.com/artifact-registry/docs/
  configure-notifications): `{"action":"INSERT","digest":"HOST/P/R/IMG@sha256:…"}` plus
  `"tag":"HOST/P/R/IMG:TAG"` when pushed (or tagged) by tag; `{"action":"DELETE",
  "digest":…}` on a version delete and `{"action":"DELETE","tag":…}` on a tag delete;
  each entry is a Pub/Sub message `{"data": <JSON bytes>, "messageId": str,
  "publishTime": RFC 3339}`;
- auth, when `accepted_tokens` is a set: GAR's token service. An unauthenticated request
  gets `401` with `WWW-Authenticate: Bearer realm="http://<front>/v2/token",
  service="<gar host>"`; the realm takes Basic `oauth2accesstoken:<access token>` (the
  token must be in `accepted_tokens`) and answers `{"token", "expires_in"}`. What the
  token service saw is kept in `token_requests` (user, password); every `/v2/` request in
  `v2_requests`. `accepted_tokens = None` (the default): anonymous.
- `fail_next(method, regex, status, …)` applies to `/v2/` paths too (429 with
  `Retry-After`, 503), matched against the raw path.
- `park(n, when, matches)` holds the `n`th request (`/v2/` or `/v1/`) that
  `matches(method, raw_path, headers)` accepts: `before` it is served (it never lands) or
  `after` (served, the answer kept back); `Parked.reached` is set while it waits, and
  `Parked.release()` drops its connection unanswered — what a client killed meanwhile
  would have seen. The chaos tests kill a function there.

**Control plane** (`/v1/…`): the URL templates of google-cloud-artifact-registry's REST
transport (`services/artifact_registry/transports/rest_base.py`), bodies in the camelCase
JSON of its protos (`types/repository.py`, `artifact.py`, `package.py`, `tag.py`,
`version.py`, `service.py`), long-running operations as `google.longrunning.Operation`
answered `done` at once with `response`/`metadata` packed as `Any` (`@type`):

- repositories list / get / create (`repositoryId`; DOCKER format only);
- packages list (package id = IMAGE with `/` as `%2F`);
- dockerImages list / get (`name`, `uri`, `tags`, `imageSizeBytes` (int64: a string),
  `uploadTime`, `updateTime`, `buildTime` (the image config's `created`), `mediaType`,
  `artifactType`, `imageManifests` for an index); every manifest is listed, untagged
  ones (an index's children included), as AR does;
- tags list (`filter=version="…"`) / get / create (`tagId`; 409 when it exists) / patch
  (moves it) / delete;
- versions delete (`force`: a tagged version needs it, else 400 FAILED_PRECONDITION) and
  batchDelete (`names`; any missing → 404 NOT_FOUND and nothing deleted; metadata
  `BatchDeleteVersionsMetadata`), operations get.

State is derived from the real registry (`/v2/_catalog`, tags, manifests) plus what passed
through the front (untagged manifests, which distribution cannot list) and the overlay
above; deleting a version deletes the manifest in the real registry (deletes are enabled
in `LocalRegistry`), which takes its tags with it. `imageSizeBytes` is the config and
layers' sizes (an index: its children's), which is close to, not exactly, what AR reports.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import socket
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import httpx

from support.google_fake import GoogleFake, Reply, Request, google_error

__all__ = ["FakeGar", "Parked", "V2Record"]

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
    }
)
_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
_INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_V2_NAMED = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<rest>.*)$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_AR = "type.googleapis.com/google.devtools.artifactregistry.v1."
_CHUNK = 64 * 1024

# Control-plane paths (rest_base.py's templates); `[^/]+` segments are matched raw, so a
# package id keeps its `%2F`.
_LOC = r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
_REPO = _LOC + r"/repositories/(?P<repo>[^/:]+)"
_PKG = _REPO + r"/packages/(?P<package>[^/:]+)"


def _rfc3339(when: datetime) -> str:
    # isoformat pads the year (strftime's %Y does not: cosign's configs say year 1)
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _package_id(image: str) -> str:
    """AR's package id for an image path: `/` encoded as `%2F`."""
    return image.replace("/", "%2F")


def _image_of(package: str) -> str:
    """The image path of a package id, however many times the client encoded it."""
    while "%" in package:
        decoded = unquote(package)
        if decoded == package:
            break
        package = decoded
    return package


@dataclass(frozen=True, slots=True)
class V2Record:
    """One `/v2/` request the front answered."""

    method: str
    path: str
    status: int
    authorization: str | None


Matcher = Callable[[str, str, Mapping[str, str]], bool]
"""(method, raw path, headers) → whether a request counts towards a `park`."""


@dataclass
class Parked:
    """One request `FakeGar.park` holds (see there)."""

    n: int
    when: Literal["before", "after"]
    matches: Matcher
    reached: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)
    request: str = ""
    """`METHOD path` of the parked request."""
    status: int | None = None
    """What it was answered (`after` only): it landed when this is 2xx."""
    counted: list[str] = field(default_factory=list)
    """Every matching request since `park`, as `METHOD path`, the parked one included."""

    HOLD_LIMIT = 120.0
    """A parked request is dropped after this long even if nobody released it."""

    def release(self) -> None:
        self.go.set()

    def _hold(self) -> None:
        self.reached.set()
        self.go.wait(self.HOLD_LIMIT)


class _Dropped(Exception):
    """The parked request is dropped: its connection is reset, nothing is answered."""


@dataclass
class _Image:
    path: str  # PROJECT/REPO/IMAGE
    digest: str
    media_type: str
    tags: list[str]
    size: int
    uploaded: datetime
    updated: datetime
    built: datetime | None
    children: list[dict[str, Any]]
    artifact_type: str | None


class FakeGar(GoogleFake):
    """Artifact Registry for project `project` in `location`, its images stored in the
    distribution registry at `registry_host` (`127.0.0.1:PORT`)."""

    def __init__(
        self,
        registry_host: str,
        project: str = "demo-proj",
        location: str = "us",
        *,
        repositories: Iterable[str] = ("repo",),
    ) -> None:
        self.upstream = registry_host
        self.project = project
        self.location = location
        self.gar_host = f"{location}-docker.pkg.dev"
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        """The fake's clock (assignable): upload/update times and publish times."""
        self.gcr: list[dict[str, Any]] = []
        """Messages published on the `gcr` topic, oldest first."""
        self.accepted_tokens: set[str] | None = None
        """Access tokens the token service accepts; None: no auth at all."""
        self.token_requests: list[tuple[str, str]] = []
        self.v2_requests: list[V2Record] = []
        self.bearer_lifetime = 3600
        self.realm: str | None = None
        """The token realm the challenge names; None: the front's own `/v2/token`."""
        self._repos: dict[str, dict[str, Any]] = {}
        self._hidden: set[tuple[str, str]] = set()
        self._seen: dict[tuple[str, str], datetime] = {}  # (path, digest) → upload time
        self._updated: dict[tuple[str, str], datetime] = {}
        self._manifests: dict[str, tuple[bytes, str]] = {}  # digest → (raw, media type)
        self._built: dict[str, datetime | None] = {}  # config digest → created
        self._ops: dict[str, dict[str, Any]] = {}
        self._bearers: dict[str, str] = {}  # bearer → the access token it was issued for
        self._park: Parked | None = None
        self._state = threading.RLock()
        self._http = httpx.Client(base_url=f"http://{registry_host}", timeout=30.0)
        super().__init__()
        for repo in repositories:
            self.add_repository(repo)
        self._routes_v1()

    # -- test helpers -------------------------------------------------------------------------

    def add_repository(self, repo_id: str, *, fmt: str = "DOCKER") -> dict[str, Any]:
        """Create AR repository `repo_id` directly (as a test's setup would in the console)."""
        with self._state:
            name = f"{self._parent()}/repositories/{repo_id}"
            at = _rfc3339(self.now())
            resource = {
                "name": name,
                "format": fmt,
                "mode": "STANDARD_REPOSITORY",
                "description": "",
                "labels": {},
                "createTime": at,
                "updateTime": at,
                "registryUri": f"{self.gar_host}/{self.project}/{repo_id}",
            }
            self._repos[repo_id] = resource
            return resource

    @property
    def repositories(self) -> list[str]:
        with self._state:
            return sorted(self._repos)

    def messages(self) -> list[dict[str, Any]]:
        """The `gcr` messages' data, decoded."""
        with self._state:
            return [json.loads(m["data"]) for m in self.gcr]

    def reference(self, path: str, digest: str | None = None, tag: str | None = None) -> str:
        """`HOST/PATH@digest` or `HOST/PATH:tag`, as GAR's messages spell references."""
        return f"{self.gar_host}/{path}" + (f"@{digest}" if digest else f":{tag}")

    def park(self, n: int, when: Literal["before", "after"], matches: Matcher) -> Parked:
        """Hold the `n`th request from now on that `matches` accepts, `before` it is served
        or `after`; one park at a time (a new one replaces the last)."""
        parked = Parked(n, when, matches)
        with self._state:
            self._park = parked
        return parked

    def unpark(self) -> None:
        """Stop counting; a request still held is released."""
        with self._state:
            parked, self._park = self._park, None
        if parked is not None:
            parked.release()

    def stop(self) -> None:
        self.unpark()
        super().stop()
        self._http.close()

    # -- shared plumbing ----------------------------------------------------------------------

    def _parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def _publish(self, data: dict[str, Any]) -> None:
        with self._state:
            self.gcr.append(
                {
                    "data": json.dumps(data, separators=(",", ":")).encode(),
                    "messageId": str(10_000_000_000 + len(self.gcr)),
                    "publishTime": _rfc3339(self.now()),
                }
            )

    def _known_path(self, path: str) -> bool:
        parts = path.split("/")
        return len(parts) >= 3 and parts[0] == self.project and parts[1] in self._repos

    def _take_fault(self, method: str, raw_path: str) -> tuple[int, dict[str, str]] | None:
        with self.lock:
            for fault in self._faults:
                if (
                    fault.remaining > 0
                    and fault.method == method
                    and fault.pattern.fullmatch(raw_path)
                ):
                    fault.remaining -= 1
                    return fault.status, dict(fault.headers)
        return None

    def _claim(self, method: str, raw_path: str, headers: Mapping[str, str]) -> Parked | None:
        """The park this request is held by, counting it if it matches."""
        with self._state:
            parked = self._park
            if parked is None or not parked.matches(method, raw_path, headers):
                return None
            parked.counted.append(f"{method} {raw_path}")
            if len(parked.counted) != parked.n:
                return None
            self._park = None
            parked.request = f"{method} {raw_path}"
            return parked

    def dispatch(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        parked = self._claim(request.method, request.raw_path, request.headers)
        if parked is None:
            return super().dispatch(request)
        if parked.when == "after":
            parked.status = super().dispatch(request)[0]
        parked._hold()
        raise _Dropped

    # -- upstream reads (the control plane's view) -------------------------------------------

    def _catalog(self) -> list[str]:
        names: list[str] = []
        url: str | None = "/v2/_catalog?n=1000"  # distribution's largest page
        while url:
            response = self._http.get(url)
            response.raise_for_status()
            names.extend(response.json().get("repositories") or [])
            link = response.links.get("next", {}).get("url")
            url = str(link) if link else None
        return names

    def _upstream_tags(self, path: str) -> list[str]:
        response = self._http.get(f"/v2/{path}/tags/list")
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return [t for t in response.json().get("tags") or [] if (path, t) not in self._hidden]

    def _head(self, path: str, reference: str) -> tuple[str, str] | None:
        response = self._http.head(f"/v2/{path}/manifests/{reference}", headers={"Accept": _ACCEPT})
        if response.status_code != 200:
            return None
        digest = response.headers.get("docker-content-digest", "")
        return digest, response.headers.get("content-type", "")

    def _manifest(self, path: str, digest: str) -> tuple[bytes, str] | None:
        """The manifest `digest` in `path`, if the registry has it there."""
        if self._head(path, digest) is None:
            return None
        cached = self._manifests.get(digest)
        if cached is not None:
            return cached
        response = self._http.get(f"/v2/{path}/manifests/{digest}", headers={"Accept": _ACCEPT})
        if response.status_code != 200:
            return None
        found = (response.content, response.headers.get("content-type", ""))
        self._manifests[digest] = found
        return found

    def _built_time(self, path: str, config: dict[str, Any]) -> datetime | None:
        digest = str(config.get("digest", ""))
        if not str(config.get("mediaType", "")).endswith(
            ("image.config.v1+json", "container.image.v1+json")
        ):
            return None
        if digest not in self._built:
            created = None
            response = self._http.get(f"/v2/{path}/blobs/{digest}", follow_redirects=True)
            if response.status_code == 200:
                text = str(json.loads(response.content).get("created") or "")
                if text:
                    head, _, frac = text.rstrip("Z").partition(".")
                    stamp = head + ("." + frac[:6] if frac else "")
                    created = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
            self._built[digest] = created
        return self._built[digest]

    def _images(self, repo_id: str) -> list[_Image]:
        """Every manifest in AR repository `repo_id`: tagged, seen passing, and children."""
        prefix = f"{self.project}/{repo_id}/"
        with self._state:
            paths = sorted(
                {p for p in self._catalog() if p.startswith(prefix)}
                | {p for p, _ in self._seen if p.startswith(prefix)}
            )
            out: list[_Image] = []
            for path in paths:
                out.extend(self._images_at(path))
            return out

    def _images_at(self, path: str) -> list[_Image]:
        tags: dict[str, list[str]] = {}
        for tag in self._upstream_tags(path):
            head = self._head(path, tag)
            if head is not None:
                tags.setdefault(head[0], []).append(tag)
        pending = list(dict.fromkeys([*tags, *(d for p, d in self._seen if p == path)]))
        images: dict[str, _Image] = {}
        while pending:
            digest = pending.pop(0)
            if digest in images:
                continue
            found = self._manifest(path, digest)
            if found is None:
                continue
            raw, media_type = found
            doc = json.loads(raw)
            media_type = media_type or str(doc.get("mediaType", ""))
            children = [m for m in doc.get("manifests") or [] if isinstance(m, dict)]
            pending.extend(str(m["digest"]) for m in children)
            config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
            size = int(config.get("size", 0)) + sum(
                int(layer.get("size", 0)) for layer in doc.get("layers") or []
            )
            now = self.now()
            uploaded = self._seen.setdefault((path, digest), now)
            subject = doc.get("subject")
            artifact = doc.get("artifactType") or (
                media_type if isinstance(subject, dict) else None
            )
            images[digest] = _Image(
                path=path,
                digest=digest,
                media_type=media_type,
                tags=sorted(tags.get(digest, [])),
                size=size,
                uploaded=uploaded,
                updated=self._updated.get((path, digest), uploaded),
                built=self._built_time(path, config) if config else None,
                children=children,
                artifact_type=str(artifact) if artifact else None,
            )
        for image in images.values():  # an index's size: its children's
            if image.children:
                image.size = sum(
                    images[str(c["digest"])].size
                    for c in image.children
                    if str(c["digest"]) in images
                )
        return list(images.values())

    def _find(self, path: str, digest: str) -> _Image | None:
        parts = path.split("/")
        return next(
            (i for i in self._images(parts[1]) if i.digest == digest and i.path == path), None
        )

    # -- the control plane --------------------------------------------------------------------

    def _routes_v1(self) -> None:
        self.route("GET", _LOC + r"/repositories", self._list_repositories)
        self.route("POST", _LOC + r"/repositories", self._create_repository)
        self.route("GET", _REPO, self._get_repository)
        self.route("GET", _REPO + r"/packages", self._list_packages)
        self.route("GET", _REPO + r"/dockerImages", self._list_docker_images)
        self.route("GET", _REPO + r"/dockerImages/(?P<image>[^/]+)", self._get_docker_image)
        self.route("GET", _PKG + r"/tags", self._list_tags)
        self.route("POST", _PKG + r"/tags", self._create_tag)
        self.route("GET", _PKG + r"/tags/(?P<tag>[^/]+)", self._get_tag)
        self.route("PATCH", _PKG + r"/tags/(?P<tag>[^/]+)", self._update_tag)
        self.route("DELETE", _PKG + r"/tags/(?P<tag>[^/]+)", self._delete_tag)
        self.route("DELETE", _PKG + r"/versions/(?P<version>[^/]+)", self._delete_version)
        self.route("POST", _PKG + r"/versions:batchDelete", self._batch_delete)
        self.route("GET", _LOC + r"/operations/(?P<op>[^/]+)", self._get_operation)

    def _where(self, request: Request) -> Reply | None:
        """404 unless the request is for this project and location (and repository)."""
        p = request.params
        if p.get("project") != self.project or p.get("location") != self.location:
            return google_error(404, f"{self._parent()} does not hold {request.path}")
        repo = p.get("repo")
        if repo is not None and repo not in self._repos:
            return google_error(404, f"Repository {self._parent()}/repositories/{repo} not found")
        return None

    @staticmethod
    def _page(request: Request, items: list[Any], key: str) -> Reply:
        size = int(request.arg("pageSize") or 0) or 1000
        start = int(request.arg("pageToken") or 0)
        body: dict[str, Any] = {key: items[start : start + size]}
        if start + size < len(items):
            body["nextPageToken"] = str(start + size)
        return 200, body

    def _operation(self, response: dict[str, Any] | None, metadata: dict[str, Any]) -> Reply:
        name = f"{self._parent()}/operations/{uuid.uuid4()}"
        op: dict[str, Any] = {"name": name, "metadata": metadata, "done": True}
        op["response"] = response or {"@type": "type.googleapis.com/google.protobuf.Empty"}
        self._ops[name] = op
        return 200, op

    def _list_repositories(self, request: Request) -> Reply:
        return self._where(request) or self._page(
            request, [self._repos[r] for r in sorted(self._repos)], "repositories"
        )

    def _get_repository(self, request: Request) -> Reply:
        return self._where(request) or (200, self._repos[request.params["repo"]])

    def _create_repository(self, request: Request) -> Reply:
        bad = self._where(request)
        if bad:
            return bad
        repo_id = request.arg("repositoryId") or ""
        if not re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", repo_id):
            return google_error(400, f"invalid repositoryId {repo_id!r}")
        if repo_id in self._repos:
            return google_error(409, f"the repository already exists: {repo_id}")
        body = request.body or {}
        fmt = body.get("format")
        if fmt not in ("DOCKER", 1):
            return google_error(400, f"format: got {fmt!r}, only DOCKER is faked")
        resource = self.add_repository(repo_id)
        resource["description"] = str(body.get("description") or "")
        resource["labels"] = dict(body.get("labels") or {})
        return self._operation(
            {"@type": _AR + "Repository", **resource},
            {"@type": _AR + "OperationMetadata"},
        )

    def _list_packages(self, request: Request) -> Reply:
        bad = self._where(request)
        if bad:
            return bad
        repo = request.params["repo"]
        base = f"{self._parent()}/repositories/{repo}/packages/"
        by_path: dict[str, list[_Image]] = {}
        for image in self._images(repo):
            by_path.setdefault(image.path, []).append(image)
        packages = []
        for path, images in sorted(by_path.items()):
            name = path.split("/", 2)[2]
            packages.append(
                {
                    "name": base + _package_id(name),
                    "displayName": name,
                    "createTime": _rfc3339(min(i.uploaded for i in images)),
                    "updateTime": _rfc3339(max(i.updated for i in images)),
                }
            )
        return self._page(request, packages, "packages")

    def _docker_image(self, repo: str, image: _Image) -> dict[str, Any]:
        name = image.path.split("/", 2)[2]
        out: dict[str, Any] = {
            "name": f"{self._parent()}/repositories/{repo}/dockerImages/"
            f"{quote(name, safe='')}@{image.digest}",
            "uri": f"{self.gar_host}/{image.path}@{image.digest}",
            "tags": image.tags,
            "imageSizeBytes": str(image.size),
            "uploadTime": _rfc3339(image.uploaded),
            "mediaType": image.media_type,
            "updateTime": _rfc3339(image.updated),
        }
        if image.built is not None:
            out["buildTime"] = _rfc3339(image.built)
        if image.artifact_type:
            out["artifactType"] = image.artifact_type
        if image.children:
            out["imageManifests"] = [
                {
                    "architecture": str((c.get("platform") or {}).get("architecture", "")),
                    "os": str((c.get("platform") or {}).get("os", "")),
                    "digest": str(c["digest"]),
                    "mediaType": str(c.get("mediaType", "")),
                    "variant": str((c.get("platform") or {}).get("variant", "")),
                }
                for c in image.children
            ]
        return out

    def _list_docker_images(self, request: Request) -> Reply:
        bad = self._where(request)
        if bad:
            return bad
        repo = request.params["repo"]
        images = sorted(self._images(repo), key=lambda i: (i.path, i.uploaded, i.digest))
        return self._page(request, [self._docker_image(repo, i) for i in images], "dockerImages")

    def _get_docker_image(self, request: Request) -> Reply:
        bad = self._where(request)
        if bad:
            return bad
        repo = request.params["repo"]
        name, _, digest = _image_of(request.params["image"]).rpartition("@")
        found = self._find(f"{self.project}/{repo}/{name}", digest) if name else None
        if found is None:
            return google_error(404, f"Requested entity was not found: {request.path}")
        return 200, self._docker_image(repo, found)

    def _package_path(self, request: Request) -> str:
        return f"{self.project}/{request.params['repo']}/{_image_of(request.params['package'])}"

    def _tag_resource(self, request: Request, tag: str, digest: str) -> dict[str, Any]:
        base = (
            f"{self._parent()}/repositories/{request.params['repo']}/packages/"
            f"{_package_id(_image_of(request.params['package']))}"
        )
        return {"name": f"{base}/tags/{tag}", "version": f"{base}/versions/{digest}"}

    def _tags_at(self, path: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for tag in self._upstream_tags(path):
            head = self._head(path, tag)
            if head is not None:
                out[tag] = head[0]
        return out

    def _list_tags(self, request: Request) -> Reply:
        bad = self._where(request)
        if bad:
            return bad
        path = self._package_path(request)
        with self._state:
            tags = self._tags_at(path)
        wanted = None
        text = request.arg("filter") or ""
        if text:
            m = re.fullmatch(r'\s*version\s*=\s*"(?P<v>[^"]+)"\s*', text)
            if m is None:
                return google_error(400, f'unsupported filter {text!r} (fake: version="…")')
            wanted = m.group("v").rsplit("/versions/", 1)[-1]
        items = [
            self._tag_resource(request, t, d)
            for t, d in sorted(tags.items())
            if wanted is None or _image_of(wanted) == d
        ]
        return self._page(request, items, "tags")

    def _get_tag(self, request: Request) -> Reply:
        bad = self._where(request)
        if bad:
            return bad
        path, tag = self._package_path(request), request.params["tag"]
        with self._state:
            digest = self._tags_at(path).get(tag)
        if digest is None:
            return google_error(404, f"Requested entity was not found: tag {tag}")
        return 200, self._tag_resource(request, tag, digest)

    def _point(self, path: str, tag: str, digest: str) -> Reply | None:
        """PUT the manifest `digest` under `tag` in the real registry; unhide the tag."""
        found = self._manifest(path, digest)
        if found is None:
            return google_error(404, f"Requested entity was not found: version {digest}")
        raw, media_type = found
        response = self._http.put(
            f"/v2/{path}/manifests/{tag}", content=raw, headers={"Content-Type": media_type}
        )
        if response.status_code != 201:
            return google_error(500, f"registry answered {response.status_code}")
        self._hidden.discard((path, tag))
        self._updated[(path, digest)] = self.now()
        self._publish(
            {
                "action": "INSERT",
                "digest": self.reference(path, digest=digest),
                "tag": self.reference(path, tag=tag),
            }
        )
        return None

    def _tag_body(self, request: Request) -> tuple[str | None, Reply | None]:
        version = str((request.body or {}).get("version") or "")
        digest = _image_of(version.rsplit("/versions/", 1)[-1]) if version else ""
        if not _DIGEST.fullmatch(digest):
            return None, google_error(
                400, f"tag.version: got {version!r}, expected …/versions/sha256:…"
            )
        return digest, None

    def _create_tag(self, request: Request) -> Reply:
        bad = self._where(request)
        if bad:
            return bad
        tag = request.arg("tagId") or ""
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
            return google_error(400, f"invalid tagId {tag!r}")
        digest, error = self._tag_body(request)
        if error or digest is None:
            return error or google_error(400, "no version")
        path = self._package_path(request)
        with self._state:
            if tag in self._tags_at(path):
                return google_error(409, f"tag {tag} already exists")
            failed = self._point(path, tag, digest)
        return failed or (200, self._tag_resource(request, tag, digest))

    def _update_tag(self, request: Request) -> Reply:
        bad = self._where(request)
        if bad:
            return bad
        tag = request.params["tag"]
        digest, error = self._tag_body(request)
        if error or digest is None:
            return error or google_error(400, "no version")
        path = self._package_path(request)
        with self._state:
            failed = self._point(path, tag, digest)
        return failed or (200, self._tag_resource(request, tag, digest))

    def _delete_tag(self, request: Request) -> Reply:
        bad = self._where(request)
        if bad:
            return bad
        path, tag = self._package_path(request), request.params["tag"]
        with self._state:
            if tag not in self._tags_at(path):
                return google_error(404, f"Requested entity was not found: tag {tag}")
            self._hide(path, tag)
        return 200, {}

    def _hide(self, path: str, tag: str) -> None:
        self._hidden.add((path, tag))
        self._publish({"action": "DELETE", "tag": self.reference(path, tag=tag)})

    def _drop(self, path: str, digest: str) -> bool:
        """Delete the manifest `digest` at `path` in the real registry."""
        response = self._http.delete(f"/v2/{path}/manifests/{digest}")
        if response.status_code not in (200, 202):
            return False
        self._seen.pop((path, digest), None)
        self._updated.pop((path, digest), None)
        self._publish({"action": "DELETE", "digest": self.reference(path, digest=digest)})
        return True

    def _delete_version(self, request: Request) -> Reply:
        bad = self._where(request)
        if bad:
            return bad
        path = self._package_path(request)
        digest = _image_of(request.params["version"])
        force = (request.arg("force") or "").lower() in ("true", "1")
        with self._state:
            if not _DIGEST.fullmatch(digest) or self._head(path, digest) is None:
                return google_error(404, f"Requested entity was not found: version {digest}")
            if not force and digest in self._tags_at(path).values():
                return google_error(
                    400, f"FAILED_PRECONDITION: version {digest} is tagged; pass force=true"
                )
            if not self._drop(path, digest):
                return google_error(500, f"registry refused to delete {digest}")
        return self._operation(None, {"@type": _AR + "OperationMetadata"})

    def _batch_delete(self, request: Request) -> Reply:
        bad = self._where(request)
        if bad:
            return bad
        path = self._package_path(request)
        names = [str(n) for n in (request.body or {}).get("names") or []]
        if not names:
            return google_error(400, "names: expected at least one version")
        digests = [_image_of(n.rsplit("/versions/", 1)[-1]) for n in names]
        with self._state:
            for name, digest in zip(names, digests, strict=True):
                if not _DIGEST.fullmatch(digest) or self._head(path, digest) is None:
                    return google_error(404, f"Requested entity was not found: {name}")
            failed = []
            if not (request.body or {}).get("validateOnly"):
                for name, digest in zip(names, digests, strict=True):
                    if not self._drop(path, digest):
                        failed.append(name)
        return self._operation(
            None, {"@type": _AR + "BatchDeleteVersionsMetadata", "failedVersions": failed}
        )

    def _get_operation(self, request: Request) -> Reply:
        op = self._ops.get(request.path.removeprefix("/v1/"))
        return (200, op) if op else google_error(404, f"operation {request.path} not found")

    # -- the data plane -----------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        base = super()._handler_class()
        fake = self

        class _Handler(base):  # type: ignore[misc,valid-type]
            def _route(self) -> None:
                try:
                    if urlsplit(self.path).path.startswith("/v2/"):
                        fake._v2(self)
                    else:
                        self._serve()
                except _Dropped:  # parked, then released: reset, never answered
                    self.close_connection = True
                    try:
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        self.connection.close()
                    except OSError:
                        pass

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _route

        return _Handler

    def _v2(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path = parts.path
        method = h.command
        authorization = h.headers.get("Authorization")

        parked: Parked | None = None

        def held(status: int, headers: dict[str, str]) -> None:
            """`after`: the request was served; keep its answer back."""
            if parked is not None:
                parked.status = status
                parked._hold()
                raise _Dropped

        def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            _drain(h)
            held(status, headers or {})
            with self._state:
                self.v2_requests.append(V2Record(method, path, status, authorization))
            h.send_response(status)
            for key, value in (headers or {}).items():
                h.send_header(key, value)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if method != "HEAD" and body:
                h.wfile.write(body)

        def oci_error(
            status: int, code: str, message: str, headers: dict[str, str] | None = None
        ) -> None:
            body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
            answer(status, body, {"Content-Type": "application/json", **(headers or {})})

        if path == "/v2/token":
            return self._token(h, answer)
        if not self._authorized(authorization):
            realm = self.realm or f"http://{self.host}/v2/token"
            challenge = f'Bearer realm="{realm}",service="{self.gar_host}"'
            return oci_error(
                401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge}
            )
        fault = self._take_fault(method, path)
        if fault is not None:
            status, headers = fault
            code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"
            return oci_error(status, code, f"injected {status}", headers)
        parked = self._claim(method, path, {k.lower(): v for k, v in h.headers.items()})
        if parked is not None and parked.when == "before":
            parked._hold()
            raise _Dropped
        named = _V2_NAMED.match(path)
        if named is None:
            return self._forward(h, path, held)
        name, kind, rest = named.group("name"), named.group("kind"), named.group("rest")
        with self._state:
            known = self._known_path(name)
        if not known:
            return oci_error(
                404,
                "NAME_UNKNOWN",
                f'Repository "{"/".join(name.split("/")[:2])}" not found in '
                f"{self.project}/{self.location}",
            )
        if kind == "tags" and rest == "list" and method == "GET":
            with self._state:
                tags = self._upstream_tags(name)
            body = json.dumps({"name": name, "tags": tags}).encode()
            return answer(200, body, {"Content-Type": "application/json"})
        if kind == "manifests":
            reference = rest
            is_tag = not reference.startswith("sha256:")
            if method in ("GET", "HEAD") and is_tag:
                with self._state:
                    hidden = (name, reference) in self._hidden
                if hidden:
                    return oci_error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {reference}")
            if method == "DELETE":
                with self._state:
                    if is_tag:
                        if reference not in self._tags_at(name):
                            return oci_error(404, "MANIFEST_UNKNOWN", "manifest unknown")
                        self._hide(name, reference)
                        return answer(202)
                    if self._head(name, reference) is None:
                        return oci_error(404, "MANIFEST_UNKNOWN", "manifest unknown")
                    self._drop(name, reference)
                return answer(202)
            if method == "PUT":

                def pushed(status: int, headers: dict[str, str]) -> None:
                    if status == 201:  # recorded and published before the pusher hears back
                        self._pushed(name, reference, headers)
                    held(status, headers)

                self._forward(h, path, pushed)
                return None
        self._forward(h, path, held)
        return None

    def _pushed(self, path: str, reference: str, headers: dict[str, str]) -> None:
        digest = headers.get("docker-content-digest", "")
        if not digest:
            return
        with self._state:
            now = self.now()
            self._seen.setdefault((path, digest), now)
            message = {"action": "INSERT", "digest": self.reference(path, digest=digest)}
            if not reference.startswith("sha256:"):
                self._hidden.discard((path, reference))
                self._updated[(path, digest)] = now
                message["tag"] = self.reference(path, tag=reference)
            self._publish(message)

    def _authorized(self, authorization: str | None) -> bool:
        if self.accepted_tokens is None:
            return True
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._state:
            token = self._bearers.get(authorization.removeprefix("Bearer "))
            return token is not None and token in self.accepted_tokens

    def _token(self, h: BaseHTTPRequestHandler, answer: Callable[..., None]) -> None:
        """GAR's token service: Basic `oauth2accesstoken:<access token>` → a bearer."""
        value = h.headers.get("Authorization") or ""
        user = password = ""
        if value.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(value[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user = password = ""
        with self._state:
            if value:
                self.token_requests.append((user, password))
            accepted = self.accepted_tokens
            ok = user == "oauth2accesstoken" and (accepted is None or password in accepted)
            if not ok:
                body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "bad token"}]})
                return answer(
                    401,
                    body.encode(),
                    {
                        "Content-Type": "application/json",
                        "WWW-Authenticate": f'Basic realm="http://{self.host}/v2/token"',
                    },
                )
            bearer = secrets.token_urlsafe(24)
            self._bearers[bearer] = password
        body = json.dumps({"token": bearer, "expires_in": self.bearer_lifetime})
        return answer(200, body.encode(), {"Content-Type": "application/json"})

    def _forward(
        self,
        h: BaseHTTPRequestHandler,
        path: str,
        before_reply: Callable[[int, dict[str, str]], None] | None = None,
    ) -> None:
        """Relay the request to the real registry and its answer back, streaming bodies;
        `before_reply(status, headers)` runs between the two."""
        host, _, port = self.upstream.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            chunked = "chunked" in (h.headers.get("Transfer-Encoding") or "").lower()
            for key, value in h.headers.items():
                if key.lower() in _HOP_BY_HOP or key.lower() == "authorization":
                    continue
                conn.putheader(key, value)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            if chunked:
                for chunk in _read_chunked(h):
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                conn.send(b"0\r\n\r\n")
            else:
                left = int(h.headers.get("Content-Length") or 0)
                while left > 0:
                    data = h.rfile.read(min(_CHUNK, left))
                    if not data:
                        break
                    conn.send(data)
                    left -= len(data)
            response = conn.getresponse()
            headers = {k.lower(): v for k, v in response.getheaders()}
            if before_reply is not None:
                before_reply(response.status, headers)
            # logged before the answer goes back, so a client holding its reply finds it here
            with self._state:
                self.v2_requests.append(
                    V2Record(h.command, path, response.status, h.headers.get("Authorization"))
                )
            h.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() in _HOP_BY_HOP:
                    continue
                h.send_header(key, value)
            bodiless = h.command == "HEAD" or response.status in (204, 304)
            relay_chunked = not bodiless and "content-length" not in headers
            if relay_chunked:
                h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            if not bodiless:
                while True:
                    data = response.read(_CHUNK)
                    if not data:
                        break
                    if relay_chunked:
                        h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    else:
                        h.wfile.write(data)
                if relay_chunked:
                    h.wfile.write(b"0\r\n\r\n")
        finally:
            conn.close()


def _read_chunked(h: BaseHTTPRequestHandler) -> Iterable[bytes]:
    while True:
        line = h.rfile.readline().split(b";", 1)[0].strip()
        size = int(line or b"0", 16)
        if size == 0:
            while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return
        yield h.rfile.read(size)
        h.rfile.readline()


def _drain(h: BaseHTTPRequestHandler) -> None:
    """Read (and drop) a request body the front answers itself, keeping the connection."""
    if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
        for _ in _read_chunked(h):
            pass
        return
    left = int(h.headers.get("Content-Length") or 0)
    while left > 0:
        data = h.rfile.read(min(_CHUNK, left))
        if not data:
            return
        left -= len(data)
