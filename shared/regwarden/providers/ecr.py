"""AWS ECR provider: the control plane through boto3, the data plane through the OCI client.

    registry = make_ecr("123456789012.dkr.ecr.us-east-1.amazonaws.com", ProviderOptions())
    for record in registry.list_images("payments/api"):
        print(record.digest, record.tags, record.pushed, record.last_pulled)

ECR keeps push and pull times and deletes single tags, so most of the `Registry` protocol is
one control-plane call. Only what ECR's API does not expose goes over `/v2/` (image config
blobs for labels, blob mounts for cross-repository copies), authenticated with a cached
`get_authorization_token`.

ECR's own words stay here: its error codes become regwarden's errors or neutral
`DeleteResult`s, its throttling answers reach `watch_throttling`'s callback (through a
botocore hook), and its scanner answers `native_scan` (through `scanning.ecr`'s helpers).

boto3 is imported lazily: this module imports without it, and `make_ecr` says which extra
to install when it is missing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from .. import USER_AGENT
from ..errors import (
    AuthError,
    DigestMismatch,
    InvalidReference,
    LimitExceeded,
    NotFound,
    NotImplementedYet,
    RegistryError,
    Unsupported,
    UsageError,
)
from ..reference import is_digest, short_digest, validate_digest
from ._base import (
    CAP_BATCH_DELETE,
    CAP_COPY_MOUNT,
    CAP_MANIFEST_LISTING,
    CAP_NATIVE_SCAN,
    CAP_PULL_TIMES,
    CAP_PUSH_TIMES,
    CAP_TAG_DELETE,
    DeleteResult,
    ImageDetails,
    ListedImage,
    Platform,
    Registry,
)

if TYPE_CHECKING:
    from ..model import ScanReport
    from ..oci import Credentials, Manifest, RegistryClient
    from . import ProviderOptions

__all__ = [
    "BATCH_CHECK_LIMIT",
    "BATCH_DELETE_LIMIT",
    "DESCRIBE_PAGE_SIZE",
    "GONE_CODES",
    "MANIFEST_MEDIA_TYPES",
    "THROTTLE_CODES",
    "BatchDeleteResult",
    "DeleteFailure",
    "EcrRegistry",
    "ImmutableTagError",
    "LastTagError",
    "make_ecr",
    "parse_ecr_host",
]

log = logging.getLogger("regwarden.providers.ecr")

DESCRIBE_PAGE_SIZE = 1000
"""`maxResults` for describe_images / describe_repositories (ECR's maximum)."""
BATCH_DELETE_LIMIT = 100
"""ECR's limit on `imageIds` per batch_delete_image / batch_get_image call."""
BATCH_CHECK_LIMIT = 100
"""ECR's limit on `layerDigests` per batch_check_layer_availability call."""
TOKEN_REFRESH_MARGIN = timedelta(minutes=5)
"""Renew the data-plane token this long before ECR says it expires."""

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
"""What batch_get_image accepts, so ECR never converts a manifest on the way out."""
_INDEX_TYPES = frozenset(MANIFEST_MEDIA_TYPES[1::2])
_IMAGE_CONFIG_SUFFIXES = ("image.config.v1+json", "container.image.v1+json")

_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?P<fips>-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)"
    r"\.amazonaws\.com(?P<cn>\.cn)?$"
)
_HOST_EXPECTED = "<12-digit account>.dkr.ecr.<region>.amazonaws.com"

_NOT_FOUND_CODES = frozenset(
    {"RepositoryNotFoundException", "ImageNotFoundException", "ScanNotFoundException"}
)
_AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "MissingAuthenticationTokenException",
    }
)
_ALREADY_EXISTS_CODES = frozenset({"ImageAlreadyExistsException", "ImageTagAlreadyExistsException"})
_REPOSITORY_EXISTS_CODES = frozenset({"RepositoryAlreadyExistsException"})
THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ThrottledException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
    }
)
"""AWS error codes that mean "slow down" (a delete failing so is `throttled`, not failed)."""
GONE_CODES = frozenset({"ImageNotFound", "ImageNotFoundException"})
"""batch_delete_image failure codes for a digest that is not there (a delete is `gone`)."""
_THROTTLE_HOOK_ID = "regwarden-throttle-watch"


def parse_ecr_host(host: str) -> tuple[str, str]:
    """`<account>.dkr.ecr.<region>.amazonaws.com` → (account, region); UsageError otherwise."""
    m = _HOST.match(host.lower())
    if m is None:
        raise UsageError(f"not an ECR registry host: got {host!r}, expected {_HOST_EXPECTED}")
    return m.group("account"), m.group("region")


class ImmutableTagError(Unsupported):
    """An IMMUTABLE repository refused to move a tag that already names another digest."""

    def __init__(self, *, repository: str, tag: str, wanted: str, existing: str | None) -> None:
        where = f"already points at {existing}" if existing else "already exists"
        super().__init__(
            f"cannot point tag {tag!r} in IMMUTABLE repository {repository!r} at {wanted}: "
            f"the tag {where}; expected a new tag name, or a MUTABLE repository",
            hint="ECR never moves a tag in an IMMUTABLE repository",
        )
        self.repository = repository
        self.tag = tag
        self.wanted = wanted
        self.existing = existing


class LastTagError(Unsupported):
    """Removing the image's only tag would make ECR delete the image itself."""

    def __init__(self, *, repository: str, tag: str, digest: str) -> None:
        super().__init__(
            f"refusing to remove tag {tag!r} from {repository}@{digest}: it is the image's last "
            "tag, and ECR deletes an image together with its last tag",
            hint=f"add another tag first (e.g. quarantined-{short_digest(digest)}), "
            "or pass allow_image_delete=True",
        )
        self.repository = repository
        self.tag = tag
        self.digest = digest


@dataclass(frozen=True, slots=True)
class DeleteFailure:
    """One digest that `delete_many` could not delete, with ECR's failure code."""

    digest: str
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class BatchDeleteResult:
    """What `delete_many` did: digests deleted and per-digest failures (never raised)."""

    deleted: tuple[str, ...]
    failures: tuple[DeleteFailure, ...]
    calls: int
    """batch_delete_image requests made (each with at most BATCH_DELETE_LIMIT ids)."""

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True, slots=True)
class _Token:
    credentials: Credentials
    expires_at: datetime


def _utc(value: object) -> datetime | None:
    """boto3 gives aware datetimes; tolerate epoch seconds and naive values (taken as UTC)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=UTC)
    return None


def _parse_rfc3339(value: object) -> datetime | None:
    """An image config's `created` (Go writes nanoseconds; Python takes microseconds)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    m = re.fullmatch(r"([^.]+)(?:\.(\d+))?(.*)", text)
    if m is None:  # pragma: no cover - the pattern matches any string
        return None
    head, fraction, zone = m.groups()
    text = head + (f".{fraction[:6]}" if fraction else "") + zone
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _image_id(reference: str) -> dict[str, str]:
    if is_digest(reference):
        try:
            return {"imageDigest": validate_digest(reference)}
        except InvalidReference as exc:
            raise UsageError(str(exc)) from None
    return {"imageTag": reference}


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _manifest_blobs(data: Mapping[str, Any]) -> list[str]:
    """Config and layer digests of an image manifest (foreign layers excluded)."""
    out: list[str] = []
    config = data.get("config")
    if isinstance(config, dict) and isinstance(config.get("digest"), str):
        out.append(config["digest"])
    for layer in data.get("layers") or []:
        if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
            continue
        media_type = str(layer.get("mediaType", ""))
        if "foreign" in media_type or "nondistributable" in media_type:
            continue
        out.append(layer["digest"])
    return list(dict.fromkeys(out))


def _boto3_missing() -> bool:
    try:
        return find_spec("boto3") is None
    except (ModuleNotFoundError, ValueError):  # a parent package is missing, or blocked
        return True


class EcrRegistry:
    """`Registry` for one ECR private registry (one account, one region).

    Control plane: boto3 `ecr` client (adaptive retries, 10 attempts, user agent extra
    `regwarden/<version>`). Data plane: `regwarden.oci.RegistryClient` against `/v2/`,
    authenticated as `AWS:<token>` from `get_authorization_token` (cached until expiry).
    Tests point `endpoint_url` at moto and `data_plane_host` (the keyword, else
    `options.data_plane_host`) at a local registry. With `options.create_repositories`,
    `copy` creates a missing destination repository first (ECR's put_image never does).
    """

    kind = "ecr"
    capabilities: frozenset[str] = frozenset(
        {
            CAP_TAG_DELETE,
            CAP_PUSH_TIMES,
            CAP_PULL_TIMES,
            CAP_MANIFEST_LISTING,
            CAP_BATCH_DELETE,
            CAP_NATIVE_SCAN,
            CAP_COPY_MOUNT,
        }
    )

    def __init__(
        self,
        host: str,
        options: ProviderOptions | None = None,
        *,
        ecr_client: Any = None,
        endpoint_url: str | None = None,
        data_plane_host: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        from . import ProviderOptions

        self.host = host
        self.registry_id, self.region = parse_ecr_host(host)
        self.options = options or ProviderOptions()
        self.data_plane_host = data_plane_host or self.options.data_plane_host or host
        self._clock = clock or (lambda: datetime.now(UTC))
        self._owns_client = ecr_client is None
        self.client: Any = ecr_client if ecr_client is not None else self._make_client(endpoint_url)
        from botocore.exceptions import BotoCoreError, ClientError

        self._client_error: type[Exception] = ClientError
        self._botocore_error: type[Exception] = BotoCoreError
        self._lock = threading.Lock()
        self._token: _Token | None = None
        self._data_plane: RegistryClient | None = None
        self._data_plane_creds: Credentials | None = None
        self._no_retry_client: Any = None

    def _make_client(self, endpoint_url: str | None, *, retries: bool = True) -> Any:
        from .. import botocore_config  # the process's session and clients

        mode, attempts = ("adaptive", 11) if retries else ("standard", 1)
        return botocore_config.client(
            "ecr", region=self.region, endpoint_url=endpoint_url, mode=mode, attempts=attempts
        )

    def __repr__(self) -> str:
        return f"EcrRegistry({self.host!r})"

    @property
    def no_retry_client(self) -> Any:
        """A second ECR client (same endpoint) without automatic retries, for calls whose
        error codes botocore mistakes for throttling: start_image_scan answers
        `LimitExceededException` for "already scanned today", which botocore's retry
        modes retry up to 10 times (about 70 s in adaptive mode) and count against the
        adaptive rate limiter of the main client."""
        with self._lock:
            if self._no_retry_client is None:
                endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", None)
                self._no_retry_client = self._make_client(endpoint, retries=False)
            return self._no_retry_client

    # -- plumbing --------------------------------------------------------------------------

    def _error_code(self, exc: BaseException) -> str | None:
        if isinstance(exc, self._client_error):
            response: Mapping[str, Any] = getattr(exc, "response", {}) or {}
            code = (response.get("Error") or {}).get("Code")
            return str(code) if code else None
        return None

    def _translate(self, exc: Exception, what: str) -> RegistryError:
        code = self._error_code(exc)
        if code is None:
            return RegistryError(f"ECR {self.host}: {what} failed: {exc}")
        response: Mapping[str, Any] = getattr(exc, "response", {}) or {}
        message = (response.get("Error") or {}).get("Message") or code
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        text = f"ECR {self.host}: {what}: {code}: {message}"
        if code in _NOT_FOUND_CODES:
            return NotFound(text, status=status)
        if code in _AUTH_CODES:
            return AuthError(text, status=status, hint="check the AWS credentials and IAM policy")
        return RegistryError(text, status=status)

    def _call(self, operation: str, what: str, **params: Any) -> dict[str, Any]:
        """One ECR API call; failures become the regwarden registry errors."""
        try:
            response: dict[str, Any] = getattr(self.client, operation)(**params)
        except (self._client_error, self._botocore_error) as exc:
            raise self._translate(exc, what) from exc
        return response

    def _call_or_code(
        self, operation: str, what: str, codes: frozenset[str], **params: Any
    ) -> tuple[dict[str, Any] | None, str | None]:
        """Like `_call`, but an error whose code is in `codes` is returned, not raised."""
        try:
            response: dict[str, Any] = getattr(self.client, operation)(**params)
        except (self._client_error, self._botocore_error) as exc:
            code = self._error_code(exc)
            if code in codes:
                return None, code
            raise self._translate(exc, what) from exc
        return response, None

    def _pages(self, operation: str, what: str, **params: Any) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator(operation)
        pages = paginator.paginate(
            registryId=self.registry_id,
            PaginationConfig={"PageSize": DESCRIBE_PAGE_SIZE},
            **params,
        )
        try:
            yield from pages
        except (self._client_error, self._botocore_error) as exc:
            raise self._translate(exc, what) from exc

    # -- data plane credentials -------------------------------------------------------------

    def get_authorization_token(self) -> Credentials:
        """Data-plane credentials (`AWS` + token), cached until shortly before they expire."""
        from ..oci import Credentials

        with self._lock:
            now = self._clock()
            token = self._token
            if token is not None and now < token.expires_at - TOKEN_REFRESH_MARGIN:
                return token.credentials
            response = self._call("get_authorization_token", "get authorization token")
            data = response.get("authorizationData") or []
            if not data:
                raise AuthError(
                    f"ECR {self.host}: get authorization token returned no authorizationData"
                )
            entry = data[0]
            try:
                decoded = base64.b64decode(str(entry["authorizationToken"]), validate=True)
                user, sep, password = decoded.decode("utf-8").partition(":")
            except (KeyError, binascii.Error, UnicodeDecodeError):
                user, sep, password = "", "", ""
            if not sep or not user or not password:
                raise AuthError(
                    f"ECR {self.host}: malformed authorization token: expected base64 of "
                    "'AWS:<password>'"
                )
            expires = _utc(entry.get("expiresAt")) or now + timedelta(hours=12)
            creds = Credentials(username=user, password=password)
            self._token = _Token(credentials=creds, expires_at=expires)
            return creds

    def data_plane(self) -> RegistryClient:
        """The OCI client for `/v2/` on this registry (or `data_plane_host`), with fresh auth."""
        creds = self.get_authorization_token()
        with self._lock:
            if self._data_plane is None or self._data_plane_creds != creds:
                from ..oci import RegistryClient

                if self._data_plane is not None:
                    self._data_plane.close()
                self._data_plane = RegistryClient(
                    self.data_plane_host,
                    credentials=creds,
                    insecure=self.options.insecure,
                    deadline=self.options.deadline,
                    blob_deadline=self.options.blob_deadline,
                    max_index_children=self.options.max_index_children,
                )
                # ECR's `/v2/` asks for Basic with the authorization token's user and
                # password: sent from the first read instead of after its 401
                self._data_plane.expect_challenge('Basic realm="ecr"')
                self._data_plane_creds = creds
            return self._data_plane

    # -- repository settings ------------------------------------------------------------------

    def _repository(self, repository: str) -> dict[str, Any]:
        response = self._call(
            "describe_repositories",
            f"describe repository {repository!r}",
            registryId=self.registry_id,
            repositoryNames=[repository],
        )
        repos = response.get("repositories") or []
        if not repos:
            raise NotFound(f"ECR {self.host}: repository {repository!r} not found")
        repo: dict[str, Any] = repos[0]
        return repo

    def repository_mutability(self, repository: str) -> str:
        """`MUTABLE`, `IMMUTABLE` (or their `_WITH_EXCLUSION` variants) as ECR reports it."""
        return str(self._repository(repository).get("imageTagMutability") or "MUTABLE")

    def scan_on_push(self, repository: str) -> bool:
        """True when ECR scans new images in `repository` by itself (no start_image_scan).

        Registry-level scanning rules (scan frequency SCAN_ON_PUSH or CONTINUOUS_SCAN)
        override the repository's legacy `imageScanningConfiguration.scanOnPush`; either
        one saying so is enough.
        """
        response = self._call(
            "batch_get_repository_scanning_configuration",
            f"scanning configuration of {repository!r}",
            repositoryNames=[repository],
        )
        for config in response.get("scanningConfigurations") or []:
            if config.get("repositoryName") != repository:
                continue
            if config.get("scanOnPush") or config.get("scanFrequency") in (
                "SCAN_ON_PUSH",
                "CONTINUOUS_SCAN",
            ):
                return True
        legacy = self._repository(repository).get("imageScanningConfiguration") or {}
        return bool(legacy.get("scanOnPush"))

    # -- reads --------------------------------------------------------------------------------

    def list_repositories(self) -> Iterator[str]:
        for page in self._pages("describe_repositories", "list repositories"):
            for repo in page.get("repositories") or []:
                yield str(repo["repositoryName"])

    def list_images(self, repository: str) -> list[ListedImage]:
        """Every image in `repository` (newest push first): one describe_images page per
        1000 images, plus one batch_get_image per 100 indexes to list their children."""
        details: list[dict[str, Any]] = []
        for page in self._pages(
            "describe_images", f"list images in {repository!r}", repositoryName=repository
        ):
            details.extend(page.get("imageDetails") or [])
        indexes = [
            str(d["imageDigest"])
            for d in details
            if d.get("imageManifestMediaType") in _INDEX_TYPES
        ]
        children = self._children(repository, indexes)
        records = [self._record(repository, d, children) for d in details]
        return sorted(records, key=lambda r: (r.pushed is None, r.pushed), reverse=True)

    def _record(
        self,
        repository: str,
        detail: Mapping[str, Any],
        children: Mapping[str, tuple[str, ...]] | None = None,
    ) -> ListedImage:
        digest = str(detail["imageDigest"])
        pushed = _utc(detail.get("imagePushedAt"))
        size = detail.get("imageSizeInBytes")
        return ListedImage(
            repository=repository,
            digest=digest,
            media_type=str(detail.get("imageManifestMediaType") or ""),
            tags=tuple(sorted(detail.get("imageTags") or ())),
            size=int(size) if isinstance(size, int) else None,
            created=pushed,
            pushed=pushed,
            last_pulled=_utc(detail.get("lastRecordedPullTime")),
            children=(children or {}).get(digest, ()),
            artifact_type=detail.get("artifactMediaType"),
        )

    def _children(self, repository: str, indexes: Sequence[str]) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for batch in _chunks(indexes, BATCH_DELETE_LIMIT):
            for image in self._batch_get(repository, [{"imageDigest": d} for d in batch]):
                data = json.loads(image["imageManifest"])
                out[str(image["imageId"]["imageDigest"])] = tuple(
                    str(m["digest"]) for m in data.get("manifests") or [] if isinstance(m, dict)
                )
        return out

    def _batch_get(
        self, repository: str, image_ids: list[dict[str, str]], *, strict: bool = False
    ) -> list[dict[str, Any]]:
        response = self._call(
            "batch_get_image",
            f"get manifests from {repository!r}",
            registryId=self.registry_id,
            repositoryName=repository,
            imageIds=image_ids,
            acceptedMediaTypes=list(MANIFEST_MEDIA_TYPES),
        )
        failures = response.get("failures") or []
        if strict and failures:
            failure = failures[0]
            code = str(failure.get("failureCode", ""))
            reason = failure.get("failureReason", code)
            wanted = image_ids[0].get("imageDigest") or image_ids[0].get("imageTag")
            error = NotFound if code in ("ImageNotFound", "ImageTagDoesNotMatchDigest") else None
            message = f"ECR {self.host}: {repository}:{wanted}: {code}: {reason}"
            raise (error or RegistryError)(message)
        images: list[dict[str, Any]] = response.get("images") or []
        return images

    def _manifest(self, repository: str, reference: str) -> tuple[str, bytes, str]:
        """(digest, raw manifest, media type), with the digest checked against the bytes."""
        images = self._batch_get(repository, [_image_id(reference)], strict=True)
        if not images:
            raise NotFound(f"ECR {self.host}: {repository}:{reference} not found")
        image = images[0]
        raw = str(image["imageManifest"]).encode("utf-8")
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        stated = str((image.get("imageId") or {}).get("imageDigest") or computed)
        expected = reference if is_digest(reference) else stated
        if computed != expected:
            raise DigestMismatch(
                expected=expected, got=computed, what=f"manifest {repository}:{reference}"
            )
        media_type = image.get("imageManifestMediaType")
        if not media_type:
            media_type = json.loads(raw).get("mediaType") or MANIFEST_MEDIA_TYPES[0]
        return computed, raw, str(media_type)

    def _describe(self, repository: str, image_ids: list[dict[str, str]]) -> list[dict[str, Any]]:
        response, _ = self._call_or_code(
            "describe_images",
            f"describe images in {repository!r}",
            frozenset({"ImageNotFoundException"}),
            registryId=self.registry_id,
            repositoryName=repository,
            imageIds=image_ids,
        )
        if response is None:
            return []
        images: list[dict[str, Any]] = response.get("imageDetails") or []
        return images

    def resolve(self, repository: str, reference: str) -> str | None:
        try:
            found = self._describe(repository, [_image_id(reference)])
        except NotFound:  # the repository itself is absent
            return None
        return str(found[0]["imageDigest"]) if found else None

    def tags_of(self, repository: str, digest: str) -> tuple[str, ...]:
        """One describe_images by digest: ECR keeps the tags with the image (`imageTags`)."""
        try:
            found = self._describe(repository, [_image_id(digest)])
        except NotFound:  # the repository itself is absent
            return ()
        return tuple(sorted(str(t) for d in found for t in d.get("imageTags") or ()))

    def index_children(self, repository: str) -> dict[str, tuple[str, ...]]:
        """ECR lists every manifest, tagged or not: describe_images pages, then one
        batch_get_image per 100 indexes."""
        indexes: list[str] = []
        try:
            for page in self._pages(
                "describe_images", f"list images in {repository!r}", repositoryName=repository
            ):
                indexes.extend(
                    str(d["imageDigest"])
                    for d in page.get("imageDetails") or []
                    if d.get("imageManifestMediaType") in _INDEX_TYPES
                )
        except NotFound:
            return {}
        return self._children(repository, indexes)

    def image_details(self, repository: str, reference: str) -> ImageDetails:
        from ..oci import IndexLimits, Manifest, distinct_children  # lazy: no httpx at import

        digest, raw, media_type = self._manifest(repository, reference)
        data: dict[str, Any] = json.loads(raw)
        content = Manifest(digest=digest, media_type=media_type, raw=raw, data=data)
        described = self._describe(repository, [{"imageDigest": digest}])
        detail: dict[str, Any] = described[0] if described else {"imageDigest": digest}
        detail.setdefault("imageManifestMediaType", media_type)
        platforms: list[Platform] = []
        labels: dict[str, str] = {}
        created: datetime | None = None
        layer_count = 0
        children: dict[str, tuple[str, ...]] = {}
        if media_type in _INDEX_TYPES or "manifests" in data:
            limits = IndexLimits(max_children=self.options.max_index_children)
            listed = distinct_children(content, limits)  # each child once, within the limit
            entries = [d.to_dict() for d in listed]
            digests = [d.digest for d in listed]
            children[digest] = tuple(digests)
            sizes: dict[str, int] = {}
            nested = any(d.media_type in _INDEX_TYPES for d in listed)
            for batch in _chunks(digests, BATCH_DELETE_LIMIT):
                for d in self._describe(repository, [{"imageDigest": x} for x in batch]):
                    sizes[str(d["imageDigest"])] = int(d.get("imageSizeInBytes") or 0)
                    nested = nested or d.get("imageManifestMediaType") in _INDEX_TYPES
            if nested:  # an index of indexes: check the whole tree before anyone acts on it
                self._tree(repository, content)
            for entry in entries:
                plat: Mapping[str, Any] = entry.get("platform") or {}
                platforms.append(
                    Platform(
                        os=str(plat.get("os", "unknown")),
                        architecture=str(plat.get("architecture", "unknown")),
                        variant=plat.get("variant"),
                        digest=str(entry["digest"]),
                        size=sizes.get(str(entry["digest"]), int(entry.get("size") or 0)),
                    )
                )
            if entries and "imageSizeInBytes" not in detail:
                detail["imageSizeInBytes"] = sum(p.size for p in platforms)
            first = next((p for p in platforms if p.os != "unknown"), None)
            if first is not None:
                _, child_raw, _ = self._manifest(repository, first.digest)
                child = json.loads(child_raw)
                layer_count = len(child.get("layers") or [])
                labels, created = self._config_facts(repository, child)
        else:
            layer_count = len(data.get("layers") or [])
            labels, created = self._config_facts(repository, data)
        record = self._record(repository, detail, children)
        subject = data.get("subject")
        record = ListedImage(
            repository=record.repository,
            digest=record.digest,
            media_type=record.media_type,
            tags=record.tags,
            size=record.size,
            created=created or record.created,
            pushed=record.pushed,
            last_pulled=record.last_pulled,
            children=record.children,
            subject=str(subject["digest"]) if isinstance(subject, dict) else None,
            artifact_type=data.get("artifactType")
            or (data.get("config") or {}).get("mediaType")
            or record.artifact_type,
        )
        return ImageDetails(
            record=record,
            manifest=data,
            labels=labels,
            platforms=tuple(platforms),
            layer_count=layer_count,
            content=content,
        )

    def _tree(self, repository: str, root: Manifest) -> dict[str, Manifest]:
        """Every manifest below `root`, read once each; LimitExceeded past the limits
        (nesting, children, bytes: `oci.walk_index`), before anything is written."""
        from ..oci import IndexLimits, Manifest, walk_index

        def fetch(digest: str) -> Manifest:
            found, raw, media_type = self._manifest(repository, digest)
            return Manifest.parse(raw, media_type=media_type, digest=found)

        limits = IndexLimits(max_children=self.options.max_index_children)
        return walk_index(root, fetch, limits)

    def _config_facts(
        self, repository: str, manifest: Mapping[str, Any]
    ) -> tuple[dict[str, str], datetime | None]:
        """Labels and `created` from the image config blob (data plane); empty for artifacts
        and when the data plane cannot be read (logged, never fatal: these are facts for
        display and hygiene checks, not verification)."""
        config = manifest.get("config") or {}
        if not str(config.get("mediaType", "")).endswith(_IMAGE_CONFIG_SUFFIXES):
            return {}, None
        from ..oci import MAX_CONFIG_BYTES

        try:
            blob = self.data_plane().get_blob(
                repository, str(config["digest"]), max_bytes=MAX_CONFIG_BYTES
            )
            doc = json.loads(blob)
        except LimitExceeded:
            raise  # refused content is an ERROR verdict, not a missing fact
        except (RegistryError, ValueError, KeyError) as exc:
            log.info("no image config for %s/%s: %s", self.host, repository, exc)
            return {}, None
        if not isinstance(doc, dict):
            return {}, None
        raw_labels = (doc.get("config") or {}).get("Labels") or {}
        labels = (
            {str(k): str(v) for k, v in raw_labels.items()} if isinstance(raw_labels, dict) else {}
        )
        return labels, _parse_rfc3339(doc.get("created"))

    # -- writes -------------------------------------------------------------------------------

    def _put(
        self, repository: str, digest: str, raw: bytes, media_type: str, tag: str | None
    ) -> None:
        """put_image; "already exists" is success when `tag` already names `digest`."""
        params: dict[str, Any] = {
            "registryId": self.registry_id,
            "repositoryName": repository,
            "imageManifest": raw.decode("utf-8"),
            "imageManifestMediaType": media_type,
            "imageDigest": digest,
        }
        if tag is not None:
            params["imageTag"] = tag
        target = f"{repository}:{tag}" if tag else f"{repository}@{digest}"
        _, code = self._call_or_code("put_image", f"put {target}", _ALREADY_EXISTS_CODES, **params)
        if code is None or tag is None:
            return
        # Same manifest and tag (idempotent repeat), or an IMMUTABLE repository refusing to
        # move the tag: ask ECR where the tag points now.
        current = self.resolve(repository, tag)
        if current == digest:
            return
        raise ImmutableTagError(repository=repository, tag=tag, wanted=digest, existing=current)

    def add_tag(self, repository: str, digest: str, tag: str) -> None:
        """Point `tag` at `digest`: batch_get_image, then put_image of the same manifest.

        Repeating it is a no-op. In an IMMUTABLE repository a tag that names another digest
        raises `ImmutableTagError`.
        """
        got, raw, media_type = self._manifest(repository, digest)
        self._put(repository, got, raw, media_type, tag)

    def remove_tag(self, repository: str, tag: str, *, allow_image_delete: bool = False) -> None:
        """Remove one tag with batch_delete_image, leaving the image.

        ECR deletes an image together with its LAST tag. So when `tag` is the image's only
        tag this raises `LastTagError` and changes nothing, unless `allow_image_delete`.
        Callers that untag (quarantine `retag`) must therefore add the replacement tag
        first (`quarantined-<short digest>`) and remove the deployable tags after: caller
        order matters. The check and the delete are two calls; a concurrent untag between
        them can still leave the image untagged-and-deleted, as with any ECR client.
        """
        found = self._describe(repository, [{"imageTag": tag}])
        if not found:
            raise NotFound(f"ECR {self.host}: tag {repository}:{tag} not found")
        digest = str(found[0]["imageDigest"])
        tags = set(found[0].get("imageTags") or ())
        if tags <= {tag} and not allow_image_delete:
            raise LastTagError(repository=repository, tag=tag, digest=digest)
        response = self._call(
            "batch_delete_image",
            f"remove tag {repository}:{tag}",
            registryId=self.registry_id,
            repositoryName=repository,
            imageIds=[{"imageTag": tag}],
        )
        failures = response.get("failures") or []
        if failures:
            code = str(failures[0].get("failureCode", ""))
            reason = failures[0].get("failureReason", code)
            error = NotFound if code == "ImageNotFound" else RegistryError
            raise error(f"ECR {self.host}: remove tag {repository}:{tag}: {code}: {reason}")

    def delete(self, repository: str, digest: str) -> None:
        """Delete the image `digest` (and every tag on it)."""
        result = self.batch_delete(repository, [digest])
        if result.failures:
            failure = result.failures[0]
            error = NotFound if failure.code == "ImageNotFound" else RegistryError
            raise error(
                f"ECR {self.host}: delete {repository}@{digest}: {failure.code}: {failure.reason}"
            )

    def delete_many(self, repository: str, digests: Iterable[str]) -> list[DeleteResult]:
        """`batch_delete` in the provider-neutral words: deleted digests first, then the
        failures in ECR's order; ECR's "not found" codes are `gone`, its throttling codes
        `throttled`, anything else `failed`. A reason reads `<ECR code>: <ECR reason>`."""
        result = self.batch_delete(repository, digests)
        out = [DeleteResult(d, "deleted") for d in result.deleted]
        for failure in result.failures:
            reason = f"{failure.code}: {failure.reason}"
            if failure.code in GONE_CODES:
                out.append(DeleteResult(failure.digest, "gone", reason))
            elif failure.code in THROTTLE_CODES:
                out.append(DeleteResult(failure.digest, "throttled", reason))
            else:
                out.append(DeleteResult(failure.digest, "failed", reason))
        return out

    def batch_delete(self, repository: str, digests: Iterable[str]) -> BatchDeleteResult:
        """Delete images by digest in batches of 100; per-digest failures are returned.

        Malformed digests fail locally (code `InvalidImageDigest`) without a request.
        Repeats are dropped. A whole batch that fails (throttling after retries, access
        denied) marks each of its digests failed with the error code; later batches still
        run.
        """
        wanted: list[str] = []
        failures: list[DeleteFailure] = []
        for digest in dict.fromkeys(digests):
            try:
                wanted.append(validate_digest(digest))
            except InvalidReference as exc:
                failures.append(DeleteFailure(digest, "InvalidImageDigest", exc.reason))
        deleted: list[str] = []
        calls = 0
        for batch in _chunks(wanted, BATCH_DELETE_LIMIT):
            calls += 1
            try:
                response = self._call(
                    "batch_delete_image",
                    f"delete {len(batch)} images from {repository!r}",
                    registryId=self.registry_id,
                    repositoryName=repository,
                    imageIds=[{"imageDigest": d} for d in batch],
                )
            except RegistryError as exc:
                cause = exc.__cause__
                code = (self._error_code(cause) if cause else None) or type(exc).__name__
                failures.extend(DeleteFailure(d, code, str(exc)) for d in batch)
                continue
            done = {str(i.get("imageDigest")) for i in response.get("imageIds") or []}
            failed: set[str] = set()
            for failure in response.get("failures") or []:
                d = str((failure.get("imageId") or {}).get("imageDigest", ""))
                failed.add(d)
                failures.append(
                    DeleteFailure(
                        d,
                        str(failure.get("failureCode", "Unknown")),
                        str(failure.get("failureReason", "")),
                    )
                )
            for d in batch:
                if d in failed:
                    continue
                if d in done:
                    deleted.append(d)
                else:
                    failures.append(DeleteFailure(d, "NotReported", "ECR reported neither"))
        return BatchDeleteResult(deleted=tuple(deleted), failures=tuple(failures), calls=calls)

    def copy(
        self,
        src_repository: str,
        reference: str,
        dst_repository: str,
        tag: str | None = None,
        *,
        manifest: Manifest | None = None,
    ) -> str:
        """Copy an image (an index's children first) into another repository of this registry.

        Strategy: manifests move on the control plane, blobs on the data plane. For each
        manifest, batch_check_layer_availability asks which config/layer blobs the
        destination lacks; only those are cross-repository mounted over `/v2/` (ECR
        supports blob mounts within one registry; the OCI client falls back to download +
        upload), then put_image stores the exact manifest bytes under its digest, so the
        digest never changes. A copy that already happened is confirmed without writes
        beyond the idempotent put_image. The destination is tagged `tag`, else the
        source tag when `reference` is a tag, else stored by digest only. `manifest` (the
        digest-verified manifest of `reference`) saves a BatchGetImage. With
        `options.create_repositories`, a missing destination is created, then the copy
        runs again (a missing source stays NotFound).
        """
        if not self.options.create_repositories:
            return self._copy(src_repository, reference, dst_repository, tag, manifest)
        try:
            return self._copy(src_repository, reference, dst_repository, tag, manifest)
        except NotFound:
            try:
                self._repository(dst_repository)
            except NotFound:
                pass  # the destination is what is missing: create it below
            else:
                raise  # the source is missing: nothing to copy
        self.create_repository(dst_repository)
        return self._copy(src_repository, reference, dst_repository, tag, manifest)

    def create_repository(self, repository: str) -> None:
        """Create `repository` as regwarden's (MUTABLE, so a release can re-tag; encrypted;
        tagged `managed-by`); one that exists already (a concurrent copy) is fine."""
        self._call_or_code(
            "create_repository",
            f"create repository {repository!r}",
            _REPOSITORY_EXISTS_CODES,
            registryId=self.registry_id,
            repositoryName=repository,
            imageTagMutability="MUTABLE",
            encryptionConfiguration={"encryptionType": "AES256"},
            tags=[{"Key": "managed-by", "Value": USER_AGENT.split("/")[0]}],
        )

    def _copy(
        self,
        src_repository: str,
        reference: str,
        dst_repository: str,
        tag: str | None,
        manifest: Manifest | None,
    ) -> str:
        from ..oci import Manifest

        if manifest is None or manifest.digest != reference:
            digest, raw, media_type = self._manifest(src_repository, reference)
            manifest = Manifest.parse(raw, media_type=media_type, digest=digest)
        # An index's whole tree is read and checked before the first write.
        tree = self._tree(src_repository, manifest)
        self._copy_children(src_repository, dst_repository, manifest.data, tree, set())
        target = tag or (None if is_digest(reference) else reference)
        self._put(dst_repository, manifest.digest, manifest.raw, manifest.media_type, target)
        return manifest.digest

    def _copy_children(
        self,
        src: str,
        dst: str,
        data: Mapping[str, Any],
        tree: Mapping[str, Manifest],
        done: set[str],
    ) -> None:
        """Children before their index, each once; as deep as the checked tree."""
        manifests = [m for m in data.get("manifests") or [] if isinstance(m, dict)]
        if manifests:
            digests = list(dict.fromkeys(str(m["digest"]) for m in manifests))
            present = {
                str(d["imageDigest"])
                for batch in _chunks(digests, BATCH_DELETE_LIMIT)
                for d in self._describe(dst, [{"imageDigest": x} for x in batch])
            }
            for child in digests:
                if child in present or child in done:
                    continue  # a stored manifest implies its blobs are there
                done.add(child)
                sub = tree[child]
                self._copy_children(src, dst, sub.data, tree, done)
                self._put(dst, sub.digest, sub.raw, sub.media_type, None)
            return
        missing = self.missing_blobs(dst, _manifest_blobs(data))
        if missing:
            client = self.data_plane()
            for blob in missing:
                client.copy_blob(src, dst, blob)

    def missing_blobs(self, repository: str, digests: Sequence[str]) -> list[str]:
        """The blobs of `digests` that `repository` does not have (batch_check_layer_availability,
        100 per call)."""
        missing: list[str] = []
        for batch in _chunks(list(digests), BATCH_CHECK_LIMIT):
            response = self._call(
                "batch_check_layer_availability",
                f"check blobs in {repository!r}",
                registryId=self.registry_id,
                repositoryName=repository,
                layerDigests=list(batch),
            )
            available = {
                str(layer["layerDigest"])
                for layer in response.get("layers") or []
                if layer.get("layerAvailability") == "AVAILABLE"
            }
            missing.extend(d for d in batch if d not in available)
        return missing

    # -- throttling and scans ------------------------------------------------------------------

    def watch_throttling(self, callback: Callable[[float | None], None]) -> Callable[[], None]:
        """Hooks botocore's `needs-retry` on the control-plane client: each throttling
        answer it is about to retry on its own (an AWS throttling code, or HTTP 429) calls
        `callback(None)` (AWS sends no Retry-After). The data plane is not watched: ECR
        deletes on the control plane, and opening it costs a token call."""
        events = self.client.meta.events

        def needs_retry(response: Any = None, **_: Any) -> None:
            if not isinstance(response, tuple) or len(response) != 2:
                return  # no response at all (a connection error): not throttling
            http, parsed = response
            code = ((parsed or {}).get("Error") or {}).get("Code")
            if code in THROTTLE_CODES or getattr(http, "status_code", None) == 429:
                callback(None)

        # unique per call, so two watchers (two applies on one registry) never replace
        # each other
        hook_id = f"{_THROTTLE_HOOK_ID}-{id(needs_retry)}"
        events.register_first("needs-retry.ecr", needs_retry, unique_id=hook_id)

        def undo() -> None:
            events.unregister("needs-retry.ecr", unique_id=hook_id)

        return undo

    def native_scan(
        self,
        repository: str,
        digest: str,
        *,
        start: bool = True,
        inspector: Any = None,
        name: str | None = None,
    ) -> ScanReport | None:
        """ECR's scan of `digest`, through `scanning.ecr`'s helpers:

        - no scan yet (`ScanNotFoundException`): with `start`, when the repository does not
          scan on push, start one (on the client without retries: see `no_retry_client`);
          None either way, so the gate says PENDING
        - IN_PROGRESS / PENDING: None
        - COMPLETE / ACTIVE: the report; with `inspector` (an inspector2 client) and an
          enhanced scan, the findings come from Inspector's list_findings instead
        - anything else (FAILED, UNSUPPORTED_IMAGE, …): raises `EcrScanFailed`
        """
        from ..scanning import ScanStatus
        from ..scanning.ecr import (
            SCANNER_ENHANCED,
            EcrScanFailed,
            describe_image_scan,
            list_inspector_findings,
            start_image_scan,
        )

        result = describe_image_scan(self.client, repository, digest, registry_id=self.registry_id)
        if result is None:
            if start and not self.scan_on_push(repository):
                start_image_scan(
                    self.no_retry_client, repository, digest, registry_id=self.registry_id
                )
            return None
        if result.status is ScanStatus.PENDING:
            return None
        if result.status is not ScanStatus.SUCCEEDED or result.report is None:
            raise EcrScanFailed(result, image=name or f"{self.host}/{repository}@{digest}")
        if inspector is not None and SCANNER_ENHANCED in result.report.scanner:
            report = list_inspector_findings(
                inspector, repository, digest, account_id=self.registry_id
            )
            if report.scanned_at is None:
                report = report.model_copy(update={"scanned_at": result.report.scanned_at})
            return report
        return result.report

    def close(self) -> None:
        with self._lock:
            if self._data_plane is not None:
                self._data_plane.close()
                self._data_plane = None
        clients = [self._no_retry_client] + ([self.client] if self._owns_client else [])
        self._no_retry_client = None
        for client in clients:
            close = getattr(client, "close", None)
            if callable(close):
                close()


def make_ecr(host: str, options: ProviderOptions) -> Registry:
    """Factory for `providers.register("ecr")`: an `EcrRegistry` using the default AWS
    credential chain (the endpoint follows boto3's own `AWS_ENDPOINT_URL_ECR`), its data
    plane at `options.data_plane_host` when set."""
    if _boto3_missing():
        raise NotImplementedYet(
            f"{host} is AWS ECR; its provider needs boto3 from the 'aws' extra",
            hint="pip install 'regwarden[aws]'",
        )
    return EcrRegistry(host, options)
