"""How many requests ACR's control plane sees: the real azure-containerregistry client
against FakeAcr (TLS, its `/v2/` a real docker-registry, images pushed with skopeo).

The library challenges every call (401, `/oauth2/token`, the call again); the provider's
token cache (`providers/_acr_tokens.py`) gets one token per scope while it lasts (from the
provider's own refresh token, before the first request; else learnt from the library's
challenge), and `plan_lock` reads each manifest's properties once (attributes and
quarantine state from the same GET).
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from support.fake_acr import TOKEN_USER, FakeAcr
from support.retention import wait_for

from regwarden.actions._lock import plan_lock
from regwarden.devtools import LocalRegistry, make_image, make_multiarch, skopeo_copy, write_layout
from regwarden.providers import ImageDetails, ProviderOptions
from regwarden.providers._acr_tokens import MARGIN
from regwarden.providers.acr import AcrRegistry
from regwarden.reference import ImageRef

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    """The provider's and the fake's clock: tokens are issued and judged on it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def acr(registry: LocalRegistry, clock: Clock) -> Iterator[FakeAcr]:
    with FakeAcr(registry.host) as fake:
        fake.now = clock
        yield fake


@pytest.fixture
def ar(acr: FakeAcr, clock: Clock) -> Iterator[AcrRegistry]:
    opts = ProviderOptions(credentials=acr.credential())
    registry = AcrRegistry(
        acr.login_server, opts, env=acr.env(), clock=clock, sleep=lambda _s: None
    )
    yield registry
    registry.close()


def push(acr: FakeAcr, tmp_path: Path, content: Any, target: str) -> str:
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


@pytest.fixture
def single(acr: FakeAcr, repo: str, tmp_path: Path) -> str:
    return push(acr, tmp_path, make_image(seed=71), f"{repo}:v1")


def challenges(acr: FakeAcr, scope: str) -> int:
    return sum(1 for _m, path, s in acr.challenges if s == scope and path.startswith("/acr/v1/"))


def token_requests(acr: FakeAcr, scope: str) -> int:
    return sum(1 for t in acr.token_requests if t.get("scope") == scope)


def manifest_gets(acr: FakeAcr, repo: str) -> list[str]:
    prefix = f"/acr/v1/{repo}/_manifests/"
    return [p for m, p in acr.acr_requests if m == "GET" and p.startswith(prefix)]


def test_two_reads_of_one_manifest_take_one_token_and_no_challenge(
    ar: AcrRegistry, acr: FakeAcr, repo: str, single: str
) -> None:
    read = f"repository:{repo}:metadata_read"
    exchanges = len(acr.exchanges)
    first = ar.manifest_attributes(repo, single)
    second = ar.manifest_attributes(repo, single)
    assert first == second
    assert token_requests(acr, read) == 1
    assert challenges(acr, read) == 0  # the token was there before the first request
    assert len(manifest_gets(acr, repo)) == 2  # both served
    assert ar.tags_of(repo, single) == ("v1",)  # the library's own call: pre-authorized too
    assert (token_requests(acr, read), challenges(acr, read)) == (1, 0)
    ar.resolve(repo, "v1")  # the data plane shares the one refresh token
    assert len(acr.exchanges) - exchanges == 1


def test_the_exchange_and_each_scopes_token_share_one_connection(
    ar: AcrRegistry, acr: FakeAcr, repo: str, single: str
) -> None:
    """The provider's own requests to ACR's token service (the refresh token, then an
    access token per scope) go over one kept-alive connection, not a TCP and TLS
    handshake each."""
    ar.manifest_attributes(repo, single)  # the exchange, then metadata_read
    ar.set_manifest_attributes(repo, single, write=False)  # metadata_write
    ar.set_manifest_attributes(repo, single, delete=False)  # the same token again
    own = [
        (path, form.get("scope"), peer)
        for path, form, peer in acr.oauth_connections
        if "client_id" not in form  # the data plane's OCI client names itself
    ]
    assert [(path, scope) for path, scope, _ in own] == [
        ("/oauth2/exchange", None),
        ("/oauth2/token", f"repository:{repo}:metadata_read"),
        ("/oauth2/token", f"repository:{repo}:metadata_write"),
    ]
    assert len({peer for *_, peer in own}) == 1


def test_the_data_planes_first_read_carries_a_token_without_drawing_a_401(
    ar: AcrRegistry, acr: FakeAcr, repo: str, single: str
) -> None:
    """`/v2/` challenges with ACR's own token service, which the provider knows: its first
    read is authorized from the start (one round trip fewer on each cold start)."""
    before = len(acr.v2_requests)
    assert ar.resolve(repo, "v1") == single
    seen = acr.v2_requests[before:]
    assert seen
    assert [s.status for s in seen if s.status == 401] == []
    assert all((s.authorization or "").startswith("Bearer at-") for s in seen)
    pulls = [t for t in acr.token_requests if t.get("scope") == f"repository:{repo}:pull"]
    assert len(pulls) == 1


def test_without_a_fetch_a_challenge_token_is_learnt(
    ar: AcrRegistry, acr: FakeAcr, repo: str, single: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library's challenge flow (when the provider cannot get a token itself): its
    token is learnt, so two reads of one manifest take one challenge."""
    monkeypatch.setattr(ar.tokens, "_fetch", lambda _scope: None)
    read = f"repository:{repo}:metadata_read"
    ar.manifest_attributes(repo, single)
    ar.manifest_attributes(repo, single)
    ar.tags_of(repo, single)
    assert challenges(acr, read) == 1
    assert token_requests(acr, read) == 1
    assert len(manifest_gets(acr, repo)) == 2


def test_a_patch_after_a_get_takes_its_own_token_once(
    ar: AcrRegistry, acr: FakeAcr, repo: str, single: str
) -> None:
    write = f"repository:{repo}:metadata_write"
    ar.manifest_attributes(repo, single)
    assert token_requests(acr, write) == 0
    ar.set_manifest_attributes(repo, single, write=False)
    ar.set_manifest_attributes(repo, single, delete=False)
    ar.set_manifest_attributes(repo, single, write=True, delete=True)
    assert token_requests(acr, write) == 1
    assert token_requests(acr, f"repository:{repo}:metadata_read") == 1
    assert challenges(acr, write) == challenges(acr, f"repository:{repo}:metadata_read") == 0
    assert acr.attributes(repo, single)["writeEnabled"] is True


def test_a_token_past_its_expiry_is_replaced(
    ar: AcrRegistry, acr: FakeAcr, clock: Clock, repo: str, single: str
) -> None:
    read = f"repository:{repo}:metadata_read"
    ar.manifest_attributes(repo, single)
    clock.now = T0 + acr.access_token_lifetime - MARGIN - timedelta(seconds=5)
    ar.manifest_attributes(repo, single)
    assert token_requests(acr, read) == 1  # still within its life
    clock.now = T0 + acr.access_token_lifetime - MARGIN
    ar.manifest_attributes(repo, single)
    assert token_requests(acr, read) == 2
    ar.manifest_attributes(repo, single)  # the new token is cached in turn
    assert token_requests(acr, read) == 2


def test_a_401_on_a_cached_token_is_recovered(
    ar: AcrRegistry, acr: FakeAcr, repo: str, single: str
) -> None:
    read = f"repository:{repo}:metadata_read"
    ar.manifest_attributes(repo, single)
    acr.revoke_access_tokens()  # the registry no longer takes the cached token
    assert ar.manifest_attributes(repo, single).write is True
    assert challenges(acr, read) == 1  # answered by the library's challenge flow
    ar.manifest_attributes(repo, single)  # whose token was learnt
    assert challenges(acr, read) == 1
    assert token_requests(acr, read) == 2
    assert len(manifest_gets(acr, repo)) == 3


def test_a_token_without_exp_is_not_cached(
    ar: AcrRegistry, acr: FakeAcr, repo: str, single: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acr, "_access_token", lambda _scope: "at-opaque-" + uuid.uuid4().hex)
    read = f"repository:{repo}:metadata_read"
    ar.manifest_attributes(repo, single)
    ar.manifest_attributes(repo, single)
    assert token_requests(acr, read) == 2  # fetched for each request, kept for none
    assert ar.tokens.scopes() == []
    assert len(manifest_gets(acr, repo)) == 2


@pytest.mark.parametrize("policy", [False, True])
def test_plan_lock_of_an_index_reads_each_manifest_once(
    ar: AcrRegistry, acr: FakeAcr, repo: str, tmp_path: Path, policy: bool
) -> None:
    content = make_multiarch(seed=73)
    digest = push(acr, tmp_path, content, f"{repo}:v1")
    acr.quarantine_policy = policy
    children = [c.digest for c in content.children]
    assert len(children) == 2
    image = ImageRef(registry=ar.host, repository=repo, tag=None, digest=digest)
    before = len(manifest_gets(acr, repo))
    plan = plan_lock(ar, image, None, hold=True)
    gets = manifest_gets(acr, repo)[before:]
    assert sorted(gets) == sorted(f"/acr/v1/{repo}/_manifests/{d}" for d in [digest, *children])
    assert plan["lock"]["registry_quarantine"] is policy
    assert plan["lock"]["digests"] == [digest, *children]
    assert token_requests(acr, f"repository:{repo}:metadata_read") == 1


def test_the_token_service_trust_store_is_loaded_once(
    ar: AcrRegistry, acr: FakeAcr, repo: str, single: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exchange, each scope's token and `/v2/` go over one SSL context (loading a
    trust store costs 10-40 ms a time, paid on the gate's first event), which trusts the
    CA bundle as the SDK's `connection_verify` does: not the system's store besides."""
    import ssl

    made: list[object] = []
    real = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(args or kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    exchanges = len(acr.exchanges)
    ar.manifest_attributes(repo, single)  # the exchange, then the read scope's token
    ar.set_manifest_attributes(repo, single, write=False)  # the write scope's token
    assert ar.data_plane().get_manifest(repo, single).digest == single  # /v2/
    assert len(acr.exchanges) - exchanges == 1
    assert token_requests(acr, f"repository:{repo}:metadata_write") == 1
    assert made == [{"cafile": acr.ca_file}]


def test_image_details_by_digest_reads_the_properties_beside_v2(
    ar: AcrRegistry, acr: FakeAcr, repo: str, single: str
) -> None:
    """By digest, ACR's manifest properties are read while `/v2/` is, not after it: with
    the `/v2/` manifest GET held unanswered, the properties GET still arrives. The held
    request's connection then drops unanswered: the data plane reads the manifest again,
    and the details merge both."""
    manifest = f"/v2/{repo}/manifests/{single}"
    props = f"/acr/v1/{repo}/_manifests/{single}"
    parked = acr.park(1, "before", lambda m, p, _h: m == "GET" and p == manifest)
    outcome: dict[str, object] = {}

    def details() -> None:
        try:
            outcome["details"] = ar.image_details(repo, single)
        except Exception as exc:  # looked at below
            outcome["error"] = exc

    worker = threading.Thread(target=details)
    worker.start()
    try:
        assert parked.reached.wait(30)
        seen = lambda: [(m, unquote(p)) for m, p in acr.acr_requests]  # noqa: E731
        assert wait_for(lambda: ("GET", props) in seen(), 30), "the properties waited for /v2/"
    finally:
        parked.release()
        worker.join(60)
    assert not worker.is_alive()
    assert "error" not in outcome, outcome
    details = outcome["details"]
    assert isinstance(details, ImageDetails)
    assert (details.record.digest, details.record.tags) == (single, ("v1",))


def test_image_details_by_digest_merges_the_properties(
    ar: AcrRegistry, acr: FakeAcr, repo: str, single: str
) -> None:
    details = ar.image_details(repo, single)
    assert details.record.digest == single
    assert details.record.tags == ("v1",)  # from ACR's properties, not /v2/
    assert details.record.pushed is not None
