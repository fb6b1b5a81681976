"""The ECR provider's capabilities on moto (server mode) with a real CNCF distribution on
loopback as its `/v2/` (moto serves none):

- what the AWS functions' own ECR subclass did is `ProviderOptions` now: a `Runtime` with
  `provider_defaults=ProviderOptions(data_plane_host=…, create_repositories=True)` opens
  an ECR provider whose `move` quarantine creates its destination repository (MUTABLE,
  encrypted, tagged as regwarden's), and whose blobs go over that data-plane host
- without `create_repositories` a copy into a missing repository stays NotFound, and a
  missing source is NotFound either way, creating nothing
- ECR's throttling answers, retried by botocore on its own, reach `watch_throttling`
  (its `needs-retry` hook), until the watch is undone
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import moto_server as support
from support.moto_server import (
    REGISTRY_HOST,
    EcrLimitsProxy,
    MotoServer,
    ProxyCall,
    oci_manifest,
    put_manifest,
)

from regwarden.actions import quarantine
from regwarden.devtools import LocalRegistry, make_image, push_image
from regwarden.errors import NotFound
from regwarden.oci import RegistryClient
from regwarden.policy import load_policy_text
from regwarden.providers import ProviderOptions
from regwarden.providers.ecr import EcrRegistry
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime
from regwarden.store import SqliteLedger

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("docker-registry") is None, reason="needs the docker-registry binary"
    ),
]

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = "apiVersion: regwarden/v1\nkind: Policy\ndefaults:\n  team: platform\n"


@pytest.fixture(scope="module")
def local() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture
def ecr(moto: MotoServer) -> Any:
    return moto.client("ecr")


def push_both(
    ecr: Any, local: LocalRegistry, repository: str, seed: int, tag: str
) -> tuple[str, list[str]]:
    """Blobs (and the manifest) into the local registry, the manifest into moto; the
    digest and the image's blobs."""
    image = make_image(seed=seed, layers=2, layer_size=256)
    with RegistryClient(local.host) as oci:
        push_image(oci, repository, image, tag)
    digest = put_manifest(ecr, repository, image.manifest, tag=tag, media_type=image.media_type)
    return digest, sorted(image.blobs)


def test_runtime_provider_defaults_give_the_functions_ecr_behaviour(
    ecr: Any,
    ecr_proxy: EcrLimitsProxy,
    local: LocalRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", ecr_proxy.endpoint_url)  # boto3's own setting
    ecr.create_repository(repositoryName="team/api")
    digest, blobs = push_both(ecr, local, "team/api", 41, "1.0.0")
    policy = load_policy_text(POLICY, source="p.yaml", base_dir="/tmp")
    defaults = ProviderOptions(data_plane_host=local.host, create_repositories=True)
    with closing(SqliteLedger(tmp_path / "ledger.db")) as ledger:
        runtime = Runtime(policy, ledger=ledger, provider_defaults=defaults)
        registry = runtime.registry(REGISTRY_HOST)
        try:
            assert isinstance(registry, EcrRegistry)
            assert registry.data_plane_host == local.host
            outcome = quarantine(
                registry,
                ledger,
                image=ImageRef(
                    registry=REGISTRY_HOST, repository="team/api", tag=None, digest=digest
                ),
                tags=("1.0.0",),
                strategy="move",
                repository_template="quarantine/{repository}",
                reason="CRITICAL CVE-2026-0001",
                now=NOW,
            )
        finally:
            registry.close()
    assert (outcome.location, outcome.removed_tags) == ("quarantine/team/api", ("1.0.0",))
    assert ecr.describe_images(repositoryName="team/api")["imageDetails"] == []  # moved
    created = ecr.describe_repositories(repositoryNames=["quarantine/team/api"])["repositories"][0]
    assert created["imageTagMutability"] == "MUTABLE"  # a release can re-tag
    assert created["encryptionConfiguration"]["encryptionType"] == "AES256"
    tags = ecr.list_tags_for_resource(resourceArn=created["repositoryArn"])["tags"]
    assert {"Key": "managed-by", "Value": "regwarden"} in tags
    held = ecr.describe_images(
        repositoryName="quarantine/team/api", imageIds=[{"imageDigest": digest}]
    )
    assert held["imageDetails"][0]["imageDigest"] == digest
    assert ecr_proxy.operations("CreateRepository") != []
    # the blobs went over the configured data plane (manifests stay on the control plane)
    with RegistryClient(local.host) as oci:
        assert len(blobs) == 3
        assert all(oci.blob_exists("quarantine/team/api", d) for d in blobs)


def test_without_create_repositories_a_missing_destination_stays_missing(
    ecr: Any, ecr_proxy: EcrLimitsProxy, local: LocalRegistry
) -> None:
    ecr.create_repository(repositoryName="team/web")
    digest, _ = push_both(ecr, local, "team/web", 42, "2.0.0")
    plain = EcrRegistry(
        REGISTRY_HOST,
        ProviderOptions(data_plane_host=local.host),
        endpoint_url=ecr_proxy.endpoint_url,
    )
    creating = EcrRegistry(
        REGISTRY_HOST,
        ProviderOptions(data_plane_host=local.host, create_repositories=True),
        endpoint_url=ecr_proxy.endpoint_url,
    )
    try:
        with pytest.raises(NotFound):
            plain.copy("team/web", digest, "held/team/web")
        with pytest.raises(NotFound):  # the source is what is missing: nothing is created
            creating.copy("team/none", digest, "team/web")
        assert creating.copy("team/web", digest, "held/team/web", "kept") == digest
        assert creating.copy("team/web", digest, "held/team/web", "kept") == digest  # repeat
    finally:
        plain.close()
        creating.close()
    names = {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}
    assert names == {"team/web", "held/team/web"}
    assert len(ecr_proxy.operations("CreateRepository")) == 1


class ThrottlingProxy(EcrLimitsProxy):
    """`EcrLimitsProxy` that answers the next `throttle` BatchDeleteImage requests with
    ECR's ThrottlingException (HTTP 400), as ECR does past its request rate."""

    throttle = 0

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        target = headers.get("X-Amz-Target") or headers.get("x-amz-target") or ""
        if target.endswith(".BatchDeleteImage") and self.throttle > 0:
            self.throttle -= 1
            self.calls.append(ProxyCall("BatchDeleteImage", {}, 400))
            payload = {"__type": "ThrottlingException", "message": "Rate exceeded"}
            return (
                400,
                {
                    "Content-Type": "application/x-amz-json-1.1",
                    "x-amzn-ErrorType": "ThrottlingException",
                },
                json.dumps(payload).encode(),
            )
        return super().handle(method, path, headers, body)


@pytest.fixture
def throttling(moto: MotoServer) -> Iterator[ThrottlingProxy]:
    proxy = ThrottlingProxy(moto.endpoint_url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_throttling_botocore_retries_reaches_the_watcher_until_undone(
    ecr: Any, throttling: ThrottlingProxy
) -> None:
    ecr.create_repository(repositoryName="slow/app")
    raws = [oci_manifest(f"slow-{i}")[0] for i in range(3)]
    digests = [put_manifest(ecr, "slow/app", raw, tag=f"v{i}") for i, raw in enumerate(raws)]
    registry = EcrRegistry(REGISTRY_HOST, ProviderOptions(), endpoint_url=throttling.endpoint_url)
    seen: list[float | None] = []
    try:
        undo = registry.watch_throttling(seen.append)
        throttling.throttle = 2
        results = registry.delete_many("slow/app", digests[:2])
        assert [(r.digest, r.status) for r in results] == [(d, "deleted") for d in digests[:2]]
        assert seen == [None, None]  # both throttled answers, retried inside botocore
        assert len(throttling.operations("BatchDeleteImage")) == 3  # sent, retried twice
        undo()
        throttling.throttle = 1
        assert [r.status for r in registry.delete_many("slow/app", digests[2:])] == ["deleted"]
        assert seen == [None, None]  # undone: no longer told
        assert len(throttling.operations("BatchDeleteImage")) == 5
    finally:
        registry.close()
