"""Quarantine on GAR against the fake Artifact Registry (real docker-registry behind it):
`move` into `PROJECT/quarantine/{repository}` (the AR repository created on the way) and
back, `retag` through the AR tags API and back, a tag rolled back to an older PASSED
digest, and the default template refused with the fix named."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.fake_gar import FakeGar

from regwarden.actions import describe_state, quarantine, release
from regwarden.devtools import LocalRegistry, make_image, make_multiarch, skopeo_copy, write_layout
from regwarden.errors import UsageError
from regwarden.providers import ProviderOptions
from regwarden.providers.gar import GarRegistry
from regwarden.quarantine_names import DEFAULT_TEMPLATE, quarantine_tag
from regwarden.reference import ImageRef
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

HOST = "us-docker.pkg.dev"
TEMPLATE = "demo-proj/quarantine/{repository}"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def gar(registry: LocalRegistry) -> Iterator[FakeGar]:
    with FakeGar(registry.host) as fake:
        yield fake


@pytest.fixture
def gr(gar: FakeGar) -> Iterator[GarRegistry]:
    options = ProviderOptions(data_plane_host=gar.host, create_repositories=True)
    env = {"REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": gar.url}
    registry = GarRegistry(HOST, options, env=env, sleep=lambda _s: None)
    yield registry
    registry.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    with closing(SqliteLedger(tmp_path / "ledger.db")) as led:
        yield led


@pytest.fixture
def image(request: pytest.FixtureRequest) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:30].strip("-")
    return f"demo-proj/repo/{slug}-{uuid.uuid4().hex[:6]}"


def push(gar: FakeGar, tmp_path: Path, content: Any, image: str, *tags: str) -> str:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    layout = tmp_path / uuid.uuid4().hex[:8]
    write_layout(layout, content, tag="t")
    for tag in tags:
        skopeo_copy(f"oci:{layout}:t", f"docker://{gar.host}/{image}:{tag}")
    return str(content.manifest_digest)


def ref(image: str, digest: str) -> ImageRef:
    return ImageRef(registry=HOST, repository=image, tag=None, digest=digest)


def test_move_quarantines_an_index_into_a_created_repository_and_release_restores_it(
    gr: GarRegistry, gar: FakeGar, ledger: SqliteLedger, image: str, tmp_path: Path
) -> None:
    index = make_multiarch(seed=21)
    digest = push(gar, tmp_path, index, image, "v1", "stable")
    children = {c.manifest_digest for c in index.children}
    assert "quarantine" not in gar.repositories

    out = quarantine(
        gr,
        ledger,
        image=ref(image, digest),
        tags=("v1",),
        strategy="move",
        repository_template=TEMPLATE,
        reason="CRITICAL CVE-2026-0001",
        now=T0,
    )

    held = f"demo-proj/quarantine/{image}"
    assert out.location == held
    assert out.removed_tags == ("stable", "v1")
    assert set(out.children) == children
    assert "quarantine" in gar.repositories  # created (Docker format) by the copy
    assert gr.list_images(image) == []  # the index and its children left the source
    moved = {r.digest: r.tags for r in gr.list_images(held)}
    assert moved == {digest: (quarantine_tag(digest),), **{c: () for c in children}}
    assert {"action": "DELETE", "digest": f"{HOST}/{image}@{digest}"} in gar.messages()
    assert describe_state(ledger, ref(image, digest)).startswith(f"moved to {held}")

    back = release(gr, ledger, image=ref(image, digest), reason="false positive", now=T0)

    assert back.restored_tags == ("stable", "v1")
    assert gr.resolve(image, "v1") == digest and gr.resolve(image, "stable") == digest
    assert {r.digest for r in gr.list_images(image)} == {digest, *children}
    assert gr.list_images(held) == []


def test_retag_takes_the_tags_through_the_tags_api_and_release_puts_them_back(
    gr: GarRegistry, gar: FakeGar, ledger: SqliteLedger, image: str, tmp_path: Path
) -> None:
    digest = push(gar, tmp_path, make_image(seed=22), image, "1.0", "latest")

    out = quarantine(
        gr,
        ledger,
        image=ref(image, digest),
        tags=(),
        strategy="retag",
        repository_template=TEMPLATE,
        reason="unsigned",
        now=T0,
    )

    qtag = quarantine_tag(digest)
    assert out.removed_tags == ("1.0", "latest")  # read from AR: the ledger never saw them
    assert gr.tags_of(image, digest) == (qtag,)
    assert gr.resolve(image, "latest") is None  # hidden from /v2/ as AR hides it
    assert gr.resolve(image, digest) == digest  # still pullable by digest
    assert len(gar.calls("DELETE", r".*/packages/[^/]+/tags/(1\.0|latest)")) == 2
    assert "quarantine" not in gar.repositories  # retag copies nothing

    back = release(gr, ledger, image=ref(image, digest), reason="signed now", now=T0)

    assert back.restored_tags == ("1.0", "latest")
    assert gr.tags_of(image, digest) == ("1.0", "latest")
    assert gr.resolve(image, "latest") == digest


def test_retag_rolls_a_tag_back_to_the_last_passed_digest(
    gr: GarRegistry, gar: FakeGar, ledger: SqliteLedger, image: str, tmp_path: Path
) -> None:
    passed = push(gar, tmp_path, make_image(seed=23), image, "build-1", "prod")
    failed = push(gar, tmp_path, make_image(seed=24), image, "build-2", "prod")
    for n, (digest, verdict) in enumerate(((passed, "PASSED"), (failed, "FAILED"))):
        at = T0 - timedelta(hours=2 - n)
        ledger.record_push(HOST, image, digest, ("prod",), now=at)
        ledger.record_verdict(HOST, image, digest, verdict, now=at)

    out = quarantine(
        gr,
        ledger,
        image=ref(image, failed),
        tags=("prod",),
        strategy="retag",
        repository_template=TEMPLATE,
        reason="CRITICAL",
        now=T0,
    )

    assert out.rolled_back == {"prod": passed}
    assert gr.resolve(image, "prod") == passed  # moved back with updateTag
    assert out.removed_tags == ("build-2", "prod")
    assert gr.tags_of(image, failed) == (quarantine_tag(failed),)
    assert gr.tags_of(image, passed) == ("build-1", "prod")
    assert gar.calls("PATCH", r".*/tags/prod")


def test_the_default_template_is_refused_naming_the_fix(
    gr: GarRegistry, gar: FakeGar, ledger: SqliteLedger, image: str, tmp_path: Path
) -> None:
    digest = push(gar, tmp_path, make_image(seed=25), image, "v1")
    with pytest.raises(UsageError) as raised:
        quarantine(
            gr,
            ledger,
            image=ref(image, digest),
            tags=("v1",),
            strategy="move",
            repository_template=DEFAULT_TEMPLATE,
            reason="CRITICAL",
            now=T0,
        )
    text = str(raised.value) + (raised.value.hint or "")
    assert "project 'quarantine'" in text and "demo-proj/quarantine/{repository}" in text
    assert gr.resolve(image, "v1") == digest  # nothing moved
    assert gar.repositories == ["repo"]
