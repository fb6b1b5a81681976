"""The ECR provider's data plane: moto serves the control plane, a real CNCF distribution on
loopback (`docker-registry`) stands in for ECR's `/v2/` (moto serves none). Blobs live in
the local registry, manifests in moto, exactly as the provider splits the work."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from support import moto_server as support
from support.loopback import LoopbackServer
from support.moto_server import (
    REGISTRY_HOST,
    EcrLimitsProxy,
    MotoServer,
    put_manifest,
    watch,
)

from regwarden.devtools import ImageBlobs, LocalRegistry, make_image, make_index, push_image
from regwarden.oci import RegistryClient
from regwarden.providers import ProviderOptions
from regwarden.providers.ecr import EcrRegistry

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("docker-registry") is None, reason="needs the docker-registry binary"
    ),
]


@pytest.fixture(scope="module")
def local() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture
def oci(local: LocalRegistry) -> Iterator[RegistryClient]:
    with RegistryClient(local.host) as client:
        yield client


@pytest.fixture
def registry(ecr_proxy: EcrLimitsProxy, local: LocalRegistry) -> Iterator[EcrRegistry]:
    reg = EcrRegistry(
        REGISTRY_HOST,
        ProviderOptions(),
        endpoint_url=ecr_proxy.endpoint_url,
        data_plane_host=local.host,
    )
    yield reg
    reg.close()


@pytest.fixture
def ecr(moto: MotoServer) -> Any:
    return moto.client("ecr")


def push_both(
    ecr: Any, oci: RegistryClient, repository: str, image: ImageBlobs, tag: str | None
) -> str:
    """Blobs (and the manifest) into the local registry, the manifest into moto."""
    push_image(oci, repository, image, tag)
    return put_manifest(ecr, repository, image.manifest, tag=tag, media_type=image.media_type)


def test_image_details_reads_labels_and_created_over_the_data_plane(
    registry: EcrRegistry, ecr: Any, oci: RegistryClient
) -> None:
    created = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    labels = {"team": "payments", "org.opencontainers.image.source": "https://example.com/x"}
    image = make_image(layers=2, labels=labels, created=created, seed=11)
    ecr.create_repository(repositoryName="dp/app")
    digest = push_both(ecr, oci, "dp/app", image, "v1")
    calls = watch(registry.client)
    details = registry.image_details("dp/app", "v1")
    assert details.record.digest == digest == image.digest
    assert details.labels == labels
    assert details.record.created == created
    assert details.layer_count == 2
    assert details.record.tags == ("v1",)
    assert details.manifest == json.loads(image.manifest)
    assert calls.count("GetAuthorizationToken") == 1  # credentials for /v2/


def test_copy_mounts_missing_blobs_then_puts_the_manifest(
    registry: EcrRegistry, ecr: Any, oci: RegistryClient
) -> None:
    image = make_image(layers=2, seed=21)
    for repo in ("src/app", "quarantine/src/app"):
        ecr.create_repository(repositoryName=repo)
    digest = push_both(ecr, oci, "src/app", image, "v1")
    blobs = [image.config_digest, *image.layer_digests]
    assert not any(oci.blob_exists("quarantine/src/app", b) for b in blobs)

    calls = watch(registry.client)
    assert registry.copy("src/app", "v1", "quarantine/src/app") == digest
    (check,) = calls.of("BatchCheckLayerAvailability")
    assert check["repositoryName"] == "quarantine/src/app"
    assert check["layerDigests"] == blobs
    assert all(oci.blob_exists("quarantine/src/app", b) for b in blobs)  # mounted on /v2/
    (put,) = calls.of("PutImage")
    assert put["imageTag"] == "v1" and put["imageDigest"] == digest
    assert put["imageManifest"] == image.manifest.decode()  # the exact bytes: same digest
    assert registry.resolve("quarantine/src/app", "v1") == digest

    registry.copy("src/app", digest, "quarantine/src/app", tag="held")  # idempotent, new tag
    assert registry.resolve("quarantine/src/app", "held") == digest
    registry.copy("src/app", "v1", "quarantine/src/app")  # repeat: "already exists" is fine
    assert registry.resolve("quarantine/src/app", "v1") == digest


def test_copy_skips_blobs_ecr_already_has(
    registry: EcrRegistry, ecr: Any, oci: RegistryClient
) -> None:
    """A layer the destination already holds (uploaded through ECR's layer API) is not
    copied again; only the missing blobs travel over the data plane."""
    image = make_image(layers=2, seed=31)
    for repo in ("have/src", "have/dst"):
        ecr.create_repository(repositoryName=repo)
    push_both(ecr, oci, "have/src", image, "v1")
    present = image.layers[0]
    upload = ecr.initiate_layer_upload(repositoryName="have/dst")["uploadId"]
    ecr.upload_layer_part(
        repositoryName="have/dst",
        uploadId=upload,
        partFirstByte=0,
        partLastByte=len(present) - 1,
        layerPartBlob=present,
    )
    ecr.complete_layer_upload(
        repositoryName="have/dst", uploadId=upload, layerDigests=[image.layer_digests[0]]
    )
    assert registry.missing_blobs("have/dst", [image.config_digest, *image.layer_digests]) == [
        image.config_digest,
        image.layer_digests[1],
    ]
    registry.copy("have/src", "v1", "have/dst")
    assert oci.blob_exists("have/dst", image.config_digest)
    assert oci.blob_exists("have/dst", image.layer_digests[1])
    assert not oci.blob_exists("have/dst", image.layer_digests[0])  # ECR had it: not sent


def test_copy_index_puts_children_first(
    registry: EcrRegistry, ecr: Any, oci: RegistryClient
) -> None:
    children = [
        make_image(platform="linux/amd64", seed=41),
        make_image(platform="linux/arm64", seed=42),
    ]
    index = make_index(children)
    for repo in ("multi/src", "multi/dst"):
        ecr.create_repository(repositoryName=repo)
    push_image(oci, "multi/src", index, "v1")
    for child in children:
        put_manifest(ecr, "multi/src", child.manifest)
    put_manifest(ecr, "multi/src", index.manifest, tag="v1", media_type=index.media_type)

    calls = watch(registry.client)
    assert registry.copy("multi/src", "v1", "multi/dst", tag="v1") == index.digest
    puts = [(p["imageDigest"], p.get("imageTag")) for p in calls.of("PutImage")]
    assert puts == [(children[0].digest, None), (children[1].digest, None), (index.digest, "v1")]
    for child in children:
        assert registry.resolve("multi/dst", child.digest) == child.digest
        assert all(oci.blob_exists("multi/dst", b) for b in child.blobs)
    details = registry.image_details("multi/dst", "v1")
    assert [p.digest for p in details.platforms] == [c.digest for c in children]
    assert details.record.children == tuple(c.digest for c in children)


class _Front(BaseHTTPRequestHandler):
    """ECR's `/v2/` as its first read sees it: the Authorization it came with, recorded;
    401 with ECR's Basic challenge when none, else an empty tag list."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[str | None]]

    def do_GET(self) -> None:
        authorization = self.headers.get("Authorization")
        self.seen.append(authorization)
        if authorization is None:
            body = b'{"errors": [{"code": "UNAUTHORIZED", "message": "Not Authorized"}]}'
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="https://ecr",service="ecr"')
        else:
            body = b'{"name": "app", "tags": []}'
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_first_read_carries_ecrs_basic_credentials_without_drawing_a_401(
    ecr_proxy: EcrLimitsProxy,
) -> None:
    seen: list[str | None] = []
    with LoopbackServer(type("Recording", (_Front,), {"seen": seen})) as front:
        reg = EcrRegistry(
            REGISTRY_HOST,
            ProviderOptions(),
            endpoint_url=ecr_proxy.endpoint_url,
            data_plane_host=front.host,
        )
        try:
            assert reg.data_plane().list_tags("app") == []
        finally:
            reg.close()
    (first,) = seen
    assert first is not None and first.startswith("Basic ")
    user, _, password = base64.b64decode(first.removeprefix("Basic ")).decode().partition(":")
    assert user == "AWS" and password
