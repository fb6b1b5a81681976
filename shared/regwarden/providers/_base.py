"""The provider protocol every registry implementation satisfies, and the records it returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..model import ScanReport
    from ..oci import Manifest, RegistryClient


@dataclass(frozen=True, slots=True)
class Platform:
    """One child of a multi-platform index."""

    os: str
    architecture: str
    variant: str | None
    digest: str
    size: int

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


@dataclass(frozen=True, slots=True)
class ListedImage:
    """One image (a manifest or an index) in a repository, with every tag that points at it."""

    repository: str
    digest: str
    media_type: str
    tags: tuple[str, ...] = ()
    size: int | None = None
    """Total compressed size in bytes: config + layers (summed over children for an index)."""
    created: datetime | None = None
    """The image config's `created`, or the registry's push time where it keeps one."""
    pushed: datetime | None = None
    last_pulled: datetime | None = None
    children: tuple[str, ...] = ()
    subject: str | None = None
    artifact_type: str | None = None
    locked: bool = False
    """The registry refuses to delete it (ACR: `deleteEnabled` false): retention keeps and
    reports it."""


@dataclass(frozen=True, slots=True)
class ImageDetails:
    """Everything `images`/`check` show about one image."""

    record: ListedImage
    manifest: dict[str, object]
    labels: dict[str, str] = field(default_factory=dict)
    platforms: tuple[Platform, ...] = ()
    layer_count: int = 0
    content: Manifest | None = field(default=None, repr=False)
    """The manifest as fetched and digest-verified, when the provider read it over OCI:
    callers pass it on rather than fetching it again."""


CAP_TAG_DELETE = "tag-delete"
CAP_LOCK = "lock"
CAP_PUSH_TIMES = "push-times"
CAP_PULL_TIMES = "pull-times"
CAP_MANIFEST_LISTING = "manifest-listing"
"""`list_images` lists every manifest, untagged ones included (ECR). Without it (the
Distribution API lists tags only), retention adds the digests the ledger knows."""
CAP_BATCH_DELETE = "batch-delete"
"""`delete_many` deletes many digests per request (ECR: 100 per BatchDeleteImage)."""
CAP_REFERRERS_API = "referrers-api"
"""Retention asks the data plane's referrers API for the referrers the listing cannot
show (a tag listing omits untagged signatures and SBOMs); a registry that lists every
manifest has no need of it."""
CAP_NATIVE_SCAN = "native-scan"
"""The registry runs its own vulnerability scanner: the provider is a `NativeScanner`."""
CAP_COPY_MOUNT = "copy-mount"
"""`copy` asks the registry to mount blobs across repositories rather than re-upload
them (re-uploading only where a mount is refused)."""

THROTTLE_STATUS = frozenset({429, 503})
"""HTTP statuses that mean "slow down" on any registry's API."""

DeleteStatus = Literal["deleted", "gone", "throttled", "failed"]


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """What became of one digest in `delete_many`, in words every provider shares:
    `deleted`; `gone` (already absent); `throttled` (refused for now: worth asking again
    later); `failed` (`reason` says why, in the registry's own terms)."""

    digest: str
    status: DeleteStatus
    reason: str = ""


@runtime_checkable
class Registry(Protocol):
    """What regwarden needs from any registry. Data plane via OCI; control plane via SDKs."""

    host: str
    kind: str
    capabilities: frozenset[str]

    def list_repositories(self) -> Iterator[str]: ...

    def list_images(self, repository: str) -> list[ListedImage]:
        """Every image in `repository`, tags grouped by digest."""
        ...

    def image_details(self, repository: str, reference: str) -> ImageDetails: ...

    def resolve(self, repository: str, reference: str) -> str | None:
        """The digest a tag (or digest) points at now, or None if absent. One cheap request."""
        ...

    def tags_of(self, repository: str, digest: str) -> tuple[str, ...]:
        """Every tag the registry holds for `digest` now (sorted; empty if none or absent).
        Read from the registry, never from a ledger: quarantine removes and records these."""
        ...

    def index_children(self, repository: str) -> dict[str, tuple[str, ...]]:
        """Every index the registry can list in `repository` → the digests it lists.
        Registries that list tags only (distribution 2.8) see tagged indexes only."""
        ...

    def add_tag(self, repository: str, digest: str, tag: str) -> None: ...

    def remove_tag(self, repository: str, tag: str) -> None:
        """Remove one tag, leaving the image; raises Unsupported where the registry cannot."""
        ...

    def delete(self, repository: str, digest: str) -> None: ...

    def delete_many(self, repository: str, digests: Iterable[str]) -> list[DeleteResult]:
        """Delete several digests in as few requests as the registry allows, one result per
        distinct digest, failures returned rather than raised. Only with CAP_BATCH_DELETE;
        elsewhere it raises Unsupported (delete one at a time)."""
        ...

    def watch_throttling(self, callback: Callable[[float | None], None]) -> Callable[[], None]:
        """Call `callback(delay)` whenever the registry asks this provider to slow down,
        including throttling its SDK or client retries by itself (`delay`: the seconds the
        server asked for, None if it did not say). Returns the undo."""
        ...

    def copy(
        self,
        src_repository: str,
        reference: str,
        dst_repository: str,
        tag: str | None = None,
        *,
        manifest: Manifest | None = None,
    ) -> str:
        """Copy an image (and an index's children) between repositories; returns the digest.
        `manifest`: the digest-verified manifest `reference` names, if the caller has it
        (a provider may use it to skip a fetch)."""
        ...

    def data_plane(self) -> RegistryClient:
        """The OCI client for this registry (signatures, referrers, blobs)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ManifestAttributes:
    """A manifest's changeable attributes (ACR's, what `lock` sets): may it be overwritten
    (`write`), deleted, read (pulled) and listed. `quarantine_state`: the registry's own
    quarantine state, where the same read gave it (see `Lockable.quarantine_state`; None
    when the policy is off or it was not read); not one of the attributes, so left out of
    comparisons."""

    write: bool
    delete: bool
    read: bool
    list: bool
    quarantine_state: str | None = field(default=None, compare=False)


QuarantineState = Literal["Passed", "Failed"]


@runtime_checkable
class Lockable(Protocol):
    """A provider whose registry locks single manifests (CAP_LOCK): the `lock` quarantine.

    `quarantine_state` is the registry's own quarantine verdict on a manifest (ACR's
    `quarantineState`), None where the registry's quarantine policy is off;
    `manifest_attributes` gives it too (`ManifestAttributes.quarantine_state`), from the
    same read, so a caller wanting both reads once;
    `set_quarantine_state` sets it with `details` (stored by the registry as a JSON
    string). `image_details` with `manifests` (digest → digest-verified manifest: the
    image's, and an index's children) reads none of those over the data plane: a
    read-locked manifest cannot be pulled, even by the gate."""

    def manifest_attributes(self, repository: str, digest: str) -> ManifestAttributes: ...

    def set_manifest_attributes(
        self,
        repository: str,
        digest: str,
        *,
        write: bool | None = None,
        delete: bool | None = None,
        read: bool | None = None,
        list: bool | None = None,
    ) -> ManifestAttributes: ...

    def quarantine_state(self, repository: str, digest: str) -> str | None: ...

    def set_quarantine_state(
        self, repository: str, digest: str, state: QuarantineState, details: Mapping[str, Any]
    ) -> None: ...

    def image_details(
        self,
        repository: str,
        reference: str,
        *,
        manifests: Mapping[str, Manifest] | None = None,
    ) -> ImageDetails: ...


@runtime_checkable
class NativeScanner(Protocol):
    """A provider whose registry scans images itself (CAP_NATIVE_SCAN)."""

    def native_scan(
        self,
        repository: str,
        digest: str,
        *,
        start: bool = True,
        inspector: Any = None,
        name: str | None = None,
    ) -> ScanReport | None:
        """The registry's scan report for `digest`; None while none is ready (with
        `start`, a scan is started when the registry would not start one itself).
        `inspector`: a client for the registry's richer findings service, where it has
        one. `name`: the image as error messages should name it. Raises when the
        registry says the scan failed (never read as clean)."""
        ...
