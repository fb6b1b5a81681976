"""The ACR provider against FakeAcr: the real azure-containerregistry client on ACR's
control plane over TLS (a test CA through `connection_verify`), the real docker-registry
behind its `/v2/` front, images pushed by skopeo (a two-platform index, a single image)
and one manifest pushed by digest only; ACR's token exchange as the front sees it.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.fake_acr import TOKEN_USER, FakeAcr
from support.loopback import LoopbackServer

from regwarden import azure_clients
from regwarden.devtools import (
    LocalRegistry,
    make_image,
    make_multiarch,
    push_image,
    skopeo_copy,
    write_layout,
)
from regwarden.errors import (
    AuthError,
    NotImplementedYet,
    RegistryError,
    Unsupported,
    UsageError,
)
from regwarden.oci import Credentials, DeadlineTransport, RegistryClient
from regwarden.providers import (
    CAP_LOCK,
    CAP_MANIFEST_LISTING,
    CAP_PUSH_TIMES,
    CAP_TAG_DELETE,
    ProviderOptions,
    Registry,
    open_registry,
)
from regwarden.providers import acr as acr_module
from regwarden.providers.acr import THROTTLE_ATTEMPTS, AcrRegistry, ManifestAttributes

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def acr(registry: LocalRegistry) -> Iterator[FakeAcr]:
    with FakeAcr(registry.host) as fake:
        fake.now = lambda: T0
        yield fake


def provider(acr: FakeAcr, **options: Any) -> AcrRegistry:
    opts = ProviderOptions(credentials=acr.credential(), **options)
    return AcrRegistry(acr.login_server, opts, env=acr.env(), sleep=lambda _s: None)


@pytest.fixture
def ar(acr: FakeAcr) -> Iterator[AcrRegistry]:
    registry = provider(acr)
    yield registry
    registry.close()


def front_client(acr: FakeAcr) -> RegistryClient:
    """A plain OCI client on the fake's `/v2/`, as `docker login` with a refresh token."""
    transport = DeadlineTransport(limits=httpx.Limits(), ca_file=acr.ca_file)
    creds = Credentials(username=TOKEN_USER, password=acr.mint_refresh_token())
    return RegistryClient(f"https://{acr.host}", credentials=creds, transport=transport)


def skopeo_push(acr: FakeAcr, tmp_path: Path, content: Any, target: str) -> str:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    layout = tmp_path / uuid.uuid4().hex[:8]
    write_layout(layout, content, tag="t")
    skopeo_copy(
        f"oci:{layout}:t",
        f"docker://{acr.host}/{target}",
        creds=(TOKEN_USER, acr.mint_refresh_token()),
    )
    return str(content.manifest_digest)


class Pushed:
    def __init__(self, index: Any, single: Any, untagged: Any) -> None:
        self.index = index
        self.single = single
        self.untagged = untagged


@pytest.fixture
def pushed(acr: FakeAcr, repo: str, tmp_path: Path) -> Pushed:
    """v1: a two-platform index; v2: one image, pushed an hour later; and one manifest
    pushed by digest only."""
    index = make_multiarch(seed=21)
    single = make_image(seed=22, labels={"team": "payments"}, created=T0 - timedelta(days=3))
    untagged = make_image(seed=23)
    skopeo_push(acr, tmp_path, index, f"{repo}:v1")
    acr.now = lambda: T0 + timedelta(hours=1)
    skopeo_push(acr, tmp_path, single, f"{repo}:v2")
    acr.now = lambda: T0 + timedelta(hours=2)
    with front_client(acr) as client:
        push_image(client, repo, untagged)
    return Pushed(index, single, untagged)


# -- the provider -------------------------------------------------------------------------------


def test_open_registry_gives_the_acr_provider_with_honest_capabilities(
    acr: FakeAcr, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in acr.env().items():
        monkeypatch.setenv(key, value)
    options = ProviderOptions(credentials=acr.credential())
    registry = open_registry("fakereg.azurecr.io", options)  # the kind from the host name
    try:
        assert isinstance(registry, AcrRegistry) and isinstance(registry, Registry)
        assert registry.kind == "acr"
        assert registry.capabilities == {
            CAP_TAG_DELETE,
            CAP_PUSH_TIMES,
            CAP_MANIFEST_LISTING,
            CAP_LOCK,
        }
    finally:
        registry.close()
    registry = open_registry("r.example.com", options, kind="acr")
    assert isinstance(registry, AcrRegistry)
    registry.close()


def test_endpoints_from_the_environment() -> None:
    assert azure_clients.endpoint("acr", {}) is None
    env = {"REGWARDEN_AZURE_ENDPOINT_ACR": "https://acr.internal:8443/"}
    assert azure_clients.endpoint("acr", env) == "https://acr.internal:8443"
    assert azure_clients.endpoint("acr", {"REGWARDEN_AZURE_ENDPOINT_ACR": "http://127.0.0.1:1"})
    with pytest.raises(UsageError, match="http:// only on loopback"):
        azure_clients.endpoint("acr", {"REGWARDEN_AZURE_ENDPOINT_ACR": "http://acr.example"})
    assert azure_clients.acr_scope("r.azurecr.io") == "https://containerregistry.azure.net/.default"
    assert azure_clients.acr_scope("r.azurecr.cn") == "https://containerregistry.azure.cn/.default"


def test_list_repositories(ar: AcrRegistry, pushed: Pushed, repo: str) -> None:
    assert repo in set(ar.list_repositories())


def test_list_images_lists_every_manifest_with_push_times(
    ar: AcrRegistry, pushed: Pushed, repo: str
) -> None:
    records = {r.digest: r for r in ar.list_images(repo)}
    children = [c.manifest_digest for c in pushed.index.children]
    assert set(records) == {
        pushed.index.manifest_digest,
        *children,
        pushed.single.manifest_digest,
        pushed.untagged.manifest_digest,
    }
    index = records[pushed.index.manifest_digest]
    assert index.tags == ("v1",)
    assert index.children == tuple(children)
    assert index.media_type == pushed.index.media_type
    assert index.pushed == T0
    single = records[pushed.single.manifest_digest]
    assert single.tags == ("v2",)
    assert single.pushed == T0 + timedelta(hours=1)
    assert single.size == len(pushed.single.config) + sum(len(b) for b in pushed.single.layers)
    assert records[pushed.untagged.manifest_digest].tags == ()
    assert records[pushed.untagged.manifest_digest].pushed == T0 + timedelta(hours=2)
    assert all(records[c].tags == () for c in children)
    # newest push first
    assert next(r.digest for r in ar.list_images(repo)) == pushed.untagged.manifest_digest


def test_list_images_of_a_missing_repository_is_empty(ar: AcrRegistry) -> None:
    assert ar.list_images("no/such-repo") == []


def test_image_details_resolve_tags_and_children(
    ar: AcrRegistry, pushed: Pushed, repo: str
) -> None:
    details = ar.image_details(repo, "v2")
    assert details.record.digest == pushed.single.manifest_digest
    assert details.record.tags == ("v2",)
    assert details.record.pushed == T0 + timedelta(hours=1)
    assert details.record.created == T0 - timedelta(days=3)  # the image config's
    assert details.labels["team"] == "payments"
    index = ar.image_details(repo, "v1")
    assert {str(p) for p in index.platforms} == {"linux/amd64", "linux/arm64"}
    assert ar.resolve(repo, "v1") == pushed.index.manifest_digest
    assert ar.resolve(repo, "nope") is None
    assert ar.tags_of(repo, pushed.index.manifest_digest) == ("v1",)
    assert ar.tags_of(repo, pushed.untagged.manifest_digest) == ()
    assert ar.index_children(repo) == {
        pushed.index.manifest_digest: tuple(c.manifest_digest for c in pushed.index.children)
    }


def test_tags_deletes_and_copies(ar: AcrRegistry, pushed: Pushed, repo: str) -> None:
    single = pushed.single.manifest_digest
    ar.add_tag(repo, single, "stable")
    assert ar.tags_of(repo, single) == ("stable", "v2")
    ar.remove_tag(repo, "stable")
    assert ar.tags_of(repo, single) == ("v2",)
    assert ar.resolve(repo, "stable") is None
    ar.remove_tag(repo, "stable")  # already gone: done (ACR's client takes 404 as done)
    assert ar.tags_of(repo, single) == ("v2",)
    copied = ar.copy(repo, "v1", f"{repo}-copy", "v1")
    assert copied == pushed.index.manifest_digest
    assert ar.tags_of(f"{repo}-copy", copied) == ("v1",)
    ar.delete(repo, pushed.untagged.manifest_digest)
    assert pushed.untagged.manifest_digest not in {r.digest for r in ar.list_images(repo)}
    with pytest.raises(Unsupported, match="no batch delete"):
        ar.delete_many(repo, [single])
    with pytest.raises(UsageError):
        ar.delete(repo, "v2")


def test_manifest_attributes_round_trip_and_lock(
    ar: AcrRegistry, pushed: Pushed, repo: str, acr: FakeAcr
) -> None:
    digest = pushed.single.manifest_digest
    assert ar.manifest_attributes(repo, digest) == ManifestAttributes(True, True, True, True)
    locked = ar.set_manifest_attributes(repo, digest, write=False, delete=False)
    assert locked == ManifestAttributes(write=False, delete=False, read=True, list=True)
    assert acr.attributes(repo, digest) == {
        "writeEnabled": False,
        "deleteEnabled": False,
        "readEnabled": True,
        "listEnabled": True,
    }
    assert ar.manifest_attributes(repo, digest) == locked
    with pytest.raises(AuthError, match="disallowed"):
        ar.delete(repo, digest)
    with pytest.raises(AuthError):  # a PUT over it: the tag cannot be moved onto it
        ar.add_tag(repo, digest, "v2")
    assert ar.image_details(repo, digest).record.digest == digest  # still readable
    ar.set_manifest_attributes(repo, digest, read=False)
    with pytest.raises(AuthError):
        ar.image_details(repo, digest)
    # listing leaves the unreadable manifest's body out, not the manifest
    assert digest in {r.digest for r in ar.list_images(repo)}
    unlocked = ar.set_manifest_attributes(repo, digest, write=True, delete=True, read=True)
    assert unlocked == ManifestAttributes(True, True, True, True)
    ar.delete(repo, digest)
    assert ar.resolve(repo, digest) is None


def test_token_exchange_as_the_registry_front_sees_it(
    acr: FakeAcr, pushed: Pushed, repo: str
) -> None:
    credential = acr.credential()
    registry = AcrRegistry(acr.login_server, ProviderOptions(credentials=credential), env=acr.env())
    before = len(acr.v2_requests), len(acr.exchanges), len(acr.token_requests)
    try:
        assert registry.resolve(repo, "v2") == pushed.single.manifest_digest
        registry.list_images(repo)
    finally:
        registry.close()
    assert set(credential.scopes) == {("https://containerregistry.azure.net/.default",)}
    exchanges = acr.exchanges[before[1] :]
    assert exchanges and all(
        e["grant_type"] == "access_token"
        and e["service"] == acr.login_server
        and e["access_token"] == acr.aad_token
        for e in exchanges
    )
    tokens = acr.token_requests[before[2] :]
    assert tokens and all(
        t["grant_type"] == "refresh_token" and t["service"] == acr.login_server for t in tokens
    )
    assert any(t.get("scope", "").startswith(f"repository:{repo}:") for t in tokens)
    seen = acr.v2_requests[before[0] :]
    served = [s for s in seen if s.status != 401]
    assert served and all((s.authorization or "").startswith("Bearer at-") for s in served)
    # the refresh token is never sent as a header, only to the token service
    assert not any("rt-" in (s.authorization or "") for s in seen)


def test_no_token_to_another_host(acr: FakeAcr, repo: str) -> None:
    """A data plane whose Bearer challenge names a realm elsewhere: the refresh token is
    not sent there (nor anything else with credentials)."""
    seen: list[tuple[str, str, bytes]] = []
    lock = threading.Lock()

    class Realm(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                seen.append((self.command, self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "17")
            self.end_headers()
            self.wfile.write(b'{"token": "evil"}')

        do_GET = do_POST = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with LoopbackServer(Realm) as realm:

        class Front(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(401)
                self.send_header(
                    "WWW-Authenticate",
                    f'Bearer realm="{realm.url}/oauth2/token",service="{acr.login_server}"',
                )
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        with LoopbackServer(Front) as front:
            registry = provider(acr, data_plane_host=front.host)
            try:
                with pytest.raises(AuthError, match="refusing to send it the ACR refresh token"):
                    registry.resolve(repo, "v1")
            finally:
                registry.close()
    assert seen == []


def test_a_refused_aad_token_is_an_auth_error(acr: FakeAcr, repo: str) -> None:
    acr.aad_tokens.clear()
    registry = provider(acr)
    try:
        with pytest.raises(AuthError):
            registry.resolve(repo, "v1")
        with pytest.raises(AuthError):
            list(registry.list_repositories())
    finally:
        registry.close()


def test_throttling_is_retried_and_watched(acr: FakeAcr, pushed: Pushed, repo: str) -> None:
    registry = provider(acr)
    delays: list[float | None] = []
    undo = registry.watch_throttling(delays.append)
    try:
        acr.fail_next("GET", f"/acr/v1/{repo}/_manifests", 429, {"Retry-After": "2"})
        acr.fail_next("GET", f"/acr/v1/{repo}/_manifests", 503)
        assert len(registry.list_images(repo)) == 5
        assert delays == [2.0, None]
        for _ in range(THROTTLE_ATTEMPTS):
            acr.fail_next("GET", f"/acr/v1/{repo}/_manifests/.*", 429)
        with pytest.raises(RegistryError) as raised:
            registry.tags_of(repo, pushed.single.manifest_digest)
        assert raised.value.status == 429
        undo()
        acr.fail_next("GET", f"/acr/v1/{repo}/_manifests", 429)
        registry.list_images(repo)
        assert len(delays) == 2 + THROTTLE_ATTEMPTS  # not told once undone
    finally:
        registry.close()


def test_tls_is_verified_against_the_named_ca_only(acr: FakeAcr, repo: str) -> None:
    env = {"REGWARDEN_AZURE_ENDPOINT_ACR": acr.url}  # no CA bundle: the system's CAs
    registry = AcrRegistry(acr.login_server, ProviderOptions(credentials=acr.credential()), env=env)
    try:
        with pytest.raises(RegistryError, match=r"(?i)certificate"):
            list(registry.list_repositories())
        with pytest.raises(RegistryError, match=r"(?i)certificate"):
            registry.resolve(repo, "v1")
    finally:
        registry.close()


def test_without_the_azure_extra_the_provider_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(acr_module, "_azure_missing", lambda: True)
    with pytest.raises(NotImplementedYet, match="needs the 'azure' extra") as info:
        open_registry("acme.azurecr.io")
    assert info.value.hint == "pip install 'regwarden[azure]'"


def test_the_refresh_token_is_exchanged_again_after_45_minutes(
    acr: FakeAcr, pushed: Pushed, repo: str
) -> None:
    now = [T0]
    registry = AcrRegistry(
        acr.login_server,
        ProviderOptions(credentials=acr.credential()),
        env=acr.env(),
        clock=lambda: now[0],
    )
    try:
        before = len(acr.exchanges)
        first = registry.data_plane()
        now[0] = T0 + timedelta(minutes=44)
        assert registry.data_plane() is first
        assert len(acr.exchanges) == before + 1
        now[0] = T0 + timedelta(minutes=46)
        second = registry.data_plane()
        assert second is not first  # rebuilt: its access tokens came from the old one
        assert len(acr.exchanges) == before + 2
        assert registry.resolve(repo, "v2") == pushed.single.manifest_digest
    finally:
        registry.close()
