"""`retag` on ECR (moto in server mode behind ECR's limits) acts on what the registry holds
now: an image whose push regwarden never saw (empty ledger) keeps no deployable tag, release
restores them, and a tag rolls back past a FAILED digest to an older PASSED one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import ecr_registry as ecr_support
from support import moto_server as support
from support.moto_server import (
    OCI_INDEX,
    REGISTRY_HOST,
    MotoServer,
    oci_manifest,
    put_manifest,
    watch,
)

from regwarden.actions import QuarantineOutcome, describe_state, quarantine, release
from regwarden.providers.ecr import EcrRegistry
from regwarden.quarantine_names import quarantine_tag
from regwarden.reference import ImageRef
from regwarden.store import SqliteLedger

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy
# retag and release are control-plane only: a closed data-plane port proves it
registry = ecr_support.control_plane_registry

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REPO = "payments/api"


@pytest.fixture
def ecr(moto: MotoServer) -> Any:
    client = moto.client("ecr")
    client.create_repository(repositoryName=REPO)
    return client


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    with closing(SqliteLedger(tmp_path / "ledger.db")) as led:
        yield led


def ref(digest: str) -> ImageRef:
    return ImageRef(registry=REGISTRY_HOST, repository=REPO, tag=None, digest=digest)


def retag(
    registry: EcrRegistry, ledger: SqliteLedger, digest: str, tags: tuple[str, ...] = ()
) -> QuarantineOutcome:
    return quarantine(
        registry,
        ledger,
        image=ref(digest),
        tags=tags,
        strategy="retag",
        repository_template="quarantine/{repository}",
        reason="CRITICAL CVE-2026-0001 (ECR scan)",
        now=T0,
    )


def tags(ecr: Any, digest: str) -> list[str]:
    found = ecr.describe_images(repositoryName=REPO, imageIds=[{"imageDigest": digest}])
    return sorted(found["imageDetails"][0].get("imageTags") or [])


def test_an_image_regwarden_never_saw_pushed_keeps_no_deployable_tag(
    registry: EcrRegistry, ecr: Any, ledger: SqliteLedger
) -> None:
    raw, digest = oci_manifest("never-seen")
    put_manifest(ecr, REPO, raw, tag="1.0.1")
    for tag in ("1.0", "latest"):
        put_manifest(ecr, REPO, raw, tag=tag)
    calls = watch(registry.client)

    out = retag(registry, ledger, digest)  # an on_scan verdict: no tag in the event or ledger

    assert tags(ecr, digest) == [quarantine_tag(digest)]
    assert out.removed_tags == ("1.0", "1.0.1", "latest")
    assert calls.count("DescribeImages") >= 1  # the tags came from the registry
    held = ledger.quarantined(REGISTRY_HOST, REPO, digest)
    assert held is not None and held.tags == ("1.0", "1.0.1", "latest")
    assert describe_state(ledger, ref(digest)) == "deployable tags removed"

    back = release(registry, ledger, image=ref(digest), reason="false positive", now=T0)

    assert back.restored_tags == ("1.0", "1.0.1", "latest")
    assert tags(ecr, digest) == ["1.0", "1.0.1", "latest"]


def test_tags_of_and_index_children_on_ecr(registry: EcrRegistry, ecr: Any) -> None:
    child_a, a = oci_manifest("child-a")
    child_b, b = oci_manifest("child-b")
    put_manifest(ecr, REPO, child_a)
    put_manifest(ecr, REPO, child_b)
    entries = ",".join(
        f'{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}",'
        f'"size":{len(raw)}}}'
        for raw, d in ((child_a, a), (child_b, b))
    )
    index = f'{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{entries}]}}'.encode()
    index_digest = put_manifest(ecr, REPO, index, tag="v2", media_type=OCI_INDEX)
    put_manifest(ecr, REPO, index, tag="stable", media_type=OCI_INDEX)

    assert registry.tags_of(REPO, index_digest) == ("stable", "v2")
    assert registry.tags_of(REPO, a) == ()
    assert registry.tags_of("no/such-repo", a) == ()
    assert registry.index_children(REPO) == {index_digest: (a, b)}  # untagged ones too
    assert registry.index_children("no/such-repo") == {}


def test_a_tag_rolls_back_past_a_failed_digest_to_an_older_passed_one(
    registry: EcrRegistry, ecr: Any, ledger: SqliteLedger
) -> None:
    pushes = []
    for n, verdict in enumerate(("PASSED", "FAILED", None)):
        raw, digest = oci_manifest(f"release-{n}")
        # a build tag first: moto deletes an image whose only tag moves away (ECR would
        # keep it untagged), and the older images must still exist
        put_manifest(ecr, REPO, raw, tag=f"build-{n}")
        put_manifest(ecr, REPO, raw, tag="prod")  # each push moves the tag
        at = T0 - timedelta(hours=3 - n)
        ledger.record_push(REGISTRY_HOST, REPO, digest, ("prod",), now=at)
        if verdict is not None:
            ledger.record_verdict(REGISTRY_HOST, REPO, digest, verdict, now=at)
        pushes.append(digest)
    passed, failed, newest = pushes

    out = retag(registry, ledger, newest, tags=("prod",))

    assert out.rolled_back == {"prod": passed}
    assert registry.resolve(REPO, "prod") == passed
    assert f"tag 'prod': skipped {failed}: it is FAILED" in out.notes
    assert tags(ecr, newest) == [quarantine_tag(newest)]
