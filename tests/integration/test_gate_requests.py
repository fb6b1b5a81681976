"""The push gate's round trips against a real registry: each needed request once, the
independent ones overlapped, nothing fetched twice (the push-gate benchmark's floor makes
exactly these requests, so a regression here shows up there)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from support.registries import PushImage

from regwarden.devtools import LocalRegistry
from regwarden.model import EventKind, ImageEvent, Outcome
from regwarden.oci import RegistryClient
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime, load_runtime
from regwarden.signatures import publish, sign_bundle
from regwarden.signatures.keys import PrivateKey, generate_private_key

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def gate(tmp_path: Path, repo: str) -> Iterator[tuple[Runtime, PrivateKey]]:
    key = generate_private_key("ecdsa-p256")
    pem = key.public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n"
        f'  - match: "{repo}"\n    team: t\n'
        '    signatures: {required: true, cosign: {keys: ["file://cosign.pub"]}, '
        "gracePeriod: 0s}\n"
    )
    runtime = load_runtime(tmp_path / "regwarden.yaml", ledger=tmp_path / "ledger.db")
    try:
        yield runtime, key
    finally:
        runtime.close()


def _record(runtime: Runtime, host: str) -> list[tuple[str, str, float]]:
    seen: list[tuple[str, str, float]] = []
    lock = threading.Lock()

    def hook(request: httpx.Request) -> None:
        with lock:
            seen.append((request.method, request.url.path, time.perf_counter()))

    runtime.registry(host).data_plane()._http.event_hooks["request"].append(hook)
    return seen


def _event(registry: LocalRegistry, repo: str, digest: str) -> ImageEvent:
    return ImageEvent(
        kind=EventKind.PUSHED,
        source="distribution",
        image=ImageRef(registry=registry.host, repository=repo, tag="v1", digest=digest),
        time=NOW,
        delivery_id=f"d-{digest}",
        user_agent="containers/5.23.1",
    )


def test_unsigned_push_is_moved_with_thirteen_requests_and_no_refetch(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    gate: tuple[Runtime, PrivateKey],
) -> None:
    runtime, _ = gate
    image = push(repo, "v1", seed=4242, layers=2)
    digest = image.manifest_digest
    seen = _record(runtime, registry.host)
    handled = runtime.pipeline().handle(_event(registry, repo, digest), now=NOW)

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    assert handled.actions and handled.actions[0].startswith("quarantine (move")
    assert client.head_manifest(f"quarantine/{repo}", digest) is not None
    assert client.head_manifest(repo, digest) is None

    calls = [(m, p) for m, p, _ in seen]
    hexpart = digest.split(":", 1)[1]
    # the manifest read serves as the image's HEAD; the one HEAD is quarantine reading which
    # tags the registry holds for the digest now (tag list + one HEAD per tag), so that
    # tags regwarden never saw pushed are taken away (and restored on release) too
    assert [c for c in calls if c[0] == "HEAD"] == [("HEAD", f"/v2/{repo}/manifests/v1")]
    assert calls.count(("GET", f"/v2/{repo}/tags/list")) == 1
    assert calls.count(("GET", f"/v2/{repo}/manifests/{digest}")) == 1  # copy reuses it
    assert calls.count(("POST", f"/v2/quarantine/{repo}/blobs/uploads/")) == 3  # config + 2
    assert {p for _, p in calls} >= {
        f"/v2/{repo}/manifests/sha256-{hexpart}.sig",
        f"/v2/{repo}/manifests/sha256-{hexpart}.att",
        f"/v2/{repo}/referrers/{digest}",
        f"/v2/{repo}/manifests/sha256-{hexpart}",  # referrers tag schema (no API here)
        f"/v2/{repo}/blobs/{image.config_digest}",
    }
    assert len(calls) == 13, calls  # 11 + the two reads of the tags the registry holds


def test_signed_push_passes_with_the_descriptor_from_the_manifest_read(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    gate: tuple[Runtime, PrivateKey],
) -> None:
    runtime, key = gate
    image = push(repo, "v1", seed=4243, layers=1)
    digest = image.manifest_digest
    bundle = sign_bundle(
        subject={"mediaType": image.media_type, "digest": digest, "size": len(image.manifest)},
        key=key,
        created=NOW,
    )
    publish(client, repo, bundle)
    seen = _record(runtime, registry.host)
    # Hold the image's config read until a signature lookup has started: run in turn
    # (details, then evidence), the lookups would never start and the wait would run out.
    lookup_started = threading.Event()
    overlapped: list[bool] = []

    def hold_config(request: httpx.Request) -> None:
        path = request.url.path
        if path.endswith((".sig", ".att")) or "/referrers/" in path:
            lookup_started.set()
        elif path == f"/v2/{repo}/blobs/{image.config_digest}":
            overlapped.append(lookup_started.wait(timeout=20))

    runtime.registry(registry.host).data_plane()._http.event_hooks["request"].append(hold_config)
    handled = runtime.pipeline().handle(_event(registry, repo, digest), now=NOW)

    assert handled.verdict is not None
    assert handled.verdict.outcome is Outcome.PASSED, handled.verdict.checks
    assert handled.actions == ()
    assert client.head_manifest(repo, digest) is not None
    assert [m for m, _, _ in seen if m == "HEAD"] == []
    lookups = [t for m, p, t in seen if p.endswith((".sig", ".att")) or "/referrers/" in p]
    assert len(lookups) == 3
    # the signature lookups did not wait for the image's manifest and config
    assert overlapped == [True]
