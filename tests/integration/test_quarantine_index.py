"""An image index quarantined by `move` on a real CNCF distribution 2.8: the index leaves
the source with its children (pushed with skopeo, as a user would), a child another kept
index lists stays, an interrupted move resumes to the same end state, and release brings
the index and its children back, pullable."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.proxy import RegistryProxy

from regwarden.actions import QuarantineOutcome, describe_state, quarantine, release
from regwarden.devtools import (
    IndexBlobs,
    LocalRegistry,
    build_index,
    make_image,
    make_index,
    make_multiarch,
    push_image,
    skopeo_copy,
)
from regwarden.errors import RegistryError
from regwarden.oci import RegistryClient
from regwarden.providers import ProviderOptions
from regwarden.providers.oci import OciRegistry
from regwarden.quarantine_names import quarantine_tag
from regwarden.reference import ImageRef
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    with closing(SqliteLedger(tmp_path / "ledger.db")) as led:
        yield led


@pytest.fixture
def provider(registry: LocalRegistry) -> Iterator[OciRegistry]:
    reg = OciRegistry(
        registry.host, ProviderOptions(), client=RegistryClient(registry.host, backoff=0.01)
    )
    yield reg
    reg.close()


def image(registry: OciRegistry, repo: str, digest: str) -> ImageRef:
    return ImageRef(registry=registry.host, repository=repo, tag=None, digest=digest)


def move(registry: OciRegistry, ledger: SqliteLedger, repo: str, digest: str) -> QuarantineOutcome:
    return quarantine(
        registry,
        ledger,
        image=image(registry, repo, digest),
        tags=("v1",),
        strategy="move",
        repository_template="quarantine/{repository}",
        reason="not signed",
        now=T0,
    )


def present(client: RegistryClient, repo: str, digests: list[str]) -> list[bool]:
    return [client.head_manifest(repo, d) is not None for d in digests]


def pullable(client: RegistryClient, repo: str, content: IndexBlobs) -> None:
    """Every manifest and blob of `content` reads back from `repo`, digest-verified."""
    assert client.get_manifest(repo, content.digest).digest == content.digest
    for child in content.children:
        assert client.get_manifest(repo, child.digest).digest == child.digest
        for blob in child.blobs:
            client.get_blob(repo, blob)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")
def test_unsigned_index_moves_with_its_children_and_release_restores_both(
    registry: LocalRegistry,
    client: RegistryClient,
    provider: OciRegistry,
    ledger: SqliteLedger,
    repo: str,
    tmp_path: Path,
) -> None:
    index = build_index(tmp_path / "layout", tag="v1", seed=11)
    skopeo_copy(f"oci:{tmp_path / 'layout'}:v1", f"docker://{registry.host}/{repo}:v1")
    skopeo_copy(
        f"docker://{registry.host}/{repo}:v1",
        f"docker://{registry.host}/{repo}:1.0",
        src_tls_verify=False,
    )
    everything = [index.digest, *(c.digest for c in index.children)]
    qrepo = f"quarantine/{repo}"
    assert present(client, repo, everything) == [True, True, True]

    out = move(provider, ledger, repo, index.digest)

    assert out.removed_tags == ("1.0", "v1")  # the registry's tags, not only the caller's
    assert out.children == tuple(everything[1:]) and out.kept_children == {}
    assert present(client, repo, everything) == [False, False, False]
    assert client.list_tags(repo) == []
    assert present(client, qrepo, everything) == [True, True, True]
    assert client.list_tags(qrepo) == [quarantine_tag(index.digest)]
    assert describe_state(ledger, image(provider, repo, index.digest)) == (
        f"moved to {qrepo} with its 2 children"
    )
    held = ledger.quarantined(provider.host, repo, index.digest)
    assert held is not None and held.tags == ("1.0", "v1")

    back = release(
        provider, ledger, image=image(provider, repo, index.digest), reason="signed", now=T0
    )

    assert back.restored_tags == ("1.0", "v1")
    assert present(client, repo, everything) == [True, True, True]
    pullable(client, repo, index)
    assert provider.tags_of(repo, index.digest) == ("1.0", "v1")
    assert present(client, qrepo, everything) == [False, False, False]
    # skopeo pulls it by tag again, every platform
    skopeo_copy(
        f"docker://{registry.host}/{repo}:1.0",
        f"oci:{tmp_path / 'pulled'}:1.0",
        src_tls_verify=False,
    )


def test_a_child_listed_by_another_tagged_index_stays_in_the_source(
    client: RegistryClient, provider: OciRegistry, ledger: SqliteLedger, repo: str
) -> None:
    index = make_multiarch(seed=12)
    shared, ours = (c.digest for c in index.children)
    other = make_index([index.children[0], make_image(platform="linux/s390x", seed=13)])
    push_image(client, repo, index, "v1")
    push_image(client, repo, other, "stable")

    out = move(provider, ledger, repo, index.digest)

    assert out.kept_children == {shared: f"also listed by index {other.digest}"}
    assert any(shared in n and other.digest in n for n in out.notes)
    assert present(client, repo, [index.digest, shared, ours]) == [False, True, False]
    pullable(client, repo, other)  # the kept index is intact
    assert present(client, f"quarantine/{repo}", [index.digest, shared, ours]) == [True] * 3

    release(provider, ledger, image=image(provider, repo, index.digest), reason="ok", now=T0)
    pullable(client, repo, index)
    pullable(client, repo, other)


def test_tags_of_and_index_children_read_the_registry(
    client: RegistryClient, provider: OciRegistry, repo: str
) -> None:
    index = make_multiarch(seed=14)
    single = make_image(seed=15)
    push_image(client, repo, index, "v1")
    push_image(client, repo, index, "latest")
    push_image(client, repo, single, "solo")
    assert provider.tags_of(repo, index.digest) == ("latest", "v1")
    assert provider.tags_of(repo, single.digest) == ("solo",)
    assert provider.tags_of(repo, index.children[0].digest) == ()
    assert provider.tags_of(f"{repo}/absent", single.digest) == ()
    assert provider.index_children(repo) == {index.digest: tuple(c.digest for c in index.children)}
    assert provider.index_children(f"{repo}/absent") == {}


@pytest.mark.parametrize("fail_on", ["index", "child"])
def test_an_interrupted_move_resumes_to_the_same_end_state(
    registry: LocalRegistry,
    client: RegistryClient,
    ledger: SqliteLedger,
    repo: str,
    fail_on: str,
) -> None:
    index = make_multiarch(seed=16)
    push_image(client, repo, index, "v1")
    target = index.digest if fail_on == "index" else index.children[1].digest
    everything = [index.digest, *(c.digest for c in index.children)]
    qrepo = f"quarantine/{repo}"
    with (
        RegistryProxy(registry.host) as proxy,
        closing(
            OciRegistry(
                proxy.host, ProviderOptions(), client=RegistryClient(proxy.host, backoff=0.01)
            )
        ) as via_proxy,
    ):
        # more 500s than the client retries: the attempt fails for good
        proxy.inject(500, count=5, method="DELETE", path=f"/manifests/{target}$")
        with pytest.raises(RegistryError):
            quarantine(
                via_proxy,
                ledger,
                image=ImageRef(registry=proxy.host, repository=repo, digest=index.digest),
                tags=("v1",),
                strategy="move",
                repository_template="quarantine/{repository}",
                reason="not signed",
                now=T0,
            )
        assert proxy.count(method="DELETE", status=500) == 5
        ref = ImageRef(registry=proxy.host, repository=repo, digest=index.digest)
        state = describe_state(ledger, ref)
        if fail_on == "index":
            assert state.startswith(f"copied to {qrepo} with its 2 children, still present")
            assert present(client, repo, everything) == [True, True, True]
        else:
            assert state.startswith(f"index moved to {qrepo} with its 2 children; the children")
            assert present(client, repo, everything) == [False, False, True]

        out = quarantine(  # the retry: resumes from the recorded step and children
            via_proxy,
            ledger,
            image=ref,
            tags=(),
            strategy="move",
            repository_template="quarantine/{repository}",
            reason="not signed",
            now=T0,
        )
    assert out.removed_tags == ("v1",) and out.children == tuple(everything[1:])
    assert present(client, repo, everything) == [False, False, False]
    assert present(client, qrepo, everything) == [True, True, True]
    assert client.list_tags(qrepo) == [quarantine_tag(index.digest)]
