"""The ECR provider against moto in server mode on loopback (boto3 over the real wire
protocol), with `EcrLimitsProxy` applying ECR's paging and 100-id batch limits that moto
ignores. API calls are counted on the client side with botocore `before-call` hooks."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from support import ecr_registry as ecr_support
from support import moto_server as support
from support.moto_server import (
    OCI_INDEX,
    REGISTRY_HOST,
    EcrLimitsProxy,
    MotoServer,
    oci_manifest,
    put_manifest,
    sha256,
    watch,
)

from regwarden import USER_AGENT
from regwarden.errors import DigestMismatch, NotFound, NotImplementedYet, UsageError
from regwarden.providers import (
    CAP_BATCH_DELETE,
    CAP_COPY_MOUNT,
    CAP_MANIFEST_LISTING,
    CAP_NATIVE_SCAN,
    CAP_PULL_TIMES,
    CAP_PUSH_TIMES,
    CAP_TAG_DELETE,
    ProviderOptions,
    Registry,
)
from regwarden.providers import ecr as ecr_module
from regwarden.providers.ecr import (
    BATCH_DELETE_LIMIT,
    DESCRIBE_PAGE_SIZE,
    EcrRegistry,
    ImmutableTagError,
    LastTagError,
    make_ecr,
)
from regwarden.reference import short_digest

# pytest fixtures from the support module, registered under their names in this module
moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy
ecr = ecr_support.ecr
# No data plane here (see test_ecr_dataplane.py): a closed loopback port, so nothing ever
# leaves the machine.
registry = ecr_support.control_plane_registry

pytestmark = pytest.mark.integration


def test_is_a_registry_with_ecr_capabilities(registry: EcrRegistry) -> None:
    assert isinstance(registry, Registry)
    assert registry.kind == "ecr"
    assert registry.capabilities == {
        CAP_TAG_DELETE,
        CAP_PUSH_TIMES,
        CAP_PULL_TIMES,
        CAP_MANIFEST_LISTING,
        CAP_BATCH_DELETE,
        CAP_NATIVE_SCAN,
        CAP_COPY_MOUNT,
    }
    assert (registry.registry_id, registry.region) == ("123456789012", "us-east-1")


def test_botocore_config_and_user_agent(registry: EcrRegistry, ecr: Any) -> None:
    retries = registry.client.meta.config.retries
    # botocore stores max_attempts=10 (retries) as total_max_attempts=11 (first try + 10)
    assert retries == {"mode": "adaptive", "total_max_attempts": 11}
    agents: list[str] = []
    registry.client.meta.events.register(
        "before-send.ecr.*", lambda request, **_: agents.append(request.headers["User-Agent"])
    )
    ecr.create_repository(repositoryName="ua/check")
    assert list(registry.list_repositories()) == ["ua/check"]
    agent = agents[0].decode() if isinstance(agents[0], bytes) else agents[0]
    assert USER_AGENT in agent


def test_list_images_pages_of_1000_and_batch_delete_batches_of_100(
    registry: EcrRegistry, ecr: Any, ecr_proxy: EcrLimitsProxy
) -> None:
    n = 1001
    ecr.create_repository(repositoryName="bulk/app")
    manifests = [oci_manifest(f"bulk-{i}") for i in range(n)]

    def push(i: int) -> str:
        raw, _ = manifests[i]
        return put_manifest(ecr, "bulk/app", raw, tag=f"v{i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(pool.map(push, range(n)))
    assert digests == [d for _, d in manifests]

    calls = watch(registry.client)
    records = registry.list_images("bulk/app")
    # Client side: ceil(n/1000) describe_images requests, each asking for ECR's maximum page.
    pages = calls.of("DescribeImages")
    assert len(pages) == math.ceil(n / DESCRIBE_PAGE_SIZE) == 2
    assert all(p["maxResults"] == DESCRIBE_PAGE_SIZE for p in pages)
    assert "nextToken" not in pages[0] and pages[1]["nextToken"]
    # Server side (the proxy applies ECR's paging): the second page continued the first.
    seen = ecr_proxy.operations("DescribeImages")
    assert [c.body["maxResults"] for c in seen] == [1000, 1000]
    assert {r.digest for r in records} == set(digests)
    by_digest = {r.digest: r for r in records}
    for i in (0, 500, 1000):
        record = by_digest[digests[i]]
        assert record.tags == (f"v{i}",)
        assert record.media_type == "application/vnd.oci.image.manifest.v1+json"
        assert record.repository == "bulk/app"
        assert record.pushed is not None and record.pushed.tzinfo is not None
        assert abs(record.pushed - datetime.now(UTC)) < timedelta(minutes=10)
        assert record.created == record.pushed  # ECR keeps push times, not config times

    bogus = ["sha256:" + "0" * 64, "not-a-digest"]
    calls = watch(registry.client)
    result = registry.batch_delete("bulk/app", [*digests, digests[0], *bogus])
    batches = calls.of("BatchDeleteImage")
    assert len(batches) == result.calls == math.ceil(n / BATCH_DELETE_LIMIT) == 11
    assert all(len(b["imageIds"]) <= BATCH_DELETE_LIMIT for b in batches)
    assert sum(len(b["imageIds"]) for b in batches) == n + 1  # repeat dropped, invalid local
    assert sorted(result.deleted) == sorted(digests)
    failures = {f.digest: f.code for f in result.failures}
    assert failures == {bogus[0]: "ImageNotFound", bogus[1]: "InvalidImageDigest"}
    assert not result.ok
    assert registry.list_images("bulk/app") == []


def test_real_batch_limit_is_enforced_by_the_proxy(
    ecr_proxy: EcrLimitsProxy, moto: MotoServer
) -> None:
    """Why batch_delete batches: more than 100 ids in one call is a ValidationException."""
    client = moto.client("ecr", endpoint_url=ecr_proxy.endpoint_url)
    client.create_repository(repositoryName="limits")
    ids = [{"imageDigest": sha256(str(i))} for i in range(BATCH_DELETE_LIMIT + 1)]
    with pytest.raises(ClientError, match="ValidationException"):
        client.batch_delete_image(repositoryName="limits", imageIds=ids)


def test_list_repositories_follows_next_token(
    registry: EcrRegistry, ecr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = sorted(f"team{i:02d}/svc" for i in range(25))
    for name in names:
        ecr.create_repository(repositoryName=name)
    monkeypatch.setattr(ecr_module, "DESCRIBE_PAGE_SIZE", 10)
    calls = watch(registry.client)
    assert sorted(registry.list_repositories()) == names
    pages = calls.of("DescribeRepositories")
    assert len(pages) == math.ceil(len(names) / 10)
    assert all(p["maxResults"] == 10 and p["registryId"] == "123456789012" for p in pages)


def test_pull_time_size_and_artifact_type_are_mapped(
    registry: EcrRegistry, ecr: Any, ecr_proxy: EcrLimitsProxy
) -> None:
    """moto keeps no pull times: the proxy adds ECR's fields to moto's answer."""
    ecr.create_repository(repositoryName="times")
    raw, digest = oci_manifest("times")
    put_manifest(ecr, "times", raw, tag="v1")
    pulled = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    def add_fields(doc: dict[str, Any]) -> None:
        for detail in doc["imageDetails"]:
            detail["lastRecordedPullTime"] = pulled.timestamp()
            detail["artifactMediaType"] = "application/vnd.oci.image.config.v1+json"
            detail["imageSizeInBytes"] = 123456

    ecr_proxy.rewrite["DescribeImages"] = add_fields
    (record,) = registry.list_images("times")
    assert record.digest == digest
    assert record.last_pulled == pulled
    assert record.size == 123456
    assert record.artifact_type == "application/vnd.oci.image.config.v1+json"


def test_index_records_list_their_children(registry: EcrRegistry, ecr: Any) -> None:
    ecr.create_repository(repositoryName="multi")
    # artifact configs: image_details reads no config blob (labels need the data plane)
    children = [
        oci_manifest(f"child-{arch}", config_media_type="application/vnd.example.config+json")
        for arch in ("amd64", "arm64")
    ]
    for raw, _ in children:
        put_manifest(ecr, "multi", raw)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d,
                "size": len(raw),
                "platform": {"os": "linux", "architecture": arch},
            }
            for (raw, d), arch in zip(children, ("amd64", "arm64"), strict=True)
        ],
    }
    raw_index = json.dumps(index).encode()
    index_digest = put_manifest(ecr, "multi", raw_index, tag="v1")
    calls = watch(registry.client)
    records = {r.digest: r for r in registry.list_images("multi")}
    assert records[index_digest].children == tuple(d for _, d in children)
    assert records[index_digest].media_type == OCI_INDEX
    assert calls.count("BatchGetImage") == 1  # one per 100 indexes
    details = registry.image_details("multi", "v1")
    assert [str(p) for p in details.platforms] == ["linux/amd64", "linux/arm64"]
    assert [p.digest for p in details.platforms] == [d for _, d in children]
    assert details.record.tags == ("v1",)


def test_add_tag_in_mutable_repository(registry: EcrRegistry, ecr: Any) -> None:
    ecr.create_repository(repositoryName="mut", imageTagMutability="MUTABLE")
    raw_a, a = oci_manifest("a")
    raw_b, b = oci_manifest("b")
    put_manifest(ecr, "mut", raw_a, tag="v1")
    put_manifest(ecr, "mut", raw_b, tag="v2")
    assert registry.repository_mutability("mut") == "MUTABLE"
    registry.add_tag("mut", a, "stable")
    registry.add_tag("mut", a, "stable")  # repeat: ECR says "already exists" → success
    assert registry.resolve("mut", "stable") == a
    registry.add_tag("mut", b, "stable")  # a mutable tag moves
    assert registry.resolve("mut", "stable") == b
    with pytest.raises(NotFound):
        registry.add_tag("mut", sha256("absent"), "x")


def test_add_tag_in_immutable_repository(registry: EcrRegistry, ecr: Any) -> None:
    ecr.create_repository(repositoryName="immut", imageTagMutability="IMMUTABLE")
    raw_a, a = oci_manifest("ia")
    raw_b, b = oci_manifest("ib")
    put_manifest(ecr, "immut", raw_a, tag="v1")
    put_manifest(ecr, "immut", raw_b, tag="v2")
    assert registry.repository_mutability("immut") == "IMMUTABLE"
    registry.add_tag("immut", a, "v1")  # already there: fine
    registry.add_tag("immut", a, f"quarantined-{short_digest(a)}")  # a new tag: fine
    with pytest.raises(ImmutableTagError, match=r"cannot point tag 'v2' in IMMUTABLE") as info:
        registry.add_tag("immut", a, "v2")
    assert info.value.existing == b and info.value.wanted == a
    assert b in str(info.value) and a in str(info.value)
    assert registry.resolve("immut", "v2") == b  # unchanged


def test_remove_tag_keeps_the_image_and_refuses_the_last_tag(
    registry: EcrRegistry, ecr: Any
) -> None:
    ecr.create_repository(repositoryName="untag")
    raw, digest = oci_manifest("untag")
    put_manifest(ecr, "untag", raw, tag="v1")
    registry.add_tag("untag", digest, "latest")
    registry.remove_tag("untag", "latest")
    assert registry.resolve("untag", "latest") is None
    assert registry.resolve("untag", digest) == digest

    calls = watch(registry.client)
    with pytest.raises(LastTagError, match=r"last tag, and ECR deletes an image") as info:
        registry.remove_tag("untag", "v1")
    assert f"quarantined-{short_digest(digest)}" in str(info.value)
    assert calls.count("BatchDeleteImage") == 0  # nothing was sent
    assert registry.resolve("untag", "v1") == digest

    # The quarantine order: add the quarantine tag first, then remove the deployable tag.
    quarantine_tag = f"quarantined-{short_digest(digest)}"
    registry.add_tag("untag", digest, quarantine_tag)
    registry.remove_tag("untag", "v1")
    (record,) = registry.list_images("untag")
    assert record.digest == digest and record.tags == (quarantine_tag,)

    with pytest.raises(NotFound, match="not found"):
        registry.remove_tag("untag", "v1")
    registry.remove_tag("untag", quarantine_tag, allow_image_delete=True)
    assert registry.list_images("untag") == []


def test_delete_and_resolve(registry: EcrRegistry, ecr: Any) -> None:
    ecr.create_repository(repositoryName="del")
    raw, digest = oci_manifest("del")
    put_manifest(ecr, "del", raw, tag="v1")
    assert registry.resolve("del", "v1") == digest
    assert registry.resolve("del", "v9") is None
    assert registry.resolve("no/such/repo", "v1") is None
    registry.delete("del", digest)
    assert registry.resolve("del", digest) is None
    with pytest.raises(NotFound, match="ImageNotFound"):
        registry.delete("del", digest)


def test_missing_repository_is_not_found(registry: EcrRegistry) -> None:
    with pytest.raises(NotFound, match="RepositoryNotFoundException"):
        registry.list_images("nowhere")
    with pytest.raises(NotFound):
        registry.repository_mutability("nowhere")


def test_image_details_checks_the_manifest_digest(registry: EcrRegistry, ecr: Any) -> None:
    """A registry answering with bytes that do not hash to the digest fails closed."""
    ecr.create_repository(repositoryName="liar")
    raw, _ = oci_manifest("liar")
    wrong = sha256("something else")
    put_manifest(ecr, "liar", raw, tag="v1", digest=wrong)
    with pytest.raises(DigestMismatch, match=f"expected {wrong}"):
        registry.image_details("liar", wrong)
    with pytest.raises(DigestMismatch):
        registry.image_details("liar", "v1")


def test_image_details_of_a_referrer(registry: EcrRegistry, ecr: Any) -> None:
    ecr.create_repository(repositoryName="refs")
    raw, subject = oci_manifest("subject")
    put_manifest(ecr, "refs", raw, tag="v1")
    sbom, sbom_digest = oci_manifest("sbom", config_media_type="text/spdx+json", subject=subject)
    put_manifest(ecr, "refs", sbom)
    details = registry.image_details("refs", sbom_digest)
    assert details.record.subject == subject
    assert details.record.artifact_type == "text/spdx+json"
    assert details.labels == {}  # an artifact has no image config: no data-plane read
    assert details.layer_count == 1


def test_scan_on_push_from_repository_and_registry_rules(registry: EcrRegistry, ecr: Any) -> None:
    ecr.create_repository(repositoryName="manual")
    ecr.create_repository(repositoryName="onpush", imageScanningConfiguration={"scanOnPush": True})
    assert registry.scan_on_push("onpush") is True
    assert registry.scan_on_push("manual") is False
    ecr.put_registry_scanning_configuration(
        scanType="ENHANCED",
        rules=[
            {
                "scanFrequency": "CONTINUOUS_SCAN",
                "repositoryFilters": [{"filter": "manual", "filterType": "WILDCARD"}],
            }
        ],
    )
    assert registry.scan_on_push("manual") is True


def test_authorization_token_is_cached_until_expiry(moto: MotoServer) -> None:
    """moto's tokens "expire" on 2015-01-01: a clock before that keeps the cache valid."""
    now = [datetime(2014, 12, 31, 12, 0, tzinfo=UTC)]
    registry = EcrRegistry(REGISTRY_HOST, endpoint_url=moto.endpoint_url, clock=lambda: now[0])
    calls = watch(registry.client)
    first = registry.get_authorization_token()
    second = registry.get_authorization_token()
    assert calls.count("GetAuthorizationToken") == 1
    assert first is second
    assert first.username == "AWS" and first.password == "123456789012-auth-token"
    client = registry.data_plane()
    assert registry.data_plane() is client  # same token: same pooled client
    assert calls.count("GetAuthorizationToken") == 1
    now[0] = datetime(2014, 12, 31, 23, 56, tzinfo=UTC)  # within the refresh margin
    registry.get_authorization_token()
    assert calls.count("GetAuthorizationToken") == 2
    registry.close()


def test_make_ecr_uses_the_default_chain_and_boto3_endpoint_env(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", moto.endpoint_url)
    moto.client("ecr").create_repository(repositoryName="via/factory")
    registry = make_ecr(REGISTRY_HOST, ProviderOptions())
    try:
        assert isinstance(registry, EcrRegistry)
        assert list(registry.list_repositories()) == ["via/factory"]
    finally:
        registry.close()


def test_make_ecr_without_boto3_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ecr_module, "_boto3_missing", lambda: True)
    with pytest.raises(NotImplementedYet, match=r"needs boto3 from the 'aws' extra") as info:
        make_ecr(REGISTRY_HOST, ProviderOptions())
    assert "pip install 'regwarden[aws]'" in str(info.value)


@pytest.mark.parametrize(
    "host",
    ["registry.example.com", "123.dkr.ecr.us-east-1.amazonaws.com", "123456789012.dkr.ecr.x"],
)
def test_not_an_ecr_host(host: str) -> None:
    with pytest.raises(UsageError, match=r"not an ECR registry host: got .*expected <12-digit"):
        EcrRegistry(host, endpoint_url="http://127.0.0.1:9")
