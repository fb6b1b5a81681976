"""Google Artifact Registry provider: the control plane through the Artifact Registry
client, the data plane through the OCI client.

    registry = make_gar("us-docker.pkg.dev", ProviderOptions())
    for record in registry.list_images("my-proj/team/api"):
        print(record.digest, record.tags, record.pushed)

A regwarden repository on GAR is the image path `PROJECT/REPOSITORY/IMAGE` (IMAGE may hold
`/`; on a `gcr.io`-style host, whose AR repository is the host's name, `PROJECT/IMAGE`).
The location comes from the host (`us-docker.pkg.dev` → `us`; `eu.gcr.io` → `europe`)
unless `ProviderOptions.region` names it. Artifact Registry keeps upload times, lists every
manifest (untagged ones too), creates and deletes single tags and deletes versions in
batches, so listing, tags and deletes are control-plane calls; manifests, blobs and copies
go over `/v2/` with an OAuth access token as the password of user `oauth2accesstoken`,
refreshed before it expires (the OCI client is rebuilt when the token changes).

The token goes only to the registry's own host and the configured `data_plane_host`: a
token service, redirect or challenge anywhere else gets the request without it.

Google's libraries are imported lazily: this module imports without them, and `make_gar`
says which extra to install when they are missing.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from ..errors import (
    AuthError,
    InvalidReference,
    NotFound,
    NotImplementedYet,
    RegistryError,
    UsageError,
)
from ..reference import validate_digest
from ._base import (
    CAP_BATCH_DELETE,
    CAP_COPY_MOUNT,
    CAP_MANIFEST_LISTING,
    CAP_PUSH_TIMES,
    CAP_TAG_DELETE,
    THROTTLE_STATUS,
    DeleteResult,
    DeleteStatus,
    ImageDetails,
    ListedImage,
    Registry,
)
from ._cloud_plane import THROTTLE_ATTEMPTS, ThrottleWatchers, call_throttled, pinned_client, utc

if TYPE_CHECKING:
    from ..oci import Manifest, RegistryClient
    from . import ProviderOptions

__all__ = [
    "BATCH_DELETE_LIMIT",
    "GCR_LOCATIONS",
    "THROTTLE_ATTEMPTS",
    "GarPath",
    "GarRegistry",
    "make_gar",
    "parse_gar_host",
]

log = logging.getLogger("regwarden.providers.gar")

BATCH_DELETE_LIMIT = 10_000
"""Versions per `batchDeleteVersions` request: the maximum the AR v1 reference gives for
`BatchDeleteVersionsRequest.names` ("A maximum of 10000 versions can be deleted in a
batch"; later revisions say the service decides by region, so a smaller batch size can be
passed to `GarRegistry`)."""
_PAGE_SIZE = 1000
_TOKEN_USER = "oauth2accesstoken"  # noqa: S105  (GAR's fixed user name, not a secret)
_INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_PKG_DEV = re.compile(r"^(?P<location>[a-z0-9-]+)-docker\.pkg\.dev(?::\d+)?$")
GCR_LOCATIONS = {"gcr.io": "us", "us.gcr.io": "us", "eu.gcr.io": "europe", "asia.gcr.io": "asia"}
"""gcr.io-style hosts Artifact Registry serves (a repository named after the host) and
the multi-region each lives in."""
_REPO_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_T = TypeVar("_T")


def parse_gar_host(host: str) -> tuple[str, str | None]:
    """(location, gcr-style repository id or None) for a GAR host; UsageError otherwise."""
    name = host.lower()
    m = _PKG_DEV.match(name)
    if m is not None:
        return m.group("location"), None
    bare = name.split(":", 1)[0]
    if bare in GCR_LOCATIONS:
        return GCR_LOCATIONS[bare], bare
    raise UsageError(
        f"not a Google Artifact Registry host: got {host!r}, expected LOCATION-docker.pkg.dev "
        "(or gcr.io, us.gcr.io, eu.gcr.io, asia.gcr.io)",
        hint="set the location explicitly (ProviderOptions.region) for another host name",
    )


@dataclass(frozen=True, slots=True)
class GarPath:
    """A regwarden repository on GAR, as Artifact Registry's resources name it."""

    project: str
    location: str
    repository: str
    image: str

    @property
    def repository_name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/repositories/{self.repository}"

    @property
    def package(self) -> str:
        """The package: the image path with `/` encoded as `%2F`."""
        return f"{self.repository_name}/packages/{self.image.replace('/', '%2F')}"

    def version(self, digest: str) -> str:
        return f"{self.package}/versions/{digest}"

    def tag(self, tag: str) -> str:
        return f"{self.package}/tags/{tag}"


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _google_missing() -> bool:
    try:
        return find_spec("google.cloud.artifactregistry_v1") is None
    except (ModuleNotFoundError, ValueError):  # a parent package is missing, or blocked
        return True


class GarRegistry:
    """`Registry` for Artifact Registry's Docker repositories in one location.

    Control plane: `artifactregistry_v1.ArtifactRegistryClient` (REST, made by
    `gcp_clients.client_kwargs`; `REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY` in `env` points
    it at a stand-in), called without the library's retries: a 429/503 answer calls the
    `watch_throttling` callbacks and is retried here (`THROTTLE_ATTEMPTS`, honouring
    `Retry-After`). Data plane: `regwarden.oci.RegistryClient` at `data_plane_host` (else
    the host), as `oauth2accesstoken` with the credentials' access token; anonymous when the
    credentials have none (a loopback stand-in). `options.account` is the project
    `list_repositories` lists (else `GOOGLE_CLOUD_PROJECT` in `env`).
    """

    kind = "gar"
    capabilities: frozenset[str] = frozenset(
        {CAP_TAG_DELETE, CAP_PUSH_TIMES, CAP_MANIFEST_LISTING, CAP_BATCH_DELETE, CAP_COPY_MOUNT}
    )

    def __init__(
        self,
        host: str,
        options: ProviderOptions | None = None,
        *,
        client: Any = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        batch_size: int = BATCH_DELETE_LIMIT,
    ) -> None:
        from . import ProviderOptions

        self.host = host
        self.options = options or ProviderOptions()
        self.env: Mapping[str, str] = os.environ if env is None else env
        bare = host.split(":", 1)[0].lower()
        if self.options.region:  # the caller names the location: any host name will do
            self.location = self.options.region
            self.gcr_repository = bare if bare in GCR_LOCATIONS else None
        else:
            self.location, self.gcr_repository = parse_gar_host(host)
        self.data_plane_host = self.options.data_plane_host or host
        self.batch_size = max(1, min(batch_size, BATCH_DELETE_LIMIT))
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep
        self._lock = threading.Lock()
        self._watchers = ThrottleWatchers()
        from .. import gcp_clients

        kwargs = self._client_kwargs(gcp_clients)
        # The data plane's token comes from the caller's credentials, else the control
        # plane's (anonymous for a loopback stand-in, else the default ones).
        credentials = self.options.credentials
        if credentials is None:
            credentials = kwargs["credentials"]
        self._access_token = gcp_clients.AccessToken(credentials)
        self._owns_client = client is None
        if client is None:
            from google.cloud import artifactregistry_v1

            client = artifactregistry_v1.ArtifactRegistryClient(**kwargs)
        self.client: Any = client
        self._data_plane: RegistryClient | None = None
        self._data_plane_password: str | None = None

    def _client_kwargs(self, gcp_clients: Any) -> dict[str, Any]:
        try:
            kwargs: dict[str, Any] = gcp_clients.client_kwargs(
                "artifactregistry", self.env, self.options.credentials
            )
        except Exception as exc:
            from google.auth.exceptions import DefaultCredentialsError

            if not isinstance(exc, DefaultCredentialsError):
                raise
            raise UsageError(
                f"{self.host} is Google Artifact Registry; no Google credentials found: {exc}",
                hint="run 'gcloud auth application-default login', or set "
                "GOOGLE_APPLICATION_CREDENTIALS",
            ) from None
        return kwargs

    def __repr__(self) -> str:
        return f"GarRegistry({self.host!r}, location={self.location!r})"

    # -- names ------------------------------------------------------------------------------

    def path(self, repository: str) -> GarPath:
        """`PROJECT/REPOSITORY/IMAGE` (gcr.io-style: `PROJECT/IMAGE`) as AR's resources."""
        parts = repository.split("/")
        if self.gcr_repository is not None:
            if len(parts) < 2 or not all(parts):
                raise UsageError(
                    f"GAR repository on {self.host}: got {repository!r}, expected PROJECT/IMAGE"
                )
            return GarPath(parts[0], self.location, self.gcr_repository, "/".join(parts[1:]))
        if len(parts) < 3 or not all(parts):
            raise UsageError(
                f"GAR repository on {self.host}: got {repository!r}, expected "
                "PROJECT/REPOSITORY/IMAGE"
            )
        return GarPath(parts[0], self.location, parts[1], "/".join(parts[2:]))

    def _project(self) -> str:
        from .. import gcp_clients

        project = self.options.account or gcp_clients.project_of(self.env)
        if not project:
            raise UsageError(
                f"listing {self.host} needs a Google Cloud project",
                hint="set GOOGLE_CLOUD_PROJECT (or the provider's account option)",
            )
        return project

    # -- control-plane plumbing ---------------------------------------------------------------

    @property
    def _rpc(self) -> dict[str, Any]:
        """Every control-plane call: no library retries (see `_call`), the deadline."""
        return {"retry": None, "timeout": self.options.deadline}

    def _notify(self, delay: float | None) -> None:
        self._watchers.notify(delay)

    def _call(self, what: str, thunk: Callable[[], _T]) -> _T:
        """One control-plane call (or a whole listing), retried on 429/503 after telling
        the throttling watchers (`call_throttled`); Google's errors become regwarden's."""
        from google.api_core import exceptions as gexc

        throttles = (gexc.TooManyRequests, gexc.ResourceExhausted, gexc.ServiceUnavailable)
        try:
            return call_throttled(
                thunk,
                throttled=lambda exc: isinstance(exc, throttles),
                watchers=self._watchers,
                sleep=self._sleep,
            )
        except gexc.GoogleAPICallError as exc:
            raise self._translate(exc, what) from exc
        except gexc.RetryError as exc:
            raise RegistryError(f"GAR {self.host}: {what}: {exc}") from exc
        except Exception as exc:
            from google.auth.exceptions import GoogleAuthError
            from requests import RequestException

            if isinstance(exc, GoogleAuthError):
                raise AuthError(
                    f"GAR {self.host}: {what}: {exc}",
                    hint="check the Google credentials (gcloud auth application-default "
                    "login, or the service account)",
                ) from exc
            if isinstance(exc, RequestException):
                raise RegistryError(f"GAR {self.host}: {what}: {exc}") from exc
            raise

    def _translate(self, exc: Any, what: str) -> RegistryError:
        from google.api_core import exceptions as gexc

        code = getattr(exc, "code", None)
        status = int(code) if isinstance(code, int) else None
        text = f"GAR {self.host}: {what}: {getattr(exc, 'message', None) or exc}"
        if isinstance(exc, gexc.NotFound):
            return NotFound(text, status=404)
        if isinstance(exc, gexc.PermissionDenied | gexc.Unauthenticated):
            return AuthError(
                text,
                status=status,
                hint="check the credentials' Artifact Registry role (reader to read, "
                "writer to tag, repoAdmin to delete)",
            )
        return RegistryError(text, status=status)

    def _pages(self, what: str, method: str, request: dict[str, Any]) -> list[Any]:
        """Every item of a listing, all pages read inside one `_call`."""
        return self._call(
            what, lambda: list(getattr(self.client, method)(request=request, **self._rpc))
        )

    # -- data plane ---------------------------------------------------------------------------

    def data_plane(self) -> RegistryClient:
        """The OCI client for `/v2/` with the current access token, rebuilt when the token
        changes (its bearer tokens were issued for the old one)."""
        password = self._access_token.get(now=self._clock())
        with self._lock:
            if self._data_plane is None or self._data_plane_password != password:
                if self._data_plane is not None:
                    self._data_plane.close()
                self._data_plane = self._make_data_plane(password)
                self._data_plane_password = password
            return self._data_plane

    def _make_data_plane(self, password: str | None) -> RegistryClient:
        from ..oci import Credentials

        creds = Credentials(username=_TOKEN_USER, password=password) if password else None
        allowed = (self.host, self.data_plane_host)
        client = pinned_client(self.data_plane_host, creds, self.options, allowed, self._watchers)
        if creds is not None:
            # Artifact Registry's `/v2/` challenges with its own `/v2/token`: the first read
            # carries a token rather than first drawing the 401
            client.expect_challenge(
                f'Bearer realm="{client.base_url}/v2/token",service="{self.host}"'
            )
        return client

    def _oci(self) -> Any:
        from .oci import OciRegistry

        return OciRegistry(self.host, self.options, client=self.data_plane())

    # -- reads --------------------------------------------------------------------------------

    def list_repositories(self) -> Iterator[str]:
        """`PROJECT/REPOSITORY/IMAGE` for every image in the project's Docker repositories
        in this location (options.account, else GOOGLE_CLOUD_PROJECT)."""
        from google.cloud import artifactregistry_v1

        project = self._project()
        parent = f"projects/{project}/locations/{self.location}"
        repositories = self._pages(
            f"list repositories in {parent}",
            "list_repositories",
            {"parent": parent, "page_size": _PAGE_SIZE},
        )
        docker = artifactregistry_v1.Repository.Format.DOCKER
        for repo in repositories:
            if repo.format_ != docker:
                continue
            repo_id = str(repo.name).rsplit("/", 1)[-1]
            packages = self._pages(
                f"list packages in {repo.name}",
                "list_packages",
                {"parent": repo.name, "page_size": _PAGE_SIZE},
            )
            prefix = project if self.gcr_repository == repo_id else f"{project}/{repo_id}"
            for package in packages:
                yield f"{prefix}/{unquote(str(package.name).rsplit('/', 1)[-1])}"

    def _docker_images(self, where: GarPath) -> list[Any]:
        """The repository's docker images that belong to `where`'s image."""
        try:
            images = self._pages(
                f"list images in {where.repository_name}",
                "list_docker_images",
                {"parent": where.repository_name, "page_size": _PAGE_SIZE},
            )
        except NotFound:  # no such repository: no images
            return []
        marker = f"/dockerImages/{where.image}@"
        return [i for i in images if marker in unquote(str(i.name))]

    def _record(self, repository: str, image: Any) -> ListedImage:
        digest = str(image.name).rsplit("@", 1)[-1]
        pushed = utc(image.upload_time)
        built = utc(image.build_time)
        return ListedImage(
            repository=repository,
            digest=digest,
            media_type=str(image.media_type or ""),
            tags=tuple(sorted(str(t) for t in image.tags)),
            size=int(image.image_size_bytes) if image.image_size_bytes else None,
            created=built or pushed,
            pushed=pushed,
            children=tuple(str(m.digest) for m in image.image_manifests),
            artifact_type=str(image.artifact_type) or None,
        )

    def list_images(self, repository: str) -> list[ListedImage]:
        """Every manifest of the image (untagged ones and an index's children included),
        newest upload first: `listDockerImages` pages of the AR repository."""
        where = self.path(repository)
        records = [self._record(repository, i) for i in self._docker_images(where)]
        return sorted(records, key=lambda r: (r.pushed is None, r.pushed), reverse=True)

    def resolve(self, repository: str, reference: str) -> str | None:
        """One HEAD on `/v2/`."""
        self.path(repository)
        desc = self.data_plane().head_manifest(repository, reference)
        return None if desc is None else desc.digest

    def tags_of(self, repository: str, digest: str) -> tuple[str, ...]:
        """`listTags` filtered on the version: the tags AR holds for `digest` now."""
        where = self.path(repository)
        try:
            tags = self._pages(
                f"tags of {repository}@{digest}",
                "list_tags",
                {
                    "parent": where.package,
                    "filter": f'version="{where.version(digest)}"',
                    "page_size": _PAGE_SIZE,
                },
            )
        except NotFound:  # no such package or repository
            return ()
        return tuple(sorted(str(t.name).rsplit("/tags/", 1)[-1] for t in tags))

    def index_children(self, repository: str) -> dict[str, tuple[str, ...]]:
        """Every index AR lists for the image (untagged ones included) → the digests its
        manifest lists, read and verified over `/v2/`."""
        where = self.path(repository)
        client = self.data_plane()
        out: dict[str, tuple[str, ...]] = {}
        for image in self._docker_images(where):
            if str(image.media_type) not in _INDEX_TYPES:
                continue
            digest = str(image.name).rsplit("@", 1)[-1]
            try:
                manifest = client.get_manifest(repository, digest)
            except NotFound:  # deleted since the listing
                continue
            out[digest] = tuple(c.digest for c in manifest.manifests)
        return out

    def image_details(self, repository: str, reference: str) -> ImageDetails:
        """The manifest, platforms, labels and config `created` over `/v2/`; tags, upload
        time and AR's size from `getDockerImage`."""
        where = self.path(repository)
        details: ImageDetails = self._oci().image_details(repository, reference)
        record = details.record
        name = (
            f"{where.repository_name}/dockerImages/{where.image.replace('/', '%2F')}"
            f"@{record.digest}"
        )
        try:
            image = self._call(
                f"get image {repository}@{record.digest}",
                lambda: self.client.get_docker_image(request={"name": name}, **self._rpc),
            )
        except NotFound:
            return details
        listed = self._record(repository, image)
        merged = ListedImage(
            repository=repository,
            digest=record.digest,
            media_type=record.media_type or listed.media_type,
            tags=listed.tags,
            size=listed.size if listed.size is not None else record.size,
            created=record.created or listed.created,
            pushed=listed.pushed,
            children=record.children or listed.children,
            subject=record.subject,
            artifact_type=record.artifact_type or listed.artifact_type,
        )
        return ImageDetails(
            record=merged,
            manifest=details.manifest,
            labels=details.labels,
            platforms=details.platforms,
            layer_count=details.layer_count,
            content=details.content,
        )

    # -- writes -------------------------------------------------------------------------------

    def add_tag(self, repository: str, digest: str, tag: str) -> None:
        """`createTag`; a tag that exists already is moved with `updateTag` (AR moves a
        tag by updating its version). Repeating it is a no-op."""
        from google.api_core import exceptions as gexc
        from google.cloud import artifactregistry_v1

        where = self.path(repository)
        try:
            validate_digest(digest)
        except InvalidReference as exc:
            raise UsageError(str(exc)) from None
        body = artifactregistry_v1.Tag(name=where.tag(tag), version=where.version(digest))

        def create() -> bool:
            try:
                self.client.create_tag(
                    request={"parent": where.package, "tag_id": tag, "tag": body}, **self._rpc
                )
            except gexc.Conflict:  # 409: ALREADY_EXISTS (AlreadyExists over gRPC)
                return False
            return True

        if self._call(f"tag {repository}@{digest} as {tag}", create):
            return
        mask = {"paths": ["version"]}
        self._call(
            f"move tag {repository}:{tag} to {digest}",
            lambda: self.client.update_tag(request={"tag": body, "update_mask": mask}, **self._rpc),
        )

    def remove_tag(self, repository: str, tag: str) -> None:
        """`deleteTag`: the image stays (AR never deletes an image with its last tag)."""
        where = self.path(repository)
        self._call(
            f"remove tag {repository}:{tag}",
            lambda: self.client.delete_tag(request={"name": where.tag(tag)}, **self._rpc),
        )

    def delete(self, repository: str, digest: str) -> None:
        """`deleteVersion` with `force` (its tags go with it), waiting for the operation."""
        where = self.path(repository)
        try:
            validate_digest(digest)
        except InvalidReference as exc:
            raise UsageError(str(exc)) from None

        def run() -> None:
            op = self.client.delete_version(
                request={"name": where.version(digest), "force": True}, **self._rpc
            )
            op.result(timeout=self.options.deadline)

        self._call(f"delete {repository}@{digest}", run)

    def delete_many(self, repository: str, digests: Iterable[str]) -> list[DeleteResult]:
        """`batchDeleteVersions` of up to `batch_size` versions per request, waiting for each
        operation; its `failedVersions` are `failed`. A batch still throttled after the
        retries is `throttled`; a batch AR refuses as NotFound (one of its versions is gone)
        is deleted one version at a time, so each missing one is `gone`."""
        where = self.path(repository)
        out: list[DeleteResult] = []
        wanted: list[str] = []
        for digest in dict.fromkeys(digests):
            try:
                wanted.append(validate_digest(digest))
            except InvalidReference as exc:
                out.append(DeleteResult(digest, "failed", f"invalid digest: {exc.reason}"))
        for batch in _chunks(wanted, self.batch_size):
            out.extend(self._delete_batch(repository, where, batch))
        return out

    def _delete_batch(
        self, repository: str, where: GarPath, batch: Sequence[str]
    ) -> list[DeleteResult]:
        names = {where.version(d): d for d in batch}

        def run() -> Any:
            op = self.client.batch_delete_versions(
                request={"parent": where.package, "names": list(names)}, **self._rpc
            )
            op.result(timeout=self.options.deadline)
            return op.metadata

        try:
            metadata = self._call(f"delete {len(batch)} versions of {repository}", run)
        except NotFound:
            return [self._delete_one(repository, d) for d in batch]
        except RegistryError as exc:
            status: DeleteStatus = "throttled" if exc.status in THROTTLE_STATUS else "failed"
            return [DeleteResult(d, status, str(exc)) for d in batch]
        failed = {str(v) for v in getattr(metadata, "failed_versions", None) or ()}
        return [
            DeleteResult(d, "failed", f"batchDeleteVersions reported {name} failed")
            if name in failed or d in failed
            else DeleteResult(d, "deleted")
            for name, d in names.items()
        ]

    def _delete_one(self, repository: str, digest: str) -> DeleteResult:
        try:
            self.delete(repository, digest)
        except NotFound as exc:
            return DeleteResult(digest, "gone", str(exc))
        except RegistryError as exc:
            status: DeleteStatus = "throttled" if exc.status in THROTTLE_STATUS else "failed"
            return DeleteResult(digest, status, str(exc))
        return DeleteResult(digest, "deleted")

    def watch_throttling(self, callback: Callable[[float | None], None]) -> Callable[[], None]:
        """`callback(delay)` on every 429/503 a control-plane call is retried after (`delay`:
        its Retry-After, else None) and every one the data plane's client retries."""
        return self._watchers.add(callback)

    # -- copies -------------------------------------------------------------------------------

    def copy(
        self,
        src_repository: str,
        reference: str,
        dst_repository: str,
        tag: str | None = None,
        *,
        manifest: Manifest | None = None,
    ) -> str:
        """Copy over `/v2/` (blobs mounted across repositories, else streamed). The
        destination must be in the source's project (`PROJECT/REPOSITORY/IMAGE`: a
        quarantine template is `PROJECT/quarantine/{repository}`, not the default
        `quarantine/{repository}`). With `options.create_repositories`, a missing AR
        repository is created (Docker format) and the copy runs again."""
        src, dst = self.path(src_repository), self._destination(src_repository, dst_repository)
        client = self.data_plane()

        def run() -> str:
            return client.copy_image(
                src_repository, reference, dst_repository, tag, manifest=manifest
            )

        try:
            return run()
        except NotFound:
            if not self._repository_missing(dst) or self._repository_missing(src):
                raise
            if not self.options.create_repositories:
                raise NotFound(
                    f"GAR {self.host}: repository {dst.repository_name} does not exist",
                    hint="create it, or let regwarden create it (create_repositories)",
                ) from None
        self.create_repository(dst)
        return run()

    def _destination(self, src_repository: str, dst_repository: str) -> GarPath:
        src = self.path(src_repository)
        try:
            dst = self.path(dst_repository)
        except UsageError:
            dst = None
        if dst is None or dst.project != src.project:
            fix = f"{src.project}/quarantine/{{repository}}"
            raise UsageError(
                f"GAR {self.host}: cannot copy {src_repository} to {dst_repository!r}: on GAR a "
                "repository path is PROJECT/REPOSITORY/IMAGE, so that destination "
                + (
                    f"is in project {dst.project!r}, not {src.project!r}"
                    if dst is not None
                    else "is not one"
                ),
                hint=f"name a repository in the project, e.g. the quarantine template {fix!r}",
            )
        if not _REPO_ID.match(dst.repository) and self.gcr_repository is None:
            raise UsageError(
                f"GAR {self.host}: {dst.repository!r} in {dst_repository!r} cannot be an "
                "Artifact Registry repository id (lower-case letters, digits and hyphens, "
                "starting with a letter)"
            )
        return dst

    def _repository_missing(self, where: GarPath) -> bool:
        try:
            self._call(
                f"get repository {where.repository_name}",
                lambda: self.client.get_repository(
                    request={"name": where.repository_name}, **self._rpc
                ),
            )
        except NotFound:
            return True
        return False

    def create_repository(self, where: GarPath) -> None:
        """Create the AR repository of `where` (Docker format, labelled `managed-by:
        regwarden`); one that exists already (a concurrent copy) is fine."""
        from google.api_core import exceptions as gexc
        from google.cloud import artifactregistry_v1

        repository = artifactregistry_v1.Repository(
            format_=artifactregistry_v1.Repository.Format.DOCKER,
            description="created by regwarden",
            labels={"managed-by": "regwarden"},
        )
        parent = f"projects/{where.project}/locations/{where.location}"

        def run() -> None:
            try:
                op = self.client.create_repository(
                    request={
                        "parent": parent,
                        "repository_id": where.repository,
                        "repository": repository,
                    },
                    **self._rpc,
                )
                op.result(timeout=self.options.deadline)
            except gexc.Conflict:  # 409: ALREADY_EXISTS (AlreadyExists over gRPC)
                pass

        self._call(f"create repository {where.repository_name}", run)

    def close(self) -> None:
        with self._lock:
            if self._data_plane is not None:
                self._data_plane.close()
                self._data_plane = None
        if self._owns_client:
            transport = getattr(self.client, "transport", None)
            close = getattr(transport, "close", None)
            if callable(close):
                close()


def make_gar(host: str, options: ProviderOptions) -> Registry:
    """Factory for `providers.register("gar")`: a `GarRegistry` with the caller's
    credentials (`options.credentials`) or the default ones, its data plane at
    `options.data_plane_host` when set."""
    if _google_missing():
        raise NotImplementedYet(
            f"{host} is Google Artifact Registry; its provider needs the 'gcp' extra",
            hint="pip install 'regwarden[gcp]'",
        )
    return GarRegistry(host, options)
