"""The push gate judges each pushed manifest for what it is, against a real registry:
children of an index and referrers are never judged as images, an untagged manifest
waits its settle window, clocks start at facts, and missing evidence is never a verdict."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.proxy import RegistryProxy

from regwarden.devtools import LocalRegistry, make_image, make_multiarch, push_image
from regwarden.errors import EvidenceUnavailable
from regwarden.model import EventKind, ImageEvent, Outcome
from regwarden.oci import RegistryClient
from regwarden.pipeline import Pipeline
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime, load_runtime
from regwarden.signatures import publish, sign_bundle, sign_legacy
from regwarden.signatures.keys import PrivateKey, generate_private_key

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CI = "containers/5.23.1"  # pushes as skopeo would, not as regwarden


@pytest.fixture
def key(tmp_path: Path) -> PrivateKey:
    key = generate_private_key("ecdsa-p256")
    pem = key.public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    return key


def _runtime(tmp_path: Path, repo: str, *, strategy: str = "move") -> Runtime:
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        f"defaults: {{quarantine: {{strategy: {strategy}}}}}\nrepositories:\n"
        f'  - match: "{repo}"\n    team: t\n    settleWindow: 2m\n'
        '    signatures: {required: true, cosign: {keys: ["file://cosign.pub"]}, '
        "gracePeriod: 1m}\n"
    )
    return load_runtime(tmp_path / "regwarden.yaml", ledger=tmp_path / "ledger.db")


@pytest.fixture
def gate(tmp_path: Path, repo: str, key: PrivateKey) -> Iterator[Pipeline]:
    runtime = _runtime(tmp_path, repo)
    try:
        yield runtime.pipeline()
    finally:
        runtime.close()


def push_event(
    host: str, repo: str, digest: str, *, tag: str | None = None, at: datetime = T0, n: int = 0
) -> ImageEvent:
    return ImageEvent(
        kind=EventKind.PUSHED,
        source="distribution",
        image=ImageRef(registry=host, repository=repo, tag=tag, digest=digest),
        time=at,
        delivery_id=f"push-{digest}-{tag}-{n}",
        user_agent=CI,
    )


def sign(client: RegistryClient, host: str, repo: str, digest: str, key: PrivateKey) -> None:
    art = sign_legacy(image_digest=digest, docker_reference=f"{host}/{repo}", key=key)
    publish(client, repo, art)


def test_children_of_a_signed_index_are_left_to_the_index(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline, key: PrivateKey
) -> None:
    index = make_multiarch(seed=71)
    children = [d for d in index.manifests if d != index.manifest_digest]
    digest = push_image(client, repo, index, tag="1.0.0")
    sign(client, registry.host, repo, digest, key)
    host = registry.host
    # distribution notifies each child (by digest, untagged) before the index
    for n, child in enumerate(children):
        handled = gate.handle(push_event(host, repo, child, n=n), now=T0)
        assert handled.verdict is None and handled.actions == ()
        assert handled.ignored is not None and "settling" in handled.ignored
        assert handled.recheck_target == ImageRef(registry=host, repository=repo, digest=child)
        assert handled.recheck_at == T0 + timedelta(minutes=2)  # max(settle 2m, grace 1m)
    handled = gate.handle(push_event(host, repo, digest, tag="1.0.0"), now=T0)
    assert handled.verdict is not None and handled.verdict.outcome is Outcome.PASSED
    # after the window, each child is found listed by the index: never judged on its own
    later = T0 + timedelta(minutes=3)
    for child in children:
        again = gate.recheck(ImageRef(registry=host, repository=repo, digest=child), now=later)
        assert (
            again.verdict is None
            and again.ignored == f"a child of index {digest}: judged with the index"
        )
        assert gate.ledger.last_verdict(host, repo, child) is None
        assert client.head_manifest(repo, child) is not None
    assert client.head_manifest(repo, "1.0.0") is not None


def test_settle_window_runs_from_the_last_push_in_the_repository(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline
) -> None:
    host = registry.host
    first = push_image(client, repo, make_image(seed=72))
    gate.handle(push_event(host, repo, first, at=T0), now=T0)
    second = push_image(client, repo, make_image(seed=73))
    late = T0 + timedelta(minutes=1, seconds=30)
    gate.handle(push_event(host, repo, second, at=late), now=late)
    # the first manifest's own window is over, but the repository is still being pushed to
    early = gate.recheck(
        ImageRef(registry=host, repository=repo, digest=first), now=T0 + timedelta(minutes=2)
    )
    assert early.verdict is None and early.recheck_at == late + timedelta(minutes=2)


def test_a_stand_alone_image_pushed_by_digest_is_judged_after_the_window(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline
) -> None:
    host = registry.host
    digest = push_image(client, repo, make_image(seed=74))
    first = gate.handle(push_event(host, repo, digest), now=T0)
    assert first.verdict is None and first.recheck_at == T0 + timedelta(minutes=2)
    assert client.head_manifest(repo, digest) is not None
    judged = gate.recheck(first.recheck_target or first.event.image, now=first.recheck_at)
    assert judged.verdict is not None and judged.verdict.outcome is Outcome.FAILED
    assert any(a.startswith("quarantine") for a in judged.actions)
    assert client.head_manifest(repo, digest) is None
    assert client.head_manifest(f"quarantine/{repo}", digest) is not None


def test_a_bundle_referrer_push_re_evaluates_its_subject_and_is_never_judged(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline, key: PrivateKey
) -> None:
    host = registry.host
    image = make_image(seed=75)
    digest = push_image(client, repo, image, tag="2.0.0")
    pending = gate.handle(push_event(host, repo, digest, tag="2.0.0"), now=T0)
    assert pending.verdict is not None and pending.verdict.outcome is Outcome.PENDING
    bundle = sign_bundle(
        subject={"mediaType": image.media_type, "digest": digest, "size": len(image.manifest)},
        key=key,
        created=T0,
    )
    referrer = publish(client, repo, bundle)
    assert referrer != digest
    # the referrer arrives pushed by digest, untagged, like `regwarden sign --format bundle`
    handled = gate.handle(push_event(host, repo, referrer), now=T0 + timedelta(seconds=5))
    assert handled.verdict is not None and handled.verdict.image.digest == digest
    assert handled.verdict.outcome is Outcome.PASSED
    assert gate.ledger.last_verdict(host, repo, referrer) is None
    # long after every window: the referrer is still evidence, still in place
    much_later = T0 + timedelta(hours=1)
    again = gate.recheck(ImageRef(registry=host, repository=repo, digest=referrer), now=much_later)
    assert again.verdict is not None and again.verdict.image.digest == digest
    assert client.head_manifest(repo, referrer) is not None
    assert client.head_manifest(repo, digest) is not None
    # `check` on the referrer judges its subject
    assert (
        gate.assess(
            ImageRef(registry=host, repository=repo, digest=referrer), now=much_later
        ).outcome
        is Outcome.PASSED
    )


def test_a_referrer_named_without_its_subject_is_resolved_in_the_core(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline, key: PrivateKey
) -> None:
    """ECR's Referrer Action names the referrer only: the pipeline reads its subject."""
    host = registry.host
    image = make_image(seed=76)
    digest = push_image(client, repo, image, tag="3.0.0")
    gate.handle(push_event(host, repo, digest, tag="3.0.0"), now=T0)
    bundle = sign_bundle(
        subject={"mediaType": image.media_type, "digest": digest, "size": len(image.manifest)},
        key=key,
        created=T0,
    )
    referrer = publish(client, repo, bundle)
    event = ImageEvent(
        kind=EventKind.SIGNED,
        source="aws.ecr",
        image=ImageRef(registry=host, repository=repo, digest=referrer),
        time=T0,
        delivery_id=f"referrer-{referrer}",
    )
    handled = gate.handle(event, now=T0 + timedelta(seconds=5))
    assert handled.verdict is not None and handled.verdict.image.digest == digest
    assert handled.verdict.outcome is Outcome.PASSED


def test_grace_starts_at_first_sight_never_at_a_late_events_time(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline
) -> None:
    """A signature event for an image regwarden never saw pushed, stamped long ago: the
    grace period starts when regwarden first saw the image (now), not at the event."""
    host = registry.host
    digest = push_image(client, repo, make_image(seed=77), tag="4.0.0")
    event = ImageEvent(
        kind=EventKind.SIGNED,
        source="distribution",
        image=ImageRef(registry=host, repository=repo, digest=digest),
        time=T0 - timedelta(days=30),
        delivery_id=f"sig-{digest}",
        subject_digest=digest,
    )
    handled = gate.handle(event, now=T0)
    assert handled.verdict is not None and handled.verdict.outcome is Outcome.PENDING
    assert handled.recheck_at == T0 + timedelta(minutes=1)
    assert client.head_manifest(repo, digest) is not None


def test_a_registry_error_during_signature_discovery_is_error_and_never_acted_on(
    registry: LocalRegistry, tmp_path: Path, repo: str, key: PrivateKey
) -> None:
    with RegistryProxy(registry.host) as proxy:
        runtime = _runtime(tmp_path, repo)
        try:
            gate = runtime.pipeline()
            with RegistryClient(proxy.host, user_agent=CI) as client:
                digest = push_image(client, repo, make_image(seed=78), tag="5.0.0")
                proxy.inject(503, count=None, path=r"\.sig$|/referrers/")
                event = push_event(proxy.host, repo, digest, tag="5.0.0")
                long_after = T0 + timedelta(hours=2)  # unsigned and past grace: would FAIL
                with pytest.raises(EvidenceUnavailable, match=r"503|could not"):
                    gate.handle(event, now=long_after, final_attempt=False)
                assert gate.ledger.last_verdict(proxy.host, repo, digest) == "ERROR"
                assert client.head_manifest(repo, digest) is not None  # nothing moved
                proxy.clear()
                # the retry (the delivery was forgotten) judges on real evidence
                retried = gate.handle(event, now=long_after, final_attempt=False)
                assert retried.verdict is not None and retried.verdict.outcome is Outcome.FAILED
        finally:
            runtime.close()


def test_a_repush_of_a_known_digest_restarts_the_window(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline
) -> None:
    """A release copies an index's children back before it re-tags the index: the child's
    new push must wait a full window again, not be judged alone on its old first-seen."""
    host = registry.host
    digest = push_image(client, repo, make_image(seed=79))
    gate.handle(push_event(host, repo, digest, at=T0), now=T0)
    again = T0 + timedelta(hours=1)
    handled = gate.handle(push_event(host, repo, digest, at=again, n=1), now=again)
    assert handled.verdict is None
    assert handled.recheck_at == again + timedelta(minutes=2)
    assert client.head_manifest(repo, digest) is not None
