"""walk_index: each manifest read once, trees past the limits refused, DAGs measured by
their longest path (breadth first sees a shared index at its shallowest)."""

from __future__ import annotations

import json

import pytest

from regwarden.errors import LimitExceeded, UsageError
from regwarden.oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    IndexLimits,
    Manifest,
    distinct_children,
    walk_index,
)

CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "a" * 64}


class Store:
    """Manifests by digest; counts reads."""

    def __init__(self) -> None:
        self.content: dict[str, Manifest] = {}
        self.reads: list[str] = []

    def add(self, doc: dict[str, object]) -> Manifest:
        manifest = Manifest.parse(json.dumps(doc).encode())
        self.content[manifest.digest] = manifest
        return manifest

    def image(self, note: str) -> Manifest:
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {**CONFIG, "size": 2}}
        return self.add({**doc, "layers": [], "annotations": {"n": note}})

    def index(self, *children: Manifest) -> Manifest:
        entries = [c.descriptor().to_dict() for c in children]
        return self.add({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})

    def fetch(self, digest: str) -> Manifest:
        self.reads.append(digest)
        return self.content[digest]


def test_an_image_has_no_tree() -> None:
    store = Store()
    assert walk_index(store.image("a"), store.fetch) == {}
    assert store.reads == []


def test_every_manifest_of_a_tree_is_read_once() -> None:
    store = Store()
    a, b = store.image("a"), store.image("b")
    inner = store.index(a, b)
    top = store.index(inner, a, a, b)
    found = walk_index(top, store.fetch)
    assert set(found) == {inner.digest, a.digest, b.digest}
    assert sorted(store.reads) == sorted(found)


def test_duplicates_count_once_against_the_width_limit() -> None:
    store = Store()
    a, b = store.image("a"), store.image("b")
    top = store.index(a, b, a, b, a)
    assert [d.digest for d in distinct_children(top, IndexLimits(max_children=2))] == [
        a.digest,
        b.digest,
    ]
    with pytest.raises(LimitExceeded, match="lists 2 distinct manifests, more than the limit of 1"):
        distinct_children(top, IndexLimits(max_children=1))


def test_the_whole_tree_counts_against_the_children_limit() -> None:
    store = Store()
    top = store.index(store.index(store.image("a"), store.image("b")), store.image("c"))
    with pytest.raises(LimitExceeded, match="more than 3 manifests"):
        walk_index(top, store.fetch, IndexLimits(max_children=3))
    assert len(store.reads) == 3


def test_the_tree_bytes_are_capped() -> None:
    store = Store()
    a = store.image("a")
    top = store.index(a, store.image("b"))
    with pytest.raises(LimitExceeded, match="bytes together"):
        walk_index(top, store.fetch, IndexLimits(max_bytes=len(a.raw) + 1))
    assert len(store.reads) == 2


def test_a_longer_path_to_a_shared_index_is_too_deep() -> None:
    # top lists `shared` directly (depth 2) and through a chain (depth 4): breadth first
    # meets it at 2, but a copy follows every path, and one of them nests 5 deep
    store = Store()
    shared = store.index(store.index(store.image("leaf")))  # shared → index → image
    chain = store.index(store.index(shared))
    top = store.index(shared, chain)
    limits = IndexLimits(max_depth=4)
    with pytest.raises(LimitExceeded, match="nested more than 4 deep"):
        walk_index(top, store.fetch, limits)
    assert len(walk_index(top, store.fetch, IndexLimits(max_depth=6))) == 5


def test_limits_must_be_positive_integers() -> None:
    with pytest.raises(UsageError, match="max_children"):
        IndexLimits(max_children=0)
    with pytest.raises(UsageError, match="max_depth"):
        IndexLimits(max_depth=True)
