"""An in-memory `Registry` that behaves like a registry which deletes tags (ECR, OCI 1.1):
manifests by digest per repository, tags naming digests, indexes with children. It keeps
every call, and fails the next calls of an operation on cue, so the quarantine tests can
interrupt an action at any write and check what a resumed attempt does.

    reg = MemoryRegistry()
    reg.push("app", make_multiarch(seed=1), "v1")
    reg.fail("delete", times=1)          # the next delete raises RegistryError (HTTP 500)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from regwarden.devtools import Content
from regwarden.errors import NotFound, RegistryError, Unsupported
from regwarden.oci import Manifest
from regwarden.providers import CAP_TAG_DELETE, DeleteResult, ImageDetails, ListedImage


class MemoryRegistry:
    kind = "memory"
    capabilities: frozenset[str] = frozenset({CAP_TAG_DELETE})
    """Deletes single tags; no batch delete, no data plane (so no referrers API, no
    mounts), no scanner; copies by storing manifests (there are no blobs)."""

    def __init__(self, host: str = "registry.test") -> None:
        self.host = host
        self.manifests: dict[str, dict[str, Manifest]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self._failing: dict[tuple[str, str | None], int] = {}

    # -- set-up and cues ------------------------------------------------------------------------

    def push(self, repository: str, content: Content, tag: str | None = None) -> str:
        for digest, (raw, media_type) in content.manifests.items():
            self._store(repository, Manifest.parse(raw, media_type=media_type, digest=digest))
        top = Manifest.parse(content.manifest, media_type=content.media_type)
        self._store(repository, top)
        if tag is not None:
            self.tags.setdefault(repository, {})[tag] = top.digest
        return top.digest

    def fail(self, op: str, *, times: int = 1, ref: str | None = None) -> None:
        """The next `times` calls of `op` (on `ref` only, if given: a digest, a tag, or
        `tag=digest` for add_tag) raise RegistryError before changing anything."""
        self._failing[(op, ref)] = self._failing.get((op, ref), 0) + times

    def has(self, repository: str, digest: str) -> bool:
        return digest in self.manifests.get(repository, {})

    def writes(self) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] in ("add_tag", "remove_tag", "delete", "copy")]

    def _call(self, op: str, repository: str, ref: str) -> None:
        self.calls.append((op, repository, ref))
        for key in ((op, ref), (op, None)):
            if self._failing.get(key, 0) > 0:
                self._failing[key] -= 1
                raise RegistryError(f"{op} {repository} {ref}: HTTP 500 (injected)", status=500)

    def _store(self, repository: str, manifest: Manifest) -> None:
        self.manifests.setdefault(repository, {})[manifest.digest] = manifest

    def _get(self, repository: str, digest: str) -> Manifest:
        found = self.manifests.get(repository, {}).get(digest)
        if found is None:
            raise NotFound(f"manifest {repository}@{digest} not found")
        return found

    # -- Registry protocol ------------------------------------------------------------------------

    def list_repositories(self) -> Iterator[str]:
        return iter(sorted(self.manifests))

    def list_images(self, repository: str) -> list[ListedImage]:
        return [self._record(repository, d) for d in self.manifests.get(repository, {})]

    def _record(self, repository: str, digest: str) -> ListedImage:
        manifest = self._get(repository, digest)
        children = tuple(c.digest for c in manifest.manifests) if manifest.is_index else ()
        return ListedImage(
            repository=repository,
            digest=digest,
            media_type=manifest.media_type,
            tags=self._tags_of(repository, digest),
            children=children,
        )

    def image_details(self, repository: str, reference: str) -> ImageDetails:
        self.calls.append(("image_details", repository, reference))
        digest = self.resolve(repository, reference)
        if digest is None:
            raise NotFound(f"manifest {repository}:{reference} not found")
        manifest = self._get(repository, digest)
        return ImageDetails(
            record=self._record(repository, digest), manifest=manifest.data, content=manifest
        )

    def resolve(self, repository: str, reference: str) -> str | None:
        self.calls.append(("resolve", repository, reference))
        digest = reference if ":" in reference else self.tags.get(repository, {}).get(reference)
        return digest if digest is not None and self.has(repository, digest) else None

    def _tags_of(self, repository: str, digest: str) -> tuple[str, ...]:
        return tuple(sorted(t for t, d in self.tags.get(repository, {}).items() if d == digest))

    def tags_of(self, repository: str, digest: str) -> tuple[str, ...]:
        self._call("tags_of", repository, digest)
        return self._tags_of(repository, digest)

    def index_children(self, repository: str) -> dict[str, tuple[str, ...]]:
        self._call("index_children", repository, "")
        return {
            d: tuple(c.digest for c in m.manifests)
            for d, m in self.manifests.get(repository, {}).items()
            if m.is_index
        }

    def add_tag(self, repository: str, digest: str, tag: str) -> None:
        self._call("add_tag", repository, f"{tag}={digest}")
        self._get(repository, digest)
        self.tags.setdefault(repository, {})[tag] = digest

    def remove_tag(self, repository: str, tag: str) -> None:
        self._call("remove_tag", repository, tag)
        if self.tags.get(repository, {}).pop(tag, None) is None:
            raise NotFound(f"tag {repository}:{tag} not found")

    def delete(self, repository: str, digest: str) -> None:
        self._call("delete", repository, digest)
        if self.manifests.get(repository, {}).pop(digest, None) is None:
            raise NotFound(f"manifest {repository}@{digest} not found")
        tags = self.tags.get(repository, {})
        for tag in [t for t, d in tags.items() if d == digest]:
            del tags[tag]  # a manifest's tags go with it, as on every registry

    def delete_many(self, repository: str, digests: Iterable[str]) -> list[DeleteResult]:
        raise Unsupported("the in-memory registry deletes one digest at a time")

    def watch_throttling(self, callback: Callable[[float | None], None]) -> Callable[[], None]:
        return lambda: None  # it never throttles

    def copy(
        self,
        src_repository: str,
        reference: str,
        dst_repository: str,
        tag: str | None = None,
        *,
        manifest: Manifest | None = None,
    ) -> str:
        self._call("copy", f"{src_repository}->{dst_repository}", reference)
        digest = self.resolve(src_repository, reference)
        if digest is None:
            raise NotFound(f"manifest {src_repository}:{reference} not found")
        top = self._get(src_repository, digest)
        for child in top.manifests if top.is_index else []:
            self._store(dst_repository, self._get(src_repository, child.digest))
        self._store(dst_repository, top)
        target = tag or (None if ":" in reference else reference)
        if target is not None:
            self.tags.setdefault(dst_repository, {})[target] = digest
        return digest

    def data_plane(self) -> Any:
        raise NotImplementedError("the in-memory registry has no data plane")

    def close(self) -> None:
        return None
