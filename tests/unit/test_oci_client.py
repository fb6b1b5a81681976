"""The client's protocol logic against httpx.MockTransport: digests, paging, schemes, referrers."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest

from regwarden.errors import (
    DigestMismatch,
    InvalidReference,
    RegistryError,
    Unsupported,
    UsageError,
)
from regwarden.oci import (
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    RegistryClient,
    is_loopback_host,
    parse_next_link,
    referrers_tag,
)

HOST = "registry.example.com"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


MANIFEST = _json(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_EMPTY, "digest": _digest(b"{}"), "size": 2},
        "layers": [{"mediaType": "text/plain", "digest": _digest(b"hi"), "size": 2}],
    }
)
DIGEST = _digest(MANIFEST)


def _client(handler: Any, **kwargs: Any) -> RegistryClient:
    return RegistryClient(
        HOST, transport=httpx.MockTransport(handler), sleep=lambda _: None, **kwargs
    )


def _always(status: int, **kwargs: Any) -> Any:
    """A MockTransport handler giving the same answer to every request."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, **kwargs)

    return handler


# -- schemes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "insecure", "base"),
    [
        ("127.0.0.1:5000", False, "http://127.0.0.1:5000"),
        ("127.8.9.1", False, "http://127.8.9.1"),
        ("localhost:5000", False, "http://localhost:5000"),
        ("[::1]:5000", False, "http://[::1]:5000"),
        ("registry.example.com", False, "https://registry.example.com"),
        ("registry.example.com:8443", False, "https://registry.example.com:8443"),
        ("registry.example.com", True, "http://registry.example.com"),
        ("https://127.0.0.1:5000/", False, "https://127.0.0.1:5000"),
        ("http://10.0.0.5:5000", True, "http://10.0.0.5:5000"),
        ("docker.io", False, "https://registry-1.docker.io"),
    ],
)
def test_scheme_rules(host: str, insecure: bool, base: str) -> None:
    with RegistryClient(host, insecure=insecure) as client:
        assert client.base_url == base


def test_plain_http_to_remote_host_needs_insecure() -> None:
    with pytest.raises(UsageError, match="refusing plain HTTP to non-loopback registry"):
        RegistryClient("http://registry.example.com")
    with pytest.raises(UsageError, match="expected 'https' or 'http'"):
        RegistryClient("ftp://registry.example.com")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3:80", True),
        ("[::1]:5000", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("example.com:5000", False),
        ("127.example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_names_are_validated_before_any_request() -> None:
    calls: list[httpx.Request] = []
    with _client(lambda r: calls.append(r) or httpx.Response(200)) as client:
        with pytest.raises(InvalidReference):
            client.get_manifest("../etc", "v1")
        with pytest.raises(InvalidReference):
            client.get_manifest("a/b", "bad tag")
        with pytest.raises(InvalidReference):
            client.get_blob("a/b", "sha256:abc")
    assert calls == []


# -- manifests and digests ---------------------------------------------------------------------


def test_get_manifest_by_tag_trusts_header_and_verifies() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            content=MANIFEST,
            headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": DIGEST},
        )

    with _client(handler) as client:
        manifest = client.get_manifest("a/b", "v1")
    assert manifest.digest == DIGEST
    assert manifest.raw == MANIFEST
    assert not manifest.is_index
    assert manifest.config is not None
    assert manifest.config.media_type == OCI_EMPTY
    assert [layer.digest for layer in manifest.layers] == [_digest(b"hi")]
    accept = seen[0].headers["accept"]
    for media_type in (
        OCI_MANIFEST,
        OCI_INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ):
        assert media_type in accept


def test_get_manifest_header_lies() -> None:
    wrong = "sha256:" + "0" * 64
    handler = lambda r: httpx.Response(  # noqa: E731
        200,
        content=MANIFEST,
        headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": wrong},
    )
    with _client(handler) as client, pytest.raises(DigestMismatch, match="manifest a/b:v1") as info:
        client.get_manifest("a/b", "v1")
    assert info.value.expected == wrong
    assert info.value.got == DIGEST
    assert info.value.exit_code == 1


def test_get_manifest_by_digest_checks_the_requested_digest() -> None:
    tampered = MANIFEST.replace(b"text/plain", b"text/html!")
    handler = lambda r: httpx.Response(  # noqa: E731
        200,
        content=tampered,
        headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": DIGEST},
    )
    with _client(handler) as client, pytest.raises(DigestMismatch) as info:
        client.get_manifest("a/b", DIGEST)
    assert info.value.expected == DIGEST
    assert info.value.got == _digest(tampered)


def test_get_manifest_sha512_reference() -> None:
    d512 = "sha512:" + hashlib.sha512(MANIFEST).hexdigest()
    handler = _always(200, content=MANIFEST, headers={"Content-Type": OCI_MANIFEST})
    with _client(handler) as client:
        assert client.get_manifest("a/b", d512).digest == d512


def test_get_manifest_rejects_non_object_json() -> None:
    handler = _always(200, content=b"[1,2]", headers={"Content-Type": OCI_MANIFEST})
    with _client(handler) as client, pytest.raises(RegistryError, match="expected an object"):
        client.get_manifest("a/b", "v1")


def test_head_manifest_falls_back_to_get_without_digest_header() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST})
        return httpx.Response(200, content=MANIFEST, headers={"Content-Type": OCI_MANIFEST})

    with _client(handler) as client:
        desc = client.head_manifest("a/b", "v1")
    assert desc == Descriptor(media_type=OCI_MANIFEST, digest=DIGEST, size=len(MANIFEST))


def test_head_manifest_404_is_none() -> None:
    with _client(lambda r: httpx.Response(404)) as client:
        assert client.head_manifest("a/b", "v1") is None


def test_put_manifest_checks_reference_and_server_digest() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(201, headers={"Docker-Content-Digest": DIGEST})

    with _client(handler) as client:
        assert client.put_manifest("a/b", "v1", MANIFEST, OCI_MANIFEST) == DIGEST
        assert calls[0].headers["content-type"] == OCI_MANIFEST
        with pytest.raises(DigestMismatch):
            client.put_manifest("a/b", "sha256:" + "1" * 64, MANIFEST, OCI_MANIFEST)
        assert len(calls) == 1  # refused locally, nothing sent
        with pytest.raises(DigestMismatch, match="stored"):
            client.put_manifest("a/b", "v2", MANIFEST + b" ", OCI_MANIFEST)


def test_delete_tag_maps_registry_refusals_to_unsupported() -> None:
    body = _json(
        {"errors": [{"code": "DIGEST_INVALID", "message": "provided digest did not match"}]}
    )
    handler = _always(400, content=body, headers={"Content-Type": "application/json"})
    with (
        _client(handler) as client,
        pytest.raises(Unsupported, match="cannot delete tag a/b:v1 on its own") as info,
    ):
        client.delete_tag("a/b", "v1")
    assert info.value.exit_code == 2
    with _client(lambda r: httpx.Response(405)) as client, pytest.raises(Unsupported):
        client.delete_tag("a/b", "v1")
    with _client(lambda r: httpx.Response(202)) as client:
        client.delete_tag("a/b", "v1")
    with (
        _client(lambda r: httpx.Response(202)) as client,
        pytest.raises(UsageError, match="expected a tag"),
    ):
        client.delete_tag("a/b", DIGEST)


def test_mount_that_starts_an_upload_is_cancelled() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/dst/blobs/uploads/u1"})
        return httpx.Response(204)

    with _client(handler) as client:
        assert client.mount_blob("dst", DIGEST, "src") is False
    post, delete = calls
    assert post.url.params["mount"] == DIGEST
    assert post.url.params["from"] == "src"
    assert (delete.method, delete.url.path) == ("DELETE", "/v2/dst/blobs/uploads/u1")


# -- paging ----------------------------------------------------------------------------------------


def test_parse_next_link() -> None:
    assert parse_next_link('</v2/_catalog?last=b&n=2>; rel="next"') == "/v2/_catalog?last=b&n=2"
    assert parse_next_link('<https://x/a>; rel="prev", <https://x/b>; rel=next') == "https://x/b"
    assert parse_next_link('<https://x/a>; rel="prev"') is None
    assert parse_next_link(None) is None


def test_list_tags_follows_link_headers() -> None:
    pages = {
        None: (["a", "b"], '</v2/r/tags/list?n=2&last=b>; rel="next"'),
        "b": (["c", "d"], '</v2/r/tags/list?n=2&last=d>; rel="next"'),
        "d": (["e"], None),
    }
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        tags, link = pages[request.url.params.get("last")]
        return httpx.Response(
            200, json={"name": "r", "tags": tags}, headers={"Link": link} if link else {}
        )

    with _client(handler) as client:
        assert client.list_tags("r", page_size=2) == ["a", "b", "c", "d", "e"]
    assert seen[0] == f"https://{HOST}/v2/r/tags/list?n=2"


def test_list_tags_pages_with_last_when_registry_sends_no_link() -> None:
    everything = [f"t{i:02d}" for i in range(7)]
    seen: list[httpx.QueryParams] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params)
        n = int(request.url.params["n"])
        last = request.url.params.get("last")
        rest = [t for t in everything if last is None or t > last]
        return httpx.Response(200, json={"name": "r", "tags": rest[:n]})

    with _client(handler) as client:
        assert client.list_tags("r", page_size=3) == everything
    assert [p.get("last") for p in seen] == [None, "t02", "t05"]


def test_list_tags_registry_ignoring_n_is_read_once() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"name": "r", "tags": ["a", "b", "c"]})

    with _client(handler) as client:
        assert client.list_tags("r", page_size=3) == ["a", "b", "c"]
    assert len(calls) == 2  # a full page invites one `last=` probe, which adds nothing


def test_pagination_link_off_host_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={"repositories": ["a"]},
            headers={"Link": '<https://evil.example/v2/_catalog?n=1>; rel="next"'},
        )

    with _client(handler) as client, pytest.raises(RegistryError, match="points off the registry"):
        list(client.catalog(page_size=1))


# -- referrers -------------------------------------------------------------------------------------


def _referrer(artifact_type: str) -> Descriptor:
    return Descriptor(
        media_type=OCI_MANIFEST,
        digest=_digest(artifact_type.encode()),
        size=10,
        artifact_type=artifact_type,
    )


def test_referrers_api_filters_client_side_and_pages() -> None:
    sig, sbom = (
        _referrer("application/vnd.dev.cosign.simplesigning.v1+json"),
        _referrer("application/spdx+json"),
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"] == OCI_INDEX
        if request.url.params.get("page") == "2":
            body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sbom.to_dict()]}
            return httpx.Response(200, json=body, headers={"Content-Type": OCI_INDEX})
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sig.to_dict()]}
        link = f'</v2/a/b/referrers/{DIGEST}?page=2>; rel="next"'
        return httpx.Response(200, json=body, headers={"Content-Type": OCI_INDEX, "Link": link})

    with _client(handler) as client:
        assert client.referrers("a/b", DIGEST) == [sig, sbom]
        # the registry did not filter (no OCI-Filters-Applied): we do
        assert client.referrers("a/b", DIGEST, artifact_type="application/spdx+json") == [sbom]


def test_referrers_fall_back_to_tag_schema_on_404() -> None:
    sig = _referrer("application/vnd.dev.sigstore.bundle.v0.3+json")
    index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sig.to_dict()]})
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if "/referrers/" in request.url.path:
            return httpx.Response(404, text="404 page not found")
        return httpx.Response(200, content=index, headers={"Content-Type": OCI_INDEX})

    with _client(handler) as client:
        assert client.referrers("a/b", DIGEST) == [sig]
    assert seen == [f"/v2/a/b/referrers/{DIGEST}", f"/v2/a/b/manifests/{referrers_tag(DIGEST)}"]


def test_referrers_tag_schema() -> None:
    assert referrers_tag(DIGEST) == "sha256-" + DIGEST.split(":")[1]
    d512 = "sha512:" + "a" * 128
    assert referrers_tag(d512) == "sha512-" + "a" * 64  # truncated to 64 per the spec


# -- model ---------------------------------------------------------------------------------


def test_manifest_views() -> None:
    subject = {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": len(MANIFEST)}
    raw = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/x.test",
            "config": {"mediaType": OCI_EMPTY, "digest": _digest(b"{}"), "size": 2},
            "layers": [],
            "subject": subject,
            "annotations": {"k": "v"},
        }
    )
    manifest = Manifest.parse(raw)
    assert manifest.artifact_type == "application/x.test"
    assert manifest.subject == Descriptor(
        media_type=OCI_MANIFEST, digest=DIGEST, size=len(MANIFEST)
    )
    assert manifest.annotations == {"k": "v"}
    assert manifest.descriptor().artifact_type == "application/x.test"
    plain = Manifest.parse(MANIFEST)
    assert plain.artifact_type == OCI_EMPTY  # falls back to the config media type
    index = Manifest.parse(
        _json({"schemaVersion": 2, "manifests": []}), media_type="application/json"
    )
    assert index.is_index
    assert index.media_type == OCI_INDEX


def test_descriptor_validation() -> None:
    with pytest.raises(RegistryError, match="size must be a non-negative integer"):
        Descriptor.from_dict({"mediaType": "x", "digest": DIGEST, "size": -1})
    with pytest.raises(RegistryError, match="mediaType and digest must be strings"):
        Descriptor.from_dict({"digest": DIGEST, "size": 1})
    round_trip = Descriptor.from_dict(
        {
            "mediaType": "x",
            "digest": DIGEST,
            "size": 1,
            "platform": {"os": "linux"},
            "annotations": {"a": "b"},
        }
    )
    assert Descriptor.from_dict(round_trip.to_dict()) == round_trip
