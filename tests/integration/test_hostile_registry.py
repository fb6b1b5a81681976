"""A registry that turns on its client: redirects to hosts that ask for credentials, indexes
nested a thousand deep or ten thousand wide, bytes dripped one at a time, 100 MB manifests.

Fake servers on loopback (support.hostile) answer as such a registry would and record
what they got, so each test asserts on what left regwarden (no credentials off the
registry, a bounded number of reads, no write) as well as on the error it ends in. The last
tests push deep and wide indexes to a real distribution 2.8 and run the push gate on them.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from support.hostile import (
    OCI_INDEX,
    OCI_MANIFEST,
    REPO,
    FakeRegistry,
    HostileServer,
    Reply,
    chunks,
    deep_chain,
    image_manifest,
    manifest_doc,
    pattern_digest,
    wide_index,
)
from support.loopback import LoopbackServer

from regwarden.actions._children import children_of, children_to_keep
from regwarden.devtools import LocalRegistry
from regwarden.errors import (
    AuthError,
    DeadlineExceeded,
    LimitExceeded,
    NotFound,
    RegistryError,
)
from regwarden.model import EventKind, ImageEvent, Outcome
from regwarden.notify import Alert, DeliveryFailed, RetryPolicy, WebhookChannel
from regwarden.oci import (
    MAX_CONFIG_BYTES,
    MAX_INDEX_CHILDREN,
    MAX_INDEX_DEPTH,
    MAX_MANIFEST_BYTES,
    Credentials,
    RegistryClient,
)
from regwarden.providers import ProviderOptions
from regwarden.providers.oci import OciRegistry
from regwarden.reference import ImageRef
from regwarden.runtime import load_runtime
from regwarden.signatures.keys import generate_private_key

USER, PASSWORD = "alice", "s3cret-password"
BENCH = Path(__file__).resolve().parents[2] / "bench" / "hostile_rss.py"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _client(registry: HostileServer, *, max_retries: int = 0, **kwargs: Any) -> RegistryClient:
    return RegistryClient(
        registry.host,
        credentials=Credentials(USER, PASSWORD),
        backoff=0.01,
        max_retries=max_retries,
        **kwargs,
    )


def _image(registry: FakeRegistry, tag: str | None = "v1") -> tuple[str, str]:
    """(config digest, manifest digest) of a small image stored in `registry`."""
    config = registry.add_blob(b"{}")
    return config, registry.add_doc(image_manifest(config, 2), tag=tag)


# -- credentials stay with their host ------------------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "bearer"])
@pytest.mark.parametrize("what", ["manifest", "blob"])
def test_a_challenge_from_where_a_redirect_led_gets_no_credentials(auth: str, what: str) -> None:
    with (
        FakeRegistry(users={USER: PASSWORD}, bearer=auth == "bearer") as registry,
        HostileServer() as foreign,
    ):
        challenge = f'Bearer realm="{foreign.url}/token",service="evil"'
        foreign.route("*", r"^/", Reply(401, headers={"WWW-Authenticate": challenge}))
        foreign.route("GET", r"^/token", Reply(200, body=b'{"token":"theirs"}'))
        config, _ = _image(registry)
        registry.redirect(r"/manifests/|/blobs/", f"{foreign.url}/object?sig=presigned-value")
        with _client(registry) as client:
            client.ping()  # the registry's own challenge: its scheme is learnt, sent up front
            read = (
                functools.partial(client.get_manifest, REPO, "v1")
                if what == "manifest"
                else functools.partial(client.get_blob, REPO, config)
            )
            with pytest.raises(RegistryError, match="asked for credentials") as info:
                read()
    assert not isinstance(info.value, AuthError)  # nobody refused our credentials
    assert "presigned-value" not in str(info.value)
    assert foreign.count() >= 1
    assert [r.headers.get("authorization") for r in foreign.seen] == [None] * foreign.count()
    assert foreign.count(path=r"^/token") == 0
    # the registry itself got them: the client had credentials to leak
    assert any(
        r.headers.get("authorization") for r in registry.requests(path=r"/(manifests|blobs)/")
    )


def test_a_redirect_to_blob_storage_is_followed_without_authorization() -> None:
    data = b"layer bytes " * 1000
    with FakeRegistry(users={USER: PASSWORD}) as registry, HostileServer() as storage:
        digest = registry.add_blob(data)
        storage.route("GET", r"^/bucket/", Reply(200, body=data))
        registry.redirect(r"/blobs/", f"{storage.url}/bucket/object?X-Amz-Signature=abc")
        with _client(registry) as client:
            client.ping()
            assert client.get_blob(REPO, digest) == data
    [fetched] = storage.seen
    assert fetched.path == "/bucket/object?X-Amz-Signature=abc"
    assert "authorization" not in fetched.headers
    [asked] = registry.requests("GET", r"/blobs/")
    assert asked.headers["authorization"].startswith("Basic ")


def test_storage_refusing_a_redirected_read_is_not_called_refused_credentials() -> None:
    with FakeRegistry(users={USER: PASSWORD}) as registry, HostileServer() as storage:
        digest = registry.add_blob(b"data")
        storage.route("GET", r"^/bucket/", Reply(403, body=b"<Error>AccessDenied</Error>"))
        registry.redirect(r"/blobs/", f"{storage.url}/bucket/object?X-Amz-Signature=abc")
        with _client(registry) as client, pytest.raises(RegistryError) as info:
            client.get_blob(REPO, digest)
    assert not isinstance(info.value, AuthError)
    assert f"{storage.host}, where {registry.host} redirected" in str(info.value)
    assert "X-Amz-Signature=abc" not in str(info.value)


# -- bounded work on index trees -----------------------------------------------------------


@pytest.mark.parametrize("claim", [None, OCI_MANIFEST], ids=["honest", "lying-descriptors"])
def test_a_1100_deep_chain_of_indexes_is_refused_before_any_write(claim: str | None) -> None:
    with FakeRegistry() as registry:
        config = registry.add_blob(b"{}")
        chain = deep_chain(1100, (config, 2), claim=claim)
        for raw, media_type, _ in chain:
            registry.add_manifest(raw, media_type)
        top = chain[-1][2]
        with _client(registry) as client:
            with pytest.raises(LimitExceeded, match=f"nested more than {MAX_INDEX_DEPTH} deep"):
                client.copy_image(REPO, top, f"quarantine/{REPO}")
            copy_reads = registry.count("GET", r"/manifests/")
            provider = OciRegistry(registry.host, ProviderOptions(), client=client)
            with pytest.raises(LimitExceeded):
                provider.image_details(REPO, top)
    # the top and the indexes below it down to the limit; an index past it is refused on
    # its parent's word, or once read when the parent lied about what it is
    assert copy_reads == MAX_INDEX_DEPTH + (1 if claim else 0)
    assert registry.count("GET", r"/manifests/") == 2 * copy_reads
    assert registry.count("PUT") == registry.count("POST") == 0


def test_a_10000_wide_index_is_refused_after_reading_it_alone() -> None:
    with FakeRegistry() as registry:
        config = registry.add_blob(b"{}")
        kids, (raw, top) = wide_index(10_000, (config, 2))
        for kid, _ in kids:
            registry.add_manifest(kid, OCI_MANIFEST)
        registry.add_manifest(raw, OCI_INDEX, tag="v1")
        with _client(registry) as client:
            with pytest.raises(LimitExceeded, match="lists 10000 distinct manifests"):
                client.copy_image(REPO, top, f"quarantine/{REPO}")
            provider = OciRegistry(registry.host, ProviderOptions(), client=client)
            with pytest.raises(LimitExceeded, match=f"limit of {MAX_INDEX_CHILDREN}"):
                provider.image_details(REPO, top)
    assert registry.count() == 2  # the index itself, once for each: no child was read
    assert registry.count("PUT") == registry.count("POST") == 0


def test_the_children_limit_is_the_callers_to_set() -> None:
    with FakeRegistry() as registry:
        config = registry.add_blob(b"{}")
        kids, (raw, top) = wide_index(3, (config, 2))
        for kid, _ in kids:
            registry.add_manifest(kid, OCI_MANIFEST)
        registry.add_manifest(raw, OCI_INDEX)
        options = ProviderOptions(max_index_children=2)
        provider = OciRegistry(registry.host, options)
        with closing(provider), pytest.raises(LimitExceeded, match="lists 3 distinct"):
            provider.image_details(REPO, top)
        with _client(registry, max_index_children=3) as client:
            assert len(client.index_tree(REPO, client.get_manifest(REPO, top))) == 3


def test_an_index_listing_one_child_10000_times_reads_and_copies_it_once() -> None:
    with FakeRegistry() as registry:
        config = registry.add_blob(b"{}")
        [(kid, child)], (raw, top) = wide_index(10_000, (config, 2), distinct=False)
        registry.add_manifest(kid, OCI_MANIFEST)
        registry.add_manifest(raw, OCI_INDEX, tag="v1")
        with _client(registry) as client:
            provider = OciRegistry(registry.host, ProviderOptions(), client=client)
            details = provider.image_details(REPO, top)
            assert details.record.children == (child,)
            image = ImageRef(registry=registry.host, repository=REPO, digest=top)
            assert children_of(provider, image, details.content) == (child,)
            assert registry.count("GET", rf"/manifests/{child}$") == 1
            client.copy_image(REPO, top, f"quarantine/{REPO}")
    assert registry.count("PUT", rf"/manifests/{child}$") == 1
    assert registry.count("HEAD", rf"/manifests/{child}$") == 1


def test_children_to_keep_reads_the_tags_once_for_all_children() -> None:
    with FakeRegistry() as registry:
        config = registry.add_blob(b"{}")
        kids, (raw, top) = wide_index(40, (config, 2))
        for kid, _ in kids:
            registry.add_manifest(kid, OCI_MANIFEST)
        registry.add_manifest(raw, OCI_INDEX, tag="v1")
        registry.tags["solo"] = kids[7][1]  # one child is an image in its own right
        children = tuple(d for _, d in kids) * 2  # listed twice: counted once
        with _client(registry) as client:
            provider = OciRegistry(registry.host, ProviderOptions(), client=client)
            keep = children_to_keep(provider, REPO, top, children)
    assert keep == {kids[7][1]: "tagged solo on its own"}
    # index_children lists the tags once, and the children's own tags take one more
    assert registry.count("GET", r"/tags/list") == 2


# -- deadlines -----------------------------------------------------------------------------

DEADLINE = 2.0
MARGIN = 1.5  # a bound on lateness under load, not a measure of speed


@pytest.mark.parametrize("drip_body", [False, True], ids=["head", "body"])
def test_a_registry_dripping_one_byte_every_1_5_s_is_cut_off_at_the_deadline(
    drip_body: bool,
) -> None:
    raw, digest = manifest_doc(image_manifest("sha256:" + "0" * 64, 2))
    headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest}
    with FakeRegistry() as registry:
        registry.route(
            "GET", r"/manifests/v1$", Reply(200, headers, raw, drip=1.5, drip_body=drip_body)
        )
        # a generous per-read timeout and retries: only the overall deadline can end it
        with _client(registry, deadline=DEADLINE, timeout=30.0, max_retries=3) as client:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded, match=f"within the {DEADLINE:g}s deadline"):
                client.get_manifest(REPO, "v1")
            elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + MARGIN


# -- bodies streamed against their caps ----------------------------------------------------

HUGE = 100 * 1024 * 1024
# What a capped read holds at most is the cap itself (an unannounced body is refused once
# it gets there) plus one read buffer and the allocator's slack: never the 100 MB.
SLACK = 1024 * 1024


def _rss(registry: FakeRegistry, mode: str, target: str, warm: str) -> dict[str, object]:
    command = [
        sys.executable,
        str(BENCH),
        "--registry",
        registry.host,
        "--repo",
        REPO,
        "--mode",
        mode,
        "--target",
        target,
        "--warm",
        warm,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


@pytest.mark.parametrize("announced", [False, True], ids=["chunked", "content-length"])
def test_a_100_mb_manifest_raises_rss_by_less_than_the_manifest_cap(announced: bool) -> None:
    with FakeRegistry() as registry:
        _image(registry, tag="small")
        headers = {"Content-Type": OCI_MANIFEST}
        body = chunks(HUGE, fill=b"[")  # served as produced: never whole in this process
        length = HUGE if announced else None
        registry.route("GET", r"/manifests/huge$", Reply(200, headers, body, length=length))
        report = _rss(registry, "manifest", "huge", "small")
    assert report["outcome"] == "LimitExceeded", report
    assert isinstance(report["growth"], int), report
    # announced: refused before a byte of the body is read; else read up to the cap
    assert report["growth"] < (SLACK if announced else MAX_MANIFEST_BYTES + SLACK), report


def test_a_100_mb_image_config_raises_rss_by_less_than_the_config_cap() -> None:
    with FakeRegistry() as registry:
        small = registry.add_blob(b'{"config":{}}')
        huge = "sha256:" + "1" * 64
        registry.route("GET", rf"/blobs/{huge}$", Reply(200, {}, chunks(HUGE, fill=b"{")))
        report = _rss(registry, "config", huge, small)
    assert report["outcome"] == "LimitExceeded", report
    assert isinstance(report["growth"], int), report
    assert report["growth"] < MAX_CONFIG_BYTES + SLACK, report


def test_a_100_mb_blob_is_copied_as_a_stream() -> None:
    digest = pattern_digest(HUGE, fill=b"x")
    with FakeRegistry() as registry:
        warm = registry.add_blob(b"warm" * 64)
        registry.route(
            "GET", rf"/blobs/{digest}$", Reply(200, {}, chunks(HUGE, fill=b"x"), length=HUGE)
        )
        report = _rss(registry, "copy", digest, warm)
        [upload] = registry.requests("PUT", rf"digest=sha256(%3A|:){digest[7:]}")
    assert report["outcome"] == "ok", report
    assert upload.size == HUGE and upload.sha256 == digest
    assert isinstance(report["growth"], int) and report["growth"] < 16 * 1024 * 1024, report


# -- the push gate on a real registry ------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[LoopbackServer]:
    with LoopbackServer(_Sink) as server:
        server.server.received = []  # type: ignore[attr-defined]
        yield server


def _push_chain(client: RegistryClient, repo: str, manifests: list[tuple[bytes, str]]) -> None:
    """Store `manifests` (children first) by digest; the last one is tagged v1."""
    for i, (raw, media_type) in enumerate(manifests):
        last = i == len(manifests) - 1
        reference = "v1" if last else manifest_doc(json.loads(raw))[1]
        client.put_manifest(repo, reference, raw, media_type)


@pytest.mark.integration
@pytest.mark.parametrize("shape", ["deep", "wide"])
def test_the_gate_judges_a_deep_or_wide_index_error_alerts_and_leaves_it_in_place(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    sink: LoopbackServer,
    tmp_path: Path,
    shape: str,
) -> None:
    config = client.push_blob(repo, b"{}")
    if shape == "deep":
        chain = deep_chain(1100, (config, 2))
        manifests = [(raw, media_type) for raw, media_type, _ in chain]
    else:  # one more distinct child than the default limit
        kids, index = wide_index(MAX_INDEX_CHILDREN + 1, (config, 2))
        manifests = [(raw, OCI_MANIFEST) for raw, _ in kids] + [(index[0], OCI_INDEX)]
    _push_chain(client, repo, manifests)
    top = client.head_manifest(repo, "v1")
    assert top is not None and top.media_type == OCI_INDEX
    pem = generate_private_key("ecdsa-p256").public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "defaults: {quarantine: {strategy: move}}\nrepositories:\n"
        f'  - match: "{repo}"\n    team: t\n'
        '    signatures: {required: true, cosign: {keys: ["file://cosign.pub"]}}\n'
        "notifications:\n"
        f'  channels: {{hook: {{type: webhook, url: "{sink.url}/alerts"}}}}\n'
        "  routes: [{match: {team: t}, to: [hook]}]\n"
    )
    runtime = load_runtime(tmp_path / "regwarden.yaml", ledger=tmp_path / "ledger.db")
    try:
        event = ImageEvent(
            kind=EventKind.PUSHED,
            source="distribution",
            image=ImageRef(registry=registry.host, repository=repo, tag="v1", digest=top.digest),
            time=T0,
            delivery_id=f"push-{top.digest}",
            user_agent="containers/5.23.1",
        )
        pipeline = runtime.pipeline()
        handled = pipeline.handle(event, now=T0)
        held = pipeline.ledger.quarantined(registry.host, repo, top.digest)
    finally:
        runtime.close()
    assert handled.verdict is not None and handled.verdict.outcome is Outcome.ERROR
    why = "nested more than" if shape == "deep" else "distinct manifests, more than the limit"
    assert any(why in check.reason for check in handled.verdict.checks), handled.verdict
    assert handled.actions == ()
    assert held is None
    [alert] = sink.server.received  # type: ignore[attr-defined]
    assert "ERROR" in json.dumps(alert)
    # not moved: still in place under its tag, nothing in the quarantine repository
    assert client.head_manifest(repo, "v1") == top
    with pytest.raises(NotFound):
        client.list_tags(f"quarantine/{repo}")


def test_an_alert_receiver_dripping_its_answer_is_cut_off_at_the_send_budget() -> None:
    alert = Alert(
        time=datetime.now(UTC),
        image=ImageRef.parse("r.example/a/b@sha256:" + "1" * 64),
        outcome=Outcome.FAILED,
        summary="FAILED: no action",
    )
    with HostileServer() as sink:
        sink.route("POST", r"/hook$", Reply(204, {}, b"", drip=1.5))
        # a generous per-read timeout: only the send's budget can end it
        channel = WebhookChannel(
            "hook",
            f"{sink.url}/hook",
            retry=RetryPolicy(attempts=3, budget=DEADLINE, timeout=30.0),
        )
        started = time.monotonic()
        with pytest.raises(DeliveryFailed):
            channel.send(alert)
        elapsed = time.monotonic() - started
    assert sink.count("POST") >= 1
    assert elapsed < DEADLINE + MARGIN
