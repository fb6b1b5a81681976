"""Faults and missing features, through the test proxy in front of a real distribution 2.8."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from support.proxy import RegistryProxy
from support.registries import PushImage

from regwarden import USER_AGENT
from regwarden.devtools import make_image, push_image
from regwarden.errors import DigestMismatch, RegistryError
from regwarden.oci import RegistryClient

pytestmark = pytest.mark.integration

MANIFESTS = r"/manifests/"


def _tag_many(client: RegistryClient, repo: str, count: int) -> tuple[str, list[str]]:
    image = make_image(seed=99)
    push_image(client, repo, image, tag=None)
    tags = [f"v{i:03d}" for i in range(count)]
    for tag in tags:
        client.put_manifest(repo, tag, image.manifest, image.media_type)
    return image.manifest_digest, tags


def test_tag_list_pagination_with_link_headers(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str
) -> None:
    _, tags = _tag_many(proxied_client, repo, 25)
    proxy.clear()
    assert proxied_client.list_tags(repo, page_size=4) == tags
    pages = proxy.matching(path=r"/tags/list", action="paged")
    assert len(pages) == 7  # ceil(25 / 4)
    assert pages[0].query == "n=4"
    assert pages[1].query == "n=4&last=v003"
    assert pages[-1].query == "n=4&last=v023"
    # without n the registry answers in one go
    proxy.clear()
    assert proxied_client.list_tags(repo) == tags
    assert proxy.count(path=r"/tags/list") == 1


def test_429_retry_after_seconds_is_honoured(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str, push: PushImage
) -> None:
    push(repo, "v1")
    proxy.inject(429, count=1, method="GET", path=MANIFESTS, headers={"Retry-After": "1"})
    started = time.monotonic()
    proxied_client.get_manifest(repo, "v1")
    elapsed = time.monotonic() - started
    assert elapsed >= 1.0
    statuses = [r.status for r in proxy.matching(method="GET", path=MANIFESTS)]
    assert statuses == [429, 200]


def test_429_retry_after_http_date_is_honoured(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str, push: PushImage
) -> None:
    push(repo, "v1")
    when = datetime.now(UTC) + timedelta(seconds=2)
    header = format_datetime(when, usegmt=True)  # whole seconds: waits 1-2 s
    proxy.inject(429, count=1, path=r"/tags/list", headers={"Retry-After": header})
    sent = datetime.now(UTC)
    started = time.monotonic()
    assert proxied_client.list_tags(repo) == ["v1"]
    waited = time.monotonic() - started
    expected = (when.replace(microsecond=0) - sent).total_seconds()
    assert expected > 0.9
    assert waited >= expected - 0.1  # the client measures from a moment after `sent`
    assert [r.status for r in proxy.matching(path=r"/tags/list")] == [429, 200]


def test_5xx_then_success(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str, push: PushImage
) -> None:
    image = push(repo, "v1")
    proxy.inject(503, count=1, method="GET", path=MANIFESTS)
    proxy.inject(502, count=1, method="GET", path=MANIFESTS)
    assert proxied_client.get_manifest(repo, "v1").digest == image.manifest_digest
    assert [r.status for r in proxy.matching(method="GET", path=MANIFESTS)] == [503, 502, 200]


def test_persistent_5xx_gives_up_with_url_and_status(proxy: RegistryProxy, repo: str) -> None:
    proxy.inject(500, count=None, path=r"/tags/list")
    with (
        RegistryClient(proxy.host, backoff=0.01, max_retries=3) as client,
        pytest.raises(RegistryError, match=r"tags/list: got HTTP 500") as info,
    ):
        client.list_tags(repo)
    assert info.value.status == 500
    assert info.value.exit_code == 3
    assert f"http://{proxy.host}/v2/{repo}/tags/list" in str(info.value)
    assert proxy.count(path=r"/tags/list") == 4  # 1 + max_retries


def test_connection_reset_is_retried(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str, push: PushImage
) -> None:
    image = push(repo, "v1")
    proxy.reset(count=2, method="GET", path=MANIFESTS)
    assert proxied_client.get_manifest(repo, "v1").digest == image.manifest_digest
    actions = [r.action for r in proxy.matching(method="GET", path=MANIFESTS)]
    assert actions == ["reset", "reset", "forwarded"]


def test_timeout_is_retried(proxy: RegistryProxy, repo: str, push: PushImage) -> None:
    image = push(repo, "v1")
    proxy.delay(0.6, count=1, method="GET", path=MANIFESTS)
    with RegistryClient(proxy.host, backoff=0.01, timeout=0.3) as client:
        assert client.get_manifest(repo, "v1").digest == image.manifest_digest


def test_unreachable_registry_is_registry_error() -> None:
    with RegistryProxy("127.0.0.1:9") as dead:  # nothing listens on the discard port
        host = dead.host
    with (
        RegistryClient(host, backoff=0.01, max_retries=1) as client,
        pytest.raises(RegistryError, match=rf"GET http://{host}/v2/: ConnectError") as info,
    ):
        client.ping()
    assert info.value.exit_code == 3


def test_tampered_manifest_is_detected(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str, push: PushImage
) -> None:
    image = push(repo, "v1", layers=1)
    proxy.tamper(
        lambda body: body.replace(b'"schemaVersion":2', b'"schemaVersion":2 '), path=MANIFESTS
    )
    with pytest.raises(DigestMismatch, match=f"manifest {repo}:v1") as by_tag:
        proxied_client.get_manifest(repo, "v1")
    assert by_tag.value.expected == image.manifest_digest
    with pytest.raises(DigestMismatch) as by_digest:
        proxied_client.get_manifest(repo, image.manifest_digest)
    assert by_digest.value.expected == image.manifest_digest
    assert by_digest.value.exit_code == 1


def test_tampered_blob_is_detected(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str, push: PushImage
) -> None:
    image = push(repo, "v1")
    proxy.tamper(lambda body: body[:-1] + bytes([body[-1] ^ 1]), path=r"/blobs/sha256:")
    with pytest.raises(DigestMismatch, match="blob"):
        proxied_client.get_blob(repo, image.config_digest)


def test_uploads_survive_faults(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str
) -> None:
    proxy.inject(500, count=1, method="POST", path=r"/blobs/uploads/")
    proxy.inject(503, count=1, method="PUT", path=r"/blobs/uploads/")
    data = b"payload that has to arrive once" * 100
    digest = proxied_client.push_blob(repo, data)
    assert proxied_client.get_blob(repo, digest) == data
    puts = [r.status for r in proxy.matching(method="PUT", path=r"/blobs/uploads/")]
    assert puts == [503, 201]


def test_oci11_tag_delete_through_proxy(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str, push: PushImage
) -> None:
    """The proxy emulates OCI 1.1 tag deletion, so the success path is exercised too."""
    image = push(repo, "v1")
    proxied_client.put_manifest(repo, "v2", image.manifest, image.media_type)
    proxied_client.delete_tag(repo, "v1")
    assert proxied_client.head_manifest(repo, "v1") is None
    assert proxied_client.list_tags(repo) == ["v2"]
    assert proxied_client.get_manifest(repo, image.manifest_digest).digest == image.manifest_digest


def test_many_threads_share_one_client(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str
) -> None:
    base = make_image(seed=5)
    push_image(proxied_client, repo, base, tag=None)
    images = [make_image(seed=5, annotations={"n": str(i)}) for i in range(64)]
    for i, image in enumerate(images):
        proxied_client.put_manifest(repo, f"t{i}", image.manifest, image.media_type)
    proxy.clear()
    proxy.inject(503, count=8, method="GET", path=MANIFESTS)
    proxy.reset(count=4, method="GET", path=MANIFESTS)
    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(lambda i: proxied_client.get_manifest(repo, f"t{i}").digest, range(64)))
    assert got == [image.manifest_digest for image in images]
    assert proxy.count(method="GET", path=MANIFESTS, status=200) == 64
    assert proxy.count(method="GET", path=MANIFESTS) == 64 + 8 + 4


def test_every_request_carries_the_user_agent(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str, push: PushImage
) -> None:
    push(repo, "v1")
    proxy.clear()
    proxied_client.ping()
    proxied_client.copy_image(repo, "v1", f"{repo}-copy")
    proxied_client.list_tags(f"{repo}-copy")
    agents = {r.user_agent for r in proxy.records}
    assert agents == {USER_AGENT}
    assert len(proxy.records) >= 5


def test_copy_blob_falls_back_to_download_when_mount_is_declined(
    proxy: RegistryProxy, proxied_client: RegistryClient, repo: str
) -> None:
    """Some registries answer a mount with 202 (an upload session): cancel it, then copy."""
    data = b"layer that cannot be mounted" * 50
    digest = proxied_client.push_blob(f"{repo}/src", data)
    proxy.clear()
    proxy.inject(
        202,
        count=1,
        method="POST",
        path=r"mount=",
        headers={"Location": f"/v2/{repo}/dst/blobs/uploads/declined"},
        body=b"",
    )
    proxied_client.copy_blob(f"{repo}/src", f"{repo}/dst", digest)
    assert proxied_client.get_blob(f"{repo}/dst", digest) == data
    assert proxy.count(method="DELETE", path=r"/uploads/declined") == 1  # session cancelled
    assert proxy.count(method="GET", path=rf"{repo}/src/blobs/") == 1
    assert proxy.count(method="PUT", path=rf"{repo}/dst/blobs/uploads/", status=201) == 1
