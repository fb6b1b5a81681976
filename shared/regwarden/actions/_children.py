"""An index's children, and which of them may leave a repository with it.

A child is a manifest the index lists. It goes with the index unless something else in the
same repository still needs it: another index listing it (deleting it would break that
index's pull), or a tag of its own (it is then an image in its own right, judged alone).
"""

from __future__ import annotations

from ..oci import Manifest
from ..providers import Registry
from ..reference import ImageRef


def children_of(registry: Registry, image: ImageRef, manifest: Manifest | None) -> tuple[str, ...]:
    """The child digests of `image` (empty unless it is an index), from the caller's
    digest-verified manifest when it has one, else from the registry."""
    assert image.digest is not None
    if manifest is not None and manifest.digest == image.digest:
        return tuple(c.digest for c in manifest.manifests) if manifest.is_index else ()
    return registry.image_details(image.repository, image.digest).record.children


def children_to_keep(
    registry: Registry, repository: str, index: str, children: tuple[str, ...]
) -> dict[str, str]:
    """child → why it stays in `repository` when `index` leaves it."""
    if not children:
        return {}
    keep: dict[str, str] = {}
    for other, listed in sorted(registry.index_children(repository).items()):
        if other == index:
            continue
        for child in listed:
            if child in children and child not in keep:
                keep[child] = f"also listed by index {other}"
    for child in children:
        if child in keep:
            continue
        own = registry.tags_of(repository, child)
        if own:
            keep[child] = f"tagged {', '.join(own)} on its own"
    return keep
