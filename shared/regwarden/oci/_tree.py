"""An index's tree of manifests, read within bounds before anything is written.

Distribution accepts indexes nested a thousand deep and indexes listing ten thousand
manifests; anyone who may push can make one. Whoever copies or inspects such a tree reads
it here first: each manifest once (an index listing one child ten thousand times costs one
read), breadth first, and stops with `LimitExceeded` as soon as the tree goes past a
bound, so a hostile tree costs a bounded number of reads and nothing has been written yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import LimitExceeded, UsageError
from ._media import INDEX_TYPES
from ._models import Descriptor, Manifest

MAX_INDEX_DEPTH = 4
"""Indexes on any path from the top one down (the top one counts): 1 is an index of images."""
MAX_INDEX_CHILDREN = 1024
"""Distinct manifests one index may list, and that a whole tree may hold below its top."""
MAX_TREE_BYTES = 16 * 1024 * 1024
"""Manifest bytes a whole tree may hold below its top (each manifest has its own 4 MiB cap)."""


@dataclass(frozen=True, slots=True)
class IndexLimits:
    """The bounds `walk_index` keeps; `max_children` is the policy's `maxIndexChildren`."""

    max_depth: int = MAX_INDEX_DEPTH
    max_children: int = MAX_INDEX_CHILDREN
    max_bytes: int = MAX_TREE_BYTES

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_children", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"index limits: {name} must be an integer ≥ 1, got {value!r}")


def distinct_children(index: Manifest, limits: IndexLimits) -> list[Descriptor]:
    """The manifests `index` lists, each digest once (its first entry), in listed order;
    LimitExceeded when they are more than `limits.max_children`."""
    first: dict[str, Descriptor] = {}
    for entry in index.manifests:
        first.setdefault(entry.digest, entry)
    children = list(first.values())
    if len(children) > limits.max_children:
        raise LimitExceeded(
            f"index {index.digest} lists {len(children)} distinct manifests, more than the "
            f"limit of {limits.max_children} (maxIndexChildren); refused"
        )
    return children


def walk_index(
    root: Manifest, fetch: Callable[[str], Manifest], limits: IndexLimits | None = None
) -> dict[str, Manifest]:
    """Every manifest below `root` (empty unless it is an index), keyed by digest, each
    read once with `fetch(digest)` (which verifies it against its digest).

    Raises LimitExceeded, before returning, when an index lists more distinct manifests
    than `max_children`, the tree holds more than `max_children` manifests or
    `max_bytes` of them below `root`, or indexes nest deeper than `max_depth` on any path.
    At most `max_children` reads, whatever the tree.
    """
    limits = limits or IndexLimits()
    found: dict[str, Manifest] = {}
    if not root.is_index:
        return found
    size = 0
    level, depth = [root], 1
    while level:
        below: list[Manifest] = []
        for index in level:
            for child in distinct_children(index, limits):
                if child.digest in found or child.digest == root.digest:
                    continue
                if child.media_type in INDEX_TYPES and depth >= limits.max_depth:
                    raise _too_deep(root, limits)  # said so by its parent: no need to read it
                if len(found) >= limits.max_children:
                    raise LimitExceeded(
                        f"index {root.digest}: its tree holds more than {limits.max_children} "
                        "manifests (maxIndexChildren); refused"
                    )
                manifest = fetch(child.digest)
                size += len(manifest.raw)
                if size > limits.max_bytes:
                    raise LimitExceeded(
                        f"index {root.digest}: the manifests of its tree are more than "
                        f"{limits.max_bytes} bytes together; refused"
                    )
                found[child.digest] = manifest
                if manifest.is_index:
                    if depth >= limits.max_depth:
                        raise _too_deep(root, limits)
                    below.append(manifest)
        level, depth = below, depth + 1
    # Breadth first saw each manifest at its shallowest; a longer path to a shared index
    # (a DAG) can still nest deeper, and a copy follows every path.
    if _height(root, found) > limits.max_depth:
        raise _too_deep(root, limits)
    return found


def _too_deep(root: Manifest, limits: IndexLimits) -> LimitExceeded:
    return LimitExceeded(
        f"index {root.digest}: indexes nested more than {limits.max_depth} deep; refused"
    )


def _height(root: Manifest, found: dict[str, Manifest]) -> int:
    """Indexes on the longest path down from `root` (which counts), without recursion."""

    def child_indexes(index: Manifest) -> list[Manifest]:
        kids = (found.get(d.digest) for d in index.manifests)
        return [k for k in kids if k is not None and k.is_index]

    height: dict[str, int] = {}
    entered: set[str] = set()
    stack: list[tuple[Manifest, bool]] = [(root, False)]
    while stack:
        index, ready = stack.pop()
        if index.digest in height:
            continue
        kids = child_indexes(index)
        if ready:
            height[index.digest] = 1 + max((height.get(k.digest, 0) for k in kids), default=0)
        elif index.digest not in entered:  # content addressing rules out cycles; be sure
            entered.add(index.digest)
            stack.append((index, True))
            stack.extend((k, False) for k in kids if k.digest not in height)
    return height[root.digest]


__all__ = [
    "MAX_INDEX_CHILDREN",
    "MAX_INDEX_DEPTH",
    "MAX_TREE_BYTES",
    "IndexLimits",
    "distinct_children",
    "walk_index",
]
