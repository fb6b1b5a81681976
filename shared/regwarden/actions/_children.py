"""An index's children, and which of them may leave a repository with it.

A child is a manifest the index lists. It goes with the index unless something else in the
same repository still needs it: another index listing it (deleting it would break that
index's pull), or a tag of its own (it is then an image in its own right, judged alone).

An index may list a child many times: each child counts once, and the registry's tags are
read once for all of them, not once per child.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, runtime_checkable

from ..oci import Manifest
from ..providers import Registry
from ..reference import ImageRef


@runtime_checkable
class TagsOfMany(Protocol):
    """A registry that answers `tags_of` for several digests in one go."""

    def tags_of_many(
        self, repository: str, digests: Collection[str]
    ) -> dict[str, tuple[str, ...]]: ...


def children_of(registry: Registry, image: ImageRef, manifest: Manifest | None) -> tuple[str, ...]:
    """The distinct child digests of `image` in listed order (empty unless it is an index),
    from the caller's digest-verified manifest when it has one, else from the registry."""
    assert image.digest is not None
    if manifest is not None and manifest.digest == image.digest:
        if not manifest.is_index:
            return ()
        return tuple(dict.fromkeys(c.digest for c in manifest.manifests))
    return tuple(
        dict.fromkeys(registry.image_details(image.repository, image.digest).record.children)
    )


def tags_by_digest(
    registry: Registry, repository: str, digests: Collection[str]
) -> dict[str, tuple[str, ...]]:
    """digest → its tags in `repository` now (digests without tags may be left out): one
    read of the tags where the registry can (`TagsOfMany`), else one `tags_of` each."""
    if not digests:
        return {}
    if isinstance(registry, TagsOfMany):
        return registry.tags_of_many(repository, digests)
    return {d: registry.tags_of(repository, d) for d in digests}


def children_to_keep(
    registry: Registry, repository: str, index: str, children: tuple[str, ...]
) -> dict[str, str]:
    """child → why it stays in `repository` when `index` leaves it."""
    wanted = dict.fromkeys(children)
    if not wanted:
        return {}
    keep: dict[str, str] = {}
    for other, listed in sorted(registry.index_children(repository).items()):
        if other == index:
            continue
        for child in listed:
            if child in wanted and child not in keep:
                keep[child] = f"also listed by index {other}"
    rest = [c for c in wanted if c not in keep]
    tags = tags_by_digest(registry, repository, rest)
    for child in rest:
        own = tags.get(child, ())
        if own:
            keep[child] = f"tagged {', '.join(own)} on its own"
    return keep
