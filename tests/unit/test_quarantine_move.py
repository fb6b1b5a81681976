"""`move` treats an index as one unit: the index and its children leave the source together
(except a child something else there still needs), an interrupted move resumes to the same
end state, and release brings both back."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.memory_registry import MemoryRegistry

from regwarden.actions import QuarantineOutcome, describe_state, quarantine, release
from regwarden.devtools import IndexBlobs, make_image, make_index, make_multiarch
from regwarden.errors import RegistryError
from regwarden.oci import Manifest
from regwarden.quarantine_names import quarantine_tag
from regwarden.reference import ImageRef
from regwarden.store import SqliteLedger

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REPO = "team/app"
QREPO = f"quarantine/{REPO}"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    led = SqliteLedger(tmp_path / "ledger.db")
    yield led
    led.close()


def ref(reg: MemoryRegistry, digest: str) -> ImageRef:
    return ImageRef(registry=reg.host, repository=REPO, tag=None, digest=digest)


def move(
    reg: MemoryRegistry,
    ledger: SqliteLedger,
    content: IndexBlobs,
    *,
    with_manifest: bool = True,
) -> QuarantineOutcome:
    manifest = Manifest.parse(content.manifest) if with_manifest else None
    return quarantine(
        reg,
        ledger,
        image=ref(reg, content.digest),
        tags=("v1",),
        strategy="move",
        repository_template="quarantine/{repository}",
        reason="not signed",
        now=T0,
        manifest=manifest,
    )


def children(content: IndexBlobs) -> list[str]:
    return [c.digest for c in content.children]


@pytest.mark.parametrize("with_manifest", [True, False], ids=["manifest-given", "read-it"])
def test_an_index_moves_with_its_children_and_release_brings_both_back(
    ledger: SqliteLedger, with_manifest: bool
) -> None:
    reg = MemoryRegistry()
    index = make_multiarch(seed=1)
    reg.push(REPO, index, "v1")
    reg.add_tag(REPO, index.digest, "latest")

    out = move(reg, ledger, index, with_manifest=with_manifest)
    assert out.children == tuple(children(index)) and out.kept_children == {}
    assert out.removed_tags == ("latest", "v1")
    assert reg.manifests[REPO] == {}
    assert reg.tags[REPO] == {}
    assert all(reg.has(QREPO, d) for d in [index.digest, *children(index)])
    assert reg.tags[QREPO] == {quarantine_tag(index.digest): index.digest}
    assert describe_state(ledger, ref(reg, index.digest)) == (
        f"moved to {QREPO} with its 2 children"
    )

    back = release(reg, ledger, image=ref(reg, index.digest), reason="signed now", now=T0)
    assert back.restored_tags == ("latest", "v1") and back.notes == ()
    assert all(reg.has(REPO, d) for d in [index.digest, *children(index)])
    assert reg.tags_of(REPO, index.digest) == ("latest", "v1")
    assert reg.manifests[QREPO] == {} and reg.tags[QREPO] == {}


def test_a_child_another_index_lists_stays_in_the_source(ledger: SqliteLedger) -> None:
    reg = MemoryRegistry()
    index = make_multiarch(seed=1)
    shared, only_ours = children(index)
    other = make_index([index.children[0], make_image(platform="linux/s390x", seed=77)])
    reg.push(REPO, index, "v1")
    reg.push(REPO, other, "other")

    out = move(reg, ledger, index)
    assert out.kept_children == {shared: f"also listed by index {other.digest}"}
    assert f"child {shared} stays in {REPO}: also listed by index {other.digest}" in out.notes
    assert reg.has(REPO, shared) and not reg.has(REPO, only_ours)
    assert not reg.has(REPO, index.digest)
    assert all(reg.has(REPO, d) for d in [other.digest, *children(other)])  # still pullable
    assert describe_state(ledger, ref(reg, index.digest)).endswith(
        f"; child {shared} stays in {REPO} (also listed by index {other.digest})"
    )

    release(reg, ledger, image=ref(reg, index.digest), reason="ok", now=T0)
    assert all(reg.has(REPO, d) for d in [index.digest, shared, only_ours])
    assert reg.manifests[QREPO] == {}


def test_a_child_with_its_own_tag_stays(ledger: SqliteLedger) -> None:
    reg = MemoryRegistry()
    index = make_multiarch(seed=1)
    amd64, arm64 = children(index)
    reg.push(REPO, index, "v1")
    reg.add_tag(REPO, amd64, "v1-amd64")
    out = move(reg, ledger, index)
    assert out.kept_children == {amd64: "tagged v1-amd64 on its own"}
    assert reg.resolve(REPO, "v1-amd64") == amd64 and not reg.has(REPO, arm64)


def test_release_keeps_a_child_another_quarantined_index_still_lists(
    ledger: SqliteLedger,
) -> None:
    reg = MemoryRegistry()
    first = make_multiarch(seed=1)
    second = make_index([first.children[0], make_image(platform="linux/s390x", seed=77)])
    shared = first.children[0].digest
    reg.push(REPO, first, "v1")
    reg.push(REPO, second, "v2")
    move(reg, ledger, first)
    move(reg, ledger, second)
    assert reg.manifests[REPO] == {}  # the shared child left once neither index needed it

    back = release(reg, ledger, image=ref(reg, first.digest), reason="ok", now=T0)
    assert back.notes == (f"child {shared} stays in {QREPO}: also listed by index {second.digest}",)
    assert reg.has(QREPO, shared) and reg.has(QREPO, second.digest)
    assert all(reg.has(REPO, d) for d in [first.digest, *children(first)])


def _end_state(reg: MemoryRegistry) -> tuple[object, object]:
    return (
        {r: sorted(m) for r, m in reg.manifests.items()},
        copy.deepcopy(reg.tags),
    )


@pytest.mark.parametrize(
    ("op", "which", "state_words"),
    [
        ("copy", None, "nothing changed yet; the image is still in team/app"),
        (
            "delete",
            "index",
            "copied to quarantine/team/app with its 2 children, still present in team/app "
            "and deployable as v1",
        ),
        (
            "delete",
            "child0",
            "index moved to quarantine/team/app with its 2 children; the children",
        ),
        (
            "delete",
            "child1",
            "index moved to quarantine/team/app with its 2 children; the children",
        ),
        ("index_children", None, "index moved to quarantine/team/app with its 2 children"),
    ],
)
def test_an_interrupted_move_resumes_to_the_same_end_state(
    tmp_path: Path, op: str, which: str | None, state_words: str
) -> None:
    index = make_multiarch(seed=3)
    clean = MemoryRegistry()
    clean.push(REPO, index, "v1")
    with closing(SqliteLedger(tmp_path / "clean.db")) as led:
        expected = move(clean, led, index)

    reg = MemoryRegistry()
    reg.push(REPO, index, "v1")
    target = {"index": index.digest, "child0": children(index)[0], "child1": children(index)[1]}
    reg.fail(op, times=1, ref=target.get(which or ""))
    with closing(SqliteLedger(tmp_path / "ledger.db")) as led:
        with pytest.raises(RegistryError):
            move(reg, led, index)
        assert describe_state(led, ref(reg, index.digest)).startswith(state_words)
        resumed = move(reg, led, index)
        again = move(reg, led, index)
    assert _end_state(reg) == _end_state(clean)
    assert resumed.children == expected.children and resumed.removed_tags == ("v1",)
    assert again.already_done


def test_an_intent_recorded_without_children_learns_them_on_resume(tmp_path: Path) -> None:
    reg = MemoryRegistry()
    index = make_multiarch(seed=4)
    reg.push(REPO, index, "v1")
    with closing(SqliteLedger(tmp_path / "ledger.db")) as led:
        key = f"quarantine:{reg.host}/{REPO}@{index.digest}"
        led.begin_action(  # as the previous release of regwarden wrote it
            key,
            registry=reg.host,
            repository=REPO,
            digest=index.digest,
            kind="quarantine",
            reason="not signed",
            state={"strategy": "move", "step": "start", "tags": ["v1"], "location": QREPO},
            now=T0,
        )
        out = move(reg, led, index)
    assert out.children == tuple(children(index))
    assert reg.manifests[REPO] == {}
