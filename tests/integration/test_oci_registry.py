"""The OCI client against a real distribution 2.8 (`docker-registry`) on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.proxy import RegistryProxy
from support.registries import AuthRegistry, PushImage

from regwarden.devtools import (
    LocalRegistry,
    build_index,
    make_image,
    make_multiarch,
    push_image,
    push_layout,
    skopeo_copy,
)
from regwarden.errors import AuthError, NotFound, Unsupported
from regwarden.oci import (
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Credentials,
    RegistryClient,
    compute_digest,
    referrers_tag,
)

pytestmark = pytest.mark.integration


def test_push_and_read_back(client: RegistryClient, repo: str) -> None:
    image = make_image(layers=2, layer_size=2048, labels={"team": "payments"}, seed=7)
    digest = push_image(client, repo, image, tag="v1")
    assert digest == image.manifest_digest
    manifest = client.get_manifest(repo, "v1")
    assert manifest.digest == digest
    assert manifest.raw == image.manifest
    assert manifest.media_type == OCI_MANIFEST
    assert [layer.digest for layer in manifest.layers] == list(image.layer_digests)
    config = json.loads(client.get_blob(repo, image.config_digest))
    assert config["config"]["Labels"] == {"team": "payments"}
    head = client.head_manifest(repo, "v1")
    assert head is not None
    assert (head.digest, head.size, head.media_type) == (digest, len(image.manifest), OCI_MANIFEST)
    assert client.head_manifest(repo, "nope") is None
    assert client.blob_exists(repo, image.layer_digests[0])
    assert not client.blob_exists(repo, compute_digest(b"never pushed"))


def test_missing_things_are_not_found(client: RegistryClient, repo: str) -> None:
    with pytest.raises(NotFound, match=f"manifest {repo}:v404 not found") as info:
        client.get_manifest(repo, "v404")
    assert info.value.exit_code == 2
    with pytest.raises(NotFound):
        client.get_blob(repo, compute_digest(b"absent"))


def test_push_blob_is_idempotent(client: RegistryClient, repo: str) -> None:
    data = b"x" * 10_000
    first = client.push_blob(repo, data)
    assert client.push_blob(repo, data, first) == first
    assert client.get_blob(repo, first) == data


def test_catalog_pagination_with_small_n(
    client: RegistryClient, repo: str, push: PushImage
) -> None:
    names = [f"{repo}/c{i}" for i in range(5)]
    for name in names:
        push(name, "v1")
    full = list(client.catalog())
    paged = list(client.catalog(page_size=2))
    assert paged == full
    assert set(names) <= set(paged)
    assert paged == sorted(paged)


def test_delete_manifest(client: RegistryClient, repo: str, push: PushImage) -> None:
    image = push(repo, "gone", seed=3)
    client.delete_manifest(repo, image.manifest_digest)
    assert client.head_manifest(repo, image.manifest_digest) is None
    with pytest.raises(NotFound):
        client.delete_manifest(repo, image.manifest_digest)


def test_tag_delete_is_unsupported_on_distribution_28(
    client: RegistryClient, repo: str, push: PushImage
) -> None:
    image = push(repo, "v1")
    with pytest.raises(Unsupported, match=rf"cannot delete tag {repo}:v1 on its own") as info:
        client.delete_tag(repo, "v1")
    assert info.value.status == 400
    assert "DIGEST_INVALID" in str(info.value)
    # nothing changed
    head = client.head_manifest(repo, "v1")
    assert head is not None
    assert head.digest == image.manifest_digest


def test_index_pushed_by_our_client(client: RegistryClient, repo: str) -> None:
    index = make_multiarch(seed=11, layers=1)
    digest = push_image(client, repo, index, tag="multi")
    assert digest == index.digest
    fetched = client.get_manifest(repo, "multi")
    assert fetched.is_index
    assert fetched.media_type == OCI_INDEX
    platforms = [(c.platform or {}).get("architecture") for c in fetched.manifests]
    assert platforms == ["amd64", "arm64"]
    for child in fetched.manifests:
        sub = client.get_manifest(repo, child.digest)
        assert not sub.is_index
        assert all(client.blob_exists(repo, layer.digest) for layer in sub.layers)


def test_index_pushed_by_skopeo_all(
    registry: LocalRegistry, client: RegistryClient, repo: str, tmp_path: Path
) -> None:
    built = build_index(tmp_path / "layout", tag="v2", seed=12)
    skopeo_copy(f"oci:{tmp_path / 'layout'}:v2", f"docker://{registry.host}/{repo}:v2")
    fetched = client.get_manifest(repo, "v2")
    assert fetched.digest == built.digest  # --preserve-digests
    assert [c.digest for c in fetched.manifests] == [c.manifest_digest for c in built.children]
    for child in built.children:
        assert client.get_manifest(repo, child.manifest_digest).raw == child.manifest


def test_push_layout_matches_skopeo(
    registry: LocalRegistry, client: RegistryClient, repo: str, tmp_path: Path
) -> None:
    built = build_index(tmp_path / "layout", tag="v3", seed=13)
    ours = push_layout(client, tmp_path / "layout", f"{repo}/ours", "v3")
    skopeo_copy(f"oci:{tmp_path / 'layout'}:v3", f"docker://{registry.host}/{repo}/skopeo:v3")
    assert ours == built.digest == client.get_manifest(f"{repo}/skopeo", "v3").digest


def test_copy_image_mounts_blobs(registry: LocalRegistry, repo: str) -> None:
    """Copy through the proxy so the mount requests and their 201s are visible."""
    with RegistryProxy(registry.host) as proxy, RegistryClient(proxy.host) as client:
        index = make_multiarch(seed=21, layers=2)
        push_image(client, f"{repo}/src", index, tag="v1")
        proxy.clear()
        digest = client.copy_image(f"{repo}/src", "v1", f"quarantine/{repo}/src")
        assert digest == index.digest
        mounts = proxy.matching(method="POST", path=r"blobs/uploads/\?.*mount=")
        blob_count = len(index.blobs)
        assert len(mounts) == blob_count
        assert {m.status for m in mounts} == {201}
        assert proxy.count(method="PUT", path=r"/blobs/uploads/") == 0  # no bytes re-uploaded
        assert proxy.count(method="GET", path=r"/blobs/") == 0
        copied = client.get_manifest(f"quarantine/{repo}/src", "v1")
        assert copied.raw == index.manifest
        # idempotent: a second copy finds the children and re-tags only
        proxy.clear()
        assert client.copy_image(f"{repo}/src", "v1", f"quarantine/{repo}/src") == digest
        assert proxy.count(method="POST") == 0


def test_copy_blob_falls_back_to_upload_when_mount_source_lacks_it(
    client: RegistryClient, repo: str
) -> None:
    data = b"only in the source"
    digest = client.push_blob(f"{repo}/a", data)
    assert client.mount_blob(f"{repo}/b", digest, f"{repo}/elsewhere") is False
    assert not client.blob_exists(f"{repo}/b", digest)
    assert client.mount_blob(f"{repo}/b", digest, f"{repo}/a") is True
    client.copy_blob(f"{repo}/a", f"{repo}/c", digest)
    assert client.get_blob(f"{repo}/c", digest) == data


def _artifact(subject_digest: str, subject_size: int, artifact_type: str, payload: bytes) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2},
            "layers": [
                {
                    "mediaType": "application/json",
                    "digest": compute_digest(payload),
                    "size": len(payload),
                }
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
            "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
        }
    ).encode()


def test_referrers_via_tag_schema_on_distribution_28(
    client: RegistryClient, repo: str, push: PushImage
) -> None:
    image = push(repo, "v1", seed=31)
    subject = image.manifest_digest
    assert client.referrers(repo, subject) == []
    client.push_blob(repo, EMPTY_JSON)
    pushed = []
    for artifact_type, payload in [
        ("application/vnd.dev.sigstore.bundle.v0.3+json", b'{"bundle":1}'),
        ("application/spdx+json", b'{"sbom":1}'),
    ]:
        client.push_blob(repo, payload)
        raw = _artifact(subject, len(image.manifest), artifact_type, payload)
        pushed.append(client.push_referrer(repo, raw, OCI_MANIFEST))
        # pushing the same referrer twice does not duplicate the entry
        client.push_referrer(repo, raw, OCI_MANIFEST)
    found = client.referrers(repo, subject)
    assert [d.digest for d in found] == pushed
    assert found[0].artifact_type == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert found[0].annotations == {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}
    only = client.referrers(repo, subject, artifact_type="application/spdx+json")
    assert [d.digest for d in only] == [pushed[1]]
    # the fallback index is an ordinary tag in the repository
    assert referrers_tag(subject) in client.list_tags(repo)


# -- Basic auth -----------------------------------------------------------------------------


def test_basic_auth_registry(auth_registry: AuthRegistry, repo: str) -> None:
    with RegistryClient(auth_registry.host, credentials=auth_registry.credentials) as client:
        client.ping()
        image = make_image(seed=41)
        assert push_image(client, repo, image, tag="v1") == image.manifest_digest
        assert client.get_manifest(repo, "v1").digest == image.manifest_digest
        assert repo in list(client.catalog())


def test_basic_auth_wrong_password(auth_registry: AuthRegistry) -> None:
    bad = Credentials(username=auth_registry.username, password="not-it")
    with (
        RegistryClient(auth_registry.host, credentials=bad) as client,
        pytest.raises(AuthError, match="credentials for user 'alice' were refused") as info,
    ):
        client.list_tags("any/repo")
    assert info.value.status == 401


def test_basic_auth_anonymous_is_refused(auth_registry: AuthRegistry) -> None:
    with (
        RegistryClient(auth_registry.host) as client,
        pytest.raises(AuthError, match="no credentials"),
    ):
        client.ping()


def test_basic_auth_from_docker_config(
    auth_registry: AuthRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    token = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode()).decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": token}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    creds = Credentials.from_docker_config(auth_registry.host)
    with RegistryClient(auth_registry.host, credentials=creds) as client:
        client.ping()
