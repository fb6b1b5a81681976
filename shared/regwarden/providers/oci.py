"""Generic OCI provider: any registry speaking the Distribution API (distribution, Harbor,
Zot, Quay). Everything goes through the OCI client; nothing here talks HTTP directly."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from ..errors import LimitExceeded, NotFound, RegistryError, Unsupported
from ..oci import (
    INDEX_TYPES,
    MAX_CONFIG_BYTES,
    Credentials,
    Descriptor,
    Manifest,
    RegistryClient,
    distinct_children,
    gather,
)
from . import (
    CAP_COPY_MOUNT,
    CAP_REFERRERS_API,
    CAP_TAG_DELETE,
    THROTTLE_STATUS,
    DeleteResult,
    ImageDetails,
    ListedImage,
    Platform,
    ProviderOptions,
    Registry,
    register,
)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    # Go writes nanoseconds; Python's fromisoformat takes at most microseconds.
    if "." in text:
        head, _, tail = text.partition(".")
        frac = "".join(c for c in tail if c.isdigit())
        zone = tail[len(frac) :]
        text = f"{head}.{frac[:6]}{zone}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _manifest_size(manifest: Manifest) -> int:
    data = manifest.data
    total = 0
    config = data.get("config")
    if isinstance(config, dict):
        total += int(config.get("size", 0))
    for layer in data.get("layers") or []:
        if isinstance(layer, dict):
            total += int(layer.get("size", 0))
    return total


class OciRegistry:
    """`Registry` over the OCI Distribution API."""

    kind = "oci"

    def __init__(self, host: str, options: ProviderOptions, client: RegistryClient | None = None):
        self.host = host
        self._options = options
        if client is None:
            creds = (
                Credentials(username=options.username, password=options.password)
                if options.username
                else Credentials.from_docker_config(host)
            )
            client = RegistryClient(
                host,
                credentials=creds,
                insecure=options.insecure,
                deadline=options.deadline,
                blob_deadline=options.blob_deadline,
                max_index_children=options.max_index_children,
            )
        self.client = client
        # Distribution 2.8 cannot delete a tag alone; we learn otherwise if a delete succeeds.
        # The tag listing hides untagged referrers: retention asks the referrers API.
        self.capabilities: frozenset[str] = frozenset({CAP_REFERRERS_API, CAP_COPY_MOUNT})

    # -- reads --------------------------------------------------------------------------

    def list_repositories(self) -> Iterator[str]:
        return self.client.catalog()

    def list_images(self, repository: str) -> list[ListedImage]:
        tags = self.client.list_tags(repository)
        with ThreadPoolExecutor(max_workers=max(1, self._options.concurrency)) as pool:
            heads = list(pool.map(lambda t: self.client.head_manifest(repository, t), tags))
            by_digest: dict[str, list[str]] = {}
            media: dict[str, str] = {}
            for tag, desc in zip(tags, heads, strict=True):
                if desc is None:  # tag vanished between listing and HEAD
                    continue
                by_digest.setdefault(desc.digest, []).append(tag)
                media[desc.digest] = desc.media_type
            details = list(
                pool.map(
                    lambda d: self._record(repository, d, tuple(sorted(by_digest[d]))), by_digest
                )
            )
        return sorted(details, key=lambda r: (r.created is None, r.created), reverse=True)

    def resolve(self, repository: str, reference: str) -> str | None:
        desc = self.client.head_manifest(repository, reference)
        return None if desc is None else desc.digest

    def _tag_heads(self, repository: str) -> list[tuple[str, Descriptor]]:
        """(tag, what it points at) for every tag now; the HEADs go out together."""
        try:
            tags = self.client.list_tags(repository)
        except NotFound:  # no such repository: it holds no tags
            return []
        heads = gather([functools.partial(self.client.head_manifest, repository, t) for t in tags])
        # None: the tag vanished between listing and HEAD
        return [(t, d) for t, d in zip(tags, heads, strict=True) if d is not None]

    def tags_of(self, repository: str, digest: str) -> tuple[str, ...]:
        """Distribution has no "tags of a digest" call: list the tags, HEAD each, keep
        those naming `digest` (one listing plus one HEAD per tag)."""
        return self.tags_of_many(repository, (digest,)).get(digest, ())

    def tags_of_many(self, repository: str, digests: Collection[str]) -> dict[str, tuple[str, ...]]:
        """`tags_of` for several digests at the cost of one: digest → its sorted tags
        (digests without tags are left out)."""
        wanted = set(digests)
        found: dict[str, list[str]] = {}
        for tag, desc in self._tag_heads(repository):
            if desc.digest in wanted:
                found.setdefault(desc.digest, []).append(tag)
        return {d: tuple(sorted(tags)) for d, tags in found.items()}

    def index_children(self, repository: str) -> dict[str, tuple[str, ...]]:
        """Tagged indexes only: distribution 2.8 lists tags, not manifests."""
        heads = self._tag_heads(repository)
        indexes = sorted({d.digest for _, d in heads if d.media_type in INDEX_TYPES})
        found = gather([functools.partial(self._manifest_or_none, repository, d) for d in indexes])
        return {m.digest: tuple(c.digest for c in m.manifests) for m in found if m is not None}

    def _manifest_or_none(self, repository: str, digest: str) -> Manifest | None:
        try:
            return self.client.get_manifest(repository, digest)
        except NotFound:  # deleted since the HEAD
            return None

    def _record(self, repository: str, digest: str, tags: tuple[str, ...]) -> ListedImage:
        return self.image_details(repository, digest, tags=tags).record

    def image_details(
        self, repository: str, reference: str, *, tags: tuple[str, ...] = ()
    ) -> ImageDetails:
        manifest = self.client.get_manifest(repository, reference)
        data = manifest.data
        platforms: list[Platform] = []
        children: tuple[str, ...] = ()
        labels: dict[str, str] = {}
        created: datetime | None = None
        layer_count = 0
        if manifest.is_index:
            size = 0
            first_child: Manifest | None = None
            # The whole tree, checked against the limits before anyone acts on the image:
            # LimitExceeded here is an ERROR verdict before any write.
            tree = self.client.index_tree(repository, manifest)
            for entry in distinct_children(manifest, self.client.index_limits):
                child = tree[entry.digest]
                child_size = _manifest_size(child)
                size += child_size
                plat: dict[str, Any] = entry.platform or {}
                platforms.append(
                    Platform(
                        os=str(plat.get("os", "unknown")),
                        architecture=str(plat.get("architecture", "unknown")),
                        variant=plat.get("variant"),
                        digest=child.digest,
                        size=child_size,
                    )
                )
                if first_child is None and "config" in child.data:
                    first_child = child
            children = tuple(p.digest for p in platforms)
            if first_child is not None:
                labels, created = self._config_facts(repository, first_child)
                layer_count = len(first_child.data.get("layers") or [])
        else:
            size = _manifest_size(manifest)
            layer_count = len(data.get("layers") or [])
            if "config" in data:
                labels, created = self._config_facts(repository, manifest)
        subject = data.get("subject")
        record = ListedImage(
            repository=repository,
            digest=manifest.digest,
            media_type=manifest.media_type,
            tags=tags,
            size=size,
            created=created,
            children=children,
            subject=str(subject["digest"]) if isinstance(subject, dict) else None,
            artifact_type=data.get("artifactType") or (data.get("config") or {}).get("mediaType"),
        )
        return ImageDetails(
            record=record,
            manifest=data,
            labels=labels,
            platforms=tuple(platforms),
            layer_count=layer_count,
            content=manifest,
        )

    def _config_facts(
        self, repository: str, manifest: Manifest
    ) -> tuple[dict[str, str], datetime | None]:
        config = manifest.data.get("config") or {}
        media_type = str(config.get("mediaType", ""))
        if not media_type.endswith(("image.config.v1+json", "container.image.v1+json")):
            return {}, None  # an artifact (signature, SBOM): no image config to read
        try:
            blob = self.client.get_blob(
                repository, str(config["digest"]), max_bytes=MAX_CONFIG_BYTES
            )
            doc = json.loads(blob)
        except LimitExceeded:
            raise  # refused content is an ERROR verdict, not a missing fact
        except RecursionError:
            raise LimitExceeded(
                f"image config {repository}@{config.get('digest')}: JSON nested too deep "
                "to read; refused"
            ) from None
        except (RegistryError, ValueError, KeyError):
            return {}, None
        if not isinstance(doc, dict):
            return {}, None
        inner = doc.get("config")
        labels = inner.get("Labels") if isinstance(inner, dict) else None
        if not isinstance(labels, dict):
            labels = {}
        return {str(k): str(v) for k, v in labels.items()}, _parse_time(doc.get("created"))

    # -- writes -------------------------------------------------------------------------

    def add_tag(self, repository: str, digest: str, tag: str) -> None:
        manifest = self.client.get_manifest(repository, digest)
        self.client.put_manifest(repository, tag, manifest.raw, manifest.media_type)

    def remove_tag(self, repository: str, tag: str) -> None:
        self.client.delete_tag(repository, tag)  # Unsupported on distribution 2.8
        self.capabilities = self.capabilities | {CAP_TAG_DELETE}

    def delete(self, repository: str, digest: str) -> None:
        self.client.delete_manifest(repository, digest)

    def delete_many(self, repository: str, digests: Iterable[str]) -> list[DeleteResult]:
        raise Unsupported(
            f"{self.host}: the Distribution API deletes one manifest per request; "
            "expected a registry with batch-delete"
        )

    def watch_throttling(self, callback: Callable[[float | None], None]) -> Callable[[], None]:
        """Wraps the client's `on_retry`: a retry after 429 or 503 calls `callback` with
        the delay the client will wait (the server's `Retry-After`, else its backoff)."""
        client = self.client
        previous = client.on_retry

        def on_retry(status: int | None, delay: float) -> None:
            if status in THROTTLE_STATUS:
                callback(delay)
            if previous is not None:
                previous(status, delay)

        client.on_retry = on_retry

        def undo() -> None:
            client.on_retry = previous

        return undo

    def copy(
        self,
        src_repository: str,
        reference: str,
        dst_repository: str,
        tag: str | None = None,
        *,
        manifest: Manifest | None = None,
    ) -> str:
        return self.client.copy_image(
            src_repository, reference, dst_repository, tag, manifest=manifest
        )

    def data_plane(self) -> RegistryClient:
        return self.client

    def close(self) -> None:
        self.client.close()


@register("oci")
def _factory(host: str, options: ProviderOptions) -> Registry:
    return OciRegistry(host, options)
