"""The GAR provider against the fake Artifact Registry: the real AR client library on its
REST control plane, the real docker-registry behind its `/v2/` front, images pushed by
skopeo (a multi-arch index, a single image), an untagged manifest and a cosign `.sig` tag.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import google.auth.credentials
import pytest
from support.fake_gar import FakeGar
from support.loopback import LoopbackServer

from regwarden.devtools import (
    LocalRegistry,
    make_image,
    make_multiarch,
    push_image,
    skopeo_copy,
    write_layout,
)
from regwarden.errors import AuthError, NotFound, NotImplementedYet, UsageError
from regwarden.intake import parse_gcr
from regwarden.oci import RegistryClient
from regwarden.providers import (
    CAP_BATCH_DELETE,
    CAP_COPY_MOUNT,
    CAP_MANIFEST_LISTING,
    CAP_PUSH_TIMES,
    CAP_TAG_DELETE,
    ProviderOptions,
    Registry,
    open_registry,
)
from regwarden.providers import gar as gar_module
from regwarden.providers.gar import THROTTLE_ATTEMPTS, GarRegistry, parse_gar_host
from regwarden.signatures import publish, sign_legacy
from regwarden.signatures.keys import generate_private_key

pytestmark = pytest.mark.integration

HOST = "us-docker.pkg.dev"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def gar(registry: LocalRegistry) -> Iterator[FakeGar]:
    with FakeGar(registry.host) as fake:
        fake.now = lambda: T0
        yield fake


@pytest.fixture
def image(request: pytest.FixtureRequest) -> str:
    """An image path no other test uses: `demo-proj/repo/<test>-<random>`."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:30].strip("-")
    return f"demo-proj/repo/{slug}-{uuid.uuid4().hex[:6]}"


def provider(gar: FakeGar, **kwargs: Any) -> GarRegistry:
    options = kwargs.pop("options", None) or ProviderOptions(
        data_plane_host=gar.host, account="demo-proj"
    )
    env = {"REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": gar.url}
    return GarRegistry(HOST, options, env=env, sleep=lambda _s: None, **kwargs)


@pytest.fixture
def gr(gar: FakeGar) -> Iterator[GarRegistry]:
    registry = provider(gar)
    yield registry
    registry.close()


def skopeo_push(gar: FakeGar, tmp_path: Path, content: Any, target: str) -> str:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    layout = tmp_path / uuid.uuid4().hex[:8]
    write_layout(layout, content, tag="t")
    skopeo_copy(f"oci:{layout}:t", f"docker://{gar.host}/{target}")
    return str(content.manifest_digest)


class Pushed:
    def __init__(self, index: Any, single: Any, untagged: Any, signature: str) -> None:
        self.index = index
        self.single = single
        self.untagged = untagged
        self.signature = signature


@pytest.fixture
def pushed(gar: FakeGar, image: str, tmp_path: Path) -> Pushed:
    """v1: a two-platform index; v2: one image (pushed an hour later), signed with a cosign
    `.sig` tag; and one manifest pushed by digest only."""
    index = make_multiarch(seed=11)
    single = make_image(seed=12, labels={"team": "payments"}, created=T0 - timedelta(days=3))
    untagged = make_image(seed=13)
    skopeo_push(gar, tmp_path, index, f"{image}:v1")
    gar.now = lambda: T0 + timedelta(hours=1)
    skopeo_push(gar, tmp_path, single, f"{image}:v2")
    with RegistryClient(gar.host) as client:
        push_image(client, image, untagged)
        art = sign_legacy(
            image_digest=single.manifest_digest,
            docker_reference=f"{HOST}/{image}",
            key=generate_private_key(),
        )
        publish(client, image, art)
    return Pushed(index, single, untagged, art.digest)


# -- the provider -------------------------------------------------------------------------------


def test_open_registry_gives_the_gar_provider_with_honest_capabilities(
    gar: FakeGar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY", gar.url)
    registry = open_registry(HOST, ProviderOptions(data_plane_host=gar.host), kind="gar")
    try:
        assert isinstance(registry, GarRegistry) and isinstance(registry, Registry)
        assert registry.kind == "gar"
        assert registry.capabilities == {
            CAP_TAG_DELETE,
            CAP_PUSH_TIMES,
            CAP_MANIFEST_LISTING,
            CAP_BATCH_DELETE,
            CAP_COPY_MOUNT,
        }
    finally:
        registry.close()
    # the kind follows from the host name too
    registry = open_registry("europe-docker.pkg.dev", ProviderOptions(data_plane_host=gar.host))
    assert isinstance(registry, GarRegistry) and registry.location == "europe"
    registry.close()


def test_hosts_and_paths() -> None:
    assert parse_gar_host("us-docker.pkg.dev") == ("us", None)
    assert parse_gar_host("europe-west1-docker.pkg.dev") == ("europe-west1", None)
    assert parse_gar_host("eu.gcr.io") == ("europe", "eu.gcr.io")
    with pytest.raises(UsageError, match=r"LOCATION-docker\.pkg\.dev"):
        parse_gar_host("registry.example.com")


def test_paths_name_ar_resources(gr: GarRegistry) -> None:
    where = gr.path("demo-proj/repo/team/api")
    assert where.package == "projects/demo-proj/locations/us/repositories/repo/packages/team%2Fapi"
    assert where.version("sha256:" + "a" * 64).endswith(
        "/packages/team%2Fapi/versions/sha256:" + "a" * 64
    )
    with pytest.raises(UsageError, match="PROJECT/REPOSITORY/IMAGE"):
        gr.path("demo-proj/api")


def test_list_repositories_yields_every_image_path(
    gr: GarRegistry, pushed: Pushed, image: str, gar: FakeGar
) -> None:
    gar.add_repository("other")
    assert image in set(gr.list_repositories())


def test_list_images_lists_every_manifest_with_upload_times(
    gr: GarRegistry, pushed: Pushed, image: str
) -> None:
    records = {r.digest: r for r in gr.list_images(image)}
    children = [c.manifest_digest for c in pushed.index.children]
    assert set(records) == {
        pushed.index.manifest_digest,
        *children,
        pushed.single.manifest_digest,
        pushed.untagged.manifest_digest,
        pushed.signature,
    }
    index = records[pushed.index.manifest_digest]
    assert index.tags == ("v1",)
    assert index.children == tuple(children)
    assert index.pushed == T0
    single = records[pushed.single.manifest_digest]
    assert single.tags == ("v2",)
    assert single.pushed == T0 + timedelta(hours=1)
    assert single.created == T0 - timedelta(days=3)  # the image config's `created`
    assert single.size == len(pushed.single.config) + sum(len(b) for b in pushed.single.layers)
    assert records[pushed.untagged.manifest_digest].tags == ()
    sig_tag = "sha256-" + pushed.single.manifest_digest.split(":")[1] + ".sig"
    assert records[pushed.signature].tags == (sig_tag,)
    assert all(records[c].tags == () for c in children)
    assert next(r.pushed for r in gr.list_images(image)) == T0 + timedelta(hours=1)  # newest first


def test_reads_over_the_data_plane(gr: GarRegistry, pushed: Pushed, image: str) -> None:
    assert gr.resolve(image, "v2") == pushed.single.manifest_digest
    assert gr.resolve(image, pushed.untagged.manifest_digest) == pushed.untagged.manifest_digest
    assert gr.resolve(image, "nope") is None
    assert gr.tags_of(image, pushed.index.manifest_digest) == ("v1",)
    assert gr.tags_of(image, pushed.untagged.manifest_digest) == ()
    assert gr.tags_of("demo-proj/repo/never-pushed", pushed.untagged.manifest_digest) == ()
    assert gr.index_children(image) == {
        pushed.index.manifest_digest: tuple(c.manifest_digest for c in pushed.index.children)
    }
    details = gr.image_details(image, "v2")
    assert details.labels == {"team": "payments"}
    assert details.record.tags == ("v2",)
    assert details.record.pushed == T0 + timedelta(hours=1)
    assert details.content is not None and details.content.digest == pushed.single.manifest_digest
    index = gr.image_details(image, pushed.index.manifest_digest)
    assert {str(p) for p in index.platforms} == {"linux/amd64", "linux/arm64"}
    assert index.record.tags == ("v1",)


def test_tags_move_through_the_tags_api(
    gr: GarRegistry, pushed: Pushed, image: str, gar: FakeGar
) -> None:
    single, untagged = pushed.single.manifest_digest, pushed.untagged.manifest_digest
    gr.add_tag(image, untagged, "v3")
    gr.add_tag(image, untagged, "v3")  # a repeat is a no-op
    assert gr.tags_of(image, untagged) == ("v3",)
    gr.add_tag(image, untagged, "v2")  # an existing tag moves
    assert gr.resolve(image, "v2") == untagged
    assert gr.tags_of(image, single) == ()
    gr.remove_tag(image, "v2")
    assert gr.resolve(image, "v2") is None
    assert gr.tags_of(image, untagged) == ("v3",)
    assert untagged in {r.digest for r in gr.list_images(image)}  # the image stays
    with pytest.raises(NotFound):
        gr.remove_tag(image, "v2")
    assert gar.calls("POST", r".*/packages/[^/]+/tags") and gar.calls("PATCH", r".*/tags/v2")
    messages = gar.messages()
    assert {"action": "DELETE", "tag": f"{HOST}/{image}:v2"} in messages
    assert {
        "action": "INSERT",
        "digest": f"{HOST}/{image}@{untagged}",
        "tag": f"{HOST}/{image}:v3",
    } in messages


def test_delete_takes_the_version_and_its_tags(
    gr: GarRegistry, pushed: Pushed, image: str, gar: FakeGar
) -> None:
    digest = pushed.single.manifest_digest
    gr.delete(image, digest)
    assert gr.resolve(image, digest) is None and gr.resolve(image, "v2") is None
    assert digest not in {r.digest for r in gr.list_images(image)}
    assert {"action": "DELETE", "digest": f"{HOST}/{image}@{digest}"} in gar.messages()
    (call,) = gar.calls("DELETE", r".*/versions/.*")
    assert call.arg("force") == "true"
    with pytest.raises(NotFound):
        gr.delete(image, digest)


def test_delete_many_batches_and_says_what_became_of_each(
    gar: FakeGar, pushed: Pushed, image: str
) -> None:
    gr = provider(gar, batch_size=2)
    gone = "sha256:" + "0" * 64
    wanted = [pushed.untagged.manifest_digest, pushed.signature, gone, "sha256:bad"]
    results = {r.digest: r for r in gr.delete_many(image, [*wanted, pushed.signature])}
    assert {d: r.status for d, r in results.items()} == {
        pushed.untagged.manifest_digest: "deleted",
        pushed.signature: "deleted",
        gone: "gone",
        "sha256:bad": "failed",
    }
    assert len(gar.calls("POST", r".*/versions:batchDelete")) == 2  # 3 valid digests, 2 a batch
    left = {r.digest for r in gr.list_images(image)}
    assert pushed.untagged.manifest_digest not in left and pushed.signature not in left
    gr.close()


def test_delete_many_reports_throttling_and_retries_it(
    gr: GarRegistry, pushed: Pushed, image: str, gar: FakeGar
) -> None:
    seen: list[float | None] = []
    undo = gr.watch_throttling(seen.append)
    batch = r".*/versions:batchDelete"
    gar.fail_next("POST", batch, 429, times=1, headers={"Retry-After": "2"})
    (result,) = gr.delete_many(image, [pushed.untagged.manifest_digest])
    assert result.status == "deleted" and seen == [2.0]
    gar.fail_next("POST", batch, 429, times=THROTTLE_ATTEMPTS)
    (result,) = gr.delete_many(image, [pushed.signature])
    assert result.status == "throttled"
    assert len(seen) == 1 + THROTTLE_ATTEMPTS and seen[1:] == [None] * THROTTLE_ATTEMPTS
    assert gr.resolve(image, pushed.signature) == pushed.signature  # not deleted
    undo()
    gar.fail_next("POST", batch, 429, times=1)
    (result,) = gr.delete_many(image, [pushed.signature])
    assert result.status == "deleted" and len(seen) == 1 + THROTTLE_ATTEMPTS


def test_data_plane_throttling_reaches_the_watchers(
    gr: GarRegistry, pushed: Pushed, image: str, gar: FakeGar
) -> None:
    seen: list[float | None] = []
    gr.watch_throttling(seen.append)
    gar.fail_next("HEAD", rf"/v2/{image}/manifests/v2", 429, headers={"Retry-After": "0"})
    assert gr.resolve(image, "v2") == pushed.single.manifest_digest
    assert seen == [0.0]


def test_copy_creates_the_destination_repository_only_when_asked(
    gar: FakeGar, pushed: Pushed, image: str
) -> None:
    name = image.split("/", 2)[2]
    plain = provider(gar)
    with pytest.raises(NotFound, match="does not exist"):
        plain.copy(image, "v1", f"demo-proj/held/{name}")
    assert "held" not in gar.repositories
    creating = provider(
        gar,
        options=ProviderOptions(
            data_plane_host=gar.host, account="demo-proj", create_repositories=True
        ),
    )
    digest = creating.copy(image, "v1", f"demo-proj/held/{name}", "kept")
    assert digest == pushed.index.manifest_digest
    assert "held" in gar.repositories
    assert creating.resolve(f"demo-proj/held/{name}", "kept") == digest
    listed = {r.digest for r in creating.list_images(f"demo-proj/held/{name}")}
    assert listed == {digest, *(c.manifest_digest for c in pushed.index.children)}
    with pytest.raises(UsageError, match=r"demo-proj/quarantine/\{repository\}"):
        creating.copy(image, "v1", f"quarantine/{image}")
    plain.close()
    creating.close()


# -- the access token -----------------------------------------------------------------------------


class ExpiringCredentials(google.auth.credentials.Credentials):  # type: ignore[misc]
    """google-auth credentials whose tokens (`tok-1`, `tok-2`, …) last `lifetime`."""

    def __init__(self, issued_at: datetime, lifetime: timedelta) -> None:
        super().__init__()
        self.issued_at = issued_at
        self.lifetime = lifetime
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        self.token = f"tok-{self.refreshes}"
        self.expiry = (self.issued_at + self.lifetime).replace(tzinfo=None)  # naive UTC


def test_the_data_plane_uses_a_fresh_oauth2accesstoken(
    gar: FakeGar, pushed: Pushed, image: str
) -> None:
    creds = ExpiringCredentials(T0, timedelta(hours=1))
    now = [T0]
    gr = GarRegistry(
        HOST,
        ProviderOptions(data_plane_host=gar.host, credentials=creds),
        env={"REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": gar.url},
        clock=lambda: now[0],
    )
    gar.accepted_tokens = {"tok-1"}
    assert gr.resolve(image, "v2") == pushed.single.manifest_digest
    assert gar.token_requests == [("oauth2accesstoken", "tok-1")]
    now[0] = T0 + timedelta(minutes=30)  # still fresh: the same token, the same client
    first = gr.data_plane()
    assert gr.resolve(image, "v1") == pushed.index.manifest_digest
    assert creds.refreshes == 1 and gr.data_plane() is first
    # five minutes before expiry the token is renewed and the old one stops working
    creds.issued_at = T0 + timedelta(minutes=56)
    now[0] = T0 + timedelta(minutes=56)
    gar.accepted_tokens = {"tok-2"}
    assert gr.resolve(image, "v2") == pushed.single.manifest_digest
    assert creds.refreshes == 2 and gr.data_plane() is not first
    assert gar.token_requests[-1] == ("oauth2accesstoken", "tok-2")
    assert {p for _, p in gar.token_requests} == {"tok-1", "tok-2"}
    gr.close()


def test_the_first_read_carries_a_token_without_drawing_a_401(
    gar: FakeGar, pushed: Pushed, image: str
) -> None:
    """Artifact Registry's `/v2/` challenges with its own `/v2/token`, which the provider
    knows: one round trip fewer on each cold start."""
    gr = GarRegistry(
        HOST,
        ProviderOptions(
            data_plane_host=gar.host, credentials=ExpiringCredentials(T0, timedelta(hours=1))
        ),
        env={"REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": gar.url},
        clock=lambda: T0,
    )
    gar.accepted_tokens = {"tok-1"}
    before = len(gar.v2_requests)
    try:
        assert gr.resolve(image, "v2") == pushed.single.manifest_digest
    finally:
        gr.close()
    token, *reads = gar.v2_requests[before:]
    assert (token.path, token.status) == ("/v2/token", 200)  # asked before the first read
    assert reads and [r.status for r in reads if r.status == 401] == []
    assert all((r.authorization or "").startswith("Bearer ") for r in reads)
    assert gar.token_requests == [("oauth2accesstoken", "tok-1")]


def test_anonymous_credentials_send_no_token(
    gr: GarRegistry, pushed: Pushed, image: str, gar: FakeGar
) -> None:
    assert gr.resolve(image, "v2") == pushed.single.manifest_digest
    assert gar.token_requests == []
    assert all(r.authorization is None for r in gar.v2_requests)


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[str | None]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        body = b'{"token": "foreign", "expires_in": 60}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_the_token_never_goes_to_another_host(
    gar: FakeGar, pushed: Pushed, image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = ExpiringCredentials(T0, timedelta(hours=1))
    gr = GarRegistry(
        HOST,
        ProviderOptions(data_plane_host=gar.host, credentials=creds),
        env={"REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": gar.url},
        clock=lambda: T0,
    )
    _Recorder.seen = []
    with LoopbackServer(_Recorder) as elsewhere, monkeypatch.context() as patched:
        gar.accepted_tokens = {"tok-1"}
        gar.realm = f"{elsewhere.url}/token"  # a challenge naming a token service elsewhere
        # every token refused, so the client meets that challenge (its first read carries
        # a token from the registry's own `/v2/token`, which it knows beforehand)
        patched.setattr(gar, "_authorized", lambda _authorization: False)
        with pytest.raises(AuthError):
            gr.resolve(image, "v2")
    assert _Recorder.seen and all(h is None for h in _Recorder.seen)
    # the access token went to the registry's own token service only
    assert set(gar.token_requests) == {("oauth2accesstoken", "tok-1")}
    gar.realm = None
    assert gr.resolve(image, "v2") == pushed.single.manifest_digest
    gr.close()


# -- the fake's gcr topic -------------------------------------------------------------------------


def test_the_fake_publishes_gcr_messages_that_regwarden_reads(
    gr: GarRegistry, pushed: Pushed, image: str, gar: FakeGar, tmp_path: Path
) -> None:
    gr.remove_tag(image, "v2")
    assert gr.resolve(image, "v2") is None
    skopeo_push(gar, tmp_path, pushed.single, f"{image}:v2")  # a new push of the tag shows it
    assert gr.resolve(image, "v2") == pushed.single.manifest_digest
    assert gr.tags_of(image, pushed.single.manifest_digest) == ("v2",)

    ids = [m["messageId"] for m in gar.gcr]
    assert len(set(ids)) == len(ids)
    assert all(m["publishTime"] == "2026-12-01T13:00:00.000000Z" for m in gar.gcr[-2:])
    events = []
    for message in gar.gcr:
        body = {
            "message": {
                "data": base64.b64encode(message["data"]).decode(),
                "messageId": message["messageId"],
                "publishTime": message["publishTime"],
            },
            "subscription": "projects/demo-proj/subscriptions/regwarden-gcr",
        }
        events.extend(parse_gcr(json.dumps(body).encode(), "application/json"))
    seen = [(e.kind.value, e.image.digest, e.image.tag) for e in events]
    single = pushed.single.manifest_digest
    assert ("pushed", pushed.index.manifest_digest, "v1") in seen
    assert ("pushed", pushed.untagged.manifest_digest, None) in seen
    assert any(kind == "signed" and digest == single for kind, digest, _ in seen)  # .sig
    assert seen[-2:] == [("deleted", None, "v2"), ("pushed", single, "v2")]
    assert all(e.image.registry == HOST and e.image.repository == image for e in events)


# -- without Google -------------------------------------------------------------------------------


def test_make_gar_without_the_gcp_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gar_module, "_google_missing", lambda: True)
    with pytest.raises(NotImplementedYet, match="needs the 'gcp' extra") as info:
        gar_module.make_gar(HOST, ProviderOptions())
    assert "pip install 'regwarden[gcp]'" in str(info.value)


def test_no_google_credentials_is_a_usage_error_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from google.auth.exceptions import DefaultCredentialsError

    from regwarden import gcp_clients

    def no_adc() -> None:
        raise DefaultCredentialsError("no default credentials")

    monkeypatch.setattr(gcp_clients, "default_credentials", no_adc)
    with pytest.raises(UsageError, match="is Google Artifact Registry; no Google credentials") as e:
        GarRegistry(HOST, ProviderOptions(), env={})
    assert "gcloud auth application-default login" in (e.value.hint or "")


def test_the_provider_modules_import_no_google_library() -> None:
    # the interpreter's namespace-package .pth files may load bare `google` and
    # `google.cloud` at start-up: only what the imports add counts
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import regwarden.providers, regwarden.providers.gar\n"
        "loaded = sorted(m for m in set(sys.modules) - before if m.split('.')[0] == 'google')\n"
        "assert not loaded, loaded\n"
        "import google.cloud.artifactregistry_v1\n"
        "assert 'google.api_core' in sys.modules  # the check sees what an import adds\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
