"""The push gate with Clair v4 as its scan source: the real pipeline (`Runtime`) against the
real local registry (images pushed as OCI content), with the fake Clair (tests/support/
fake_clair.py) on its own loopback port. The fake fetches the layers an index request names
from the registry itself, as Clair does, so what regwarden hands Clair for fetching (a pull
token, or nothing) is exercised against the real registry's auth."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from support.fake_clair import FakeClair
from support.registries import AuthRegistry, PushImage
from support.token_registry import TokenRegistry

from regwarden.devtools import ImageBlobs, LocalRegistry, make_image, make_multiarch, push_image
from regwarden.errors import AuthError, EvidenceUnavailable, RegistryError
from regwarden.model import CheckOutcome, EventKind, ImageEvent, Outcome
from regwarden.oci import Credentials, RegistryClient
from regwarden.pipeline import Handled
from regwarden.policy import load_policy_text, secret_env_var
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime
from regwarden.scanning import SCAN_SOURCES
from regwarden.scanning.clair import ClairScanSource
from regwarden.store import SqliteLedger

if TYPE_CHECKING:
    from regwarden.providers import Registry

pytestmark = pytest.mark.integration

KEY = secrets.token_bytes(32)
PSK = base64.b64encode(KEY).decode()
CRITICAL = "vulnerability_report_critical.json"
CLEAN = "vulnerability_report_clean.json"
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
registries:
  - host: "{host}"
    kind: distribution
    clair: {{url: "{clair}", psk: "secret://clair-psk"}}
defaults:
  mode: enforce
repositories:
  - match: "cl/**"
    vulnerabilities:
      maxSeverity: high
      scanTimeout: 30m
      sources: [clair]
"""


@pytest.fixture
def clair() -> Iterator[FakeClair]:
    with FakeClair(psk=KEY) as fake:
        yield fake


@pytest.fixture
def quick_retries() -> Iterator[None]:
    """The `clair` source without pauses between retries, for one test."""
    built_in = SCAN_SOURCES.unregister("clair")

    def factory(context: Any) -> Any:
        listed = context.policy.registry(context.registry.host)
        return ClairScanSource.from_config(
            listed.clair, env=context.env, backoff=0.0, sleep=lambda _: None
        )

    SCAN_SOURCES.add("clair", factory)
    yield
    SCAN_SOURCES.unregister("clair")
    SCAN_SOURCES.add("clair", built_in)


def make_runtime(
    tmp_path: Path, host: str, clair_url: str, *, psk: str = PSK, env: dict[str, str] | None = None
) -> Runtime[SqliteLedger]:
    text = POLICY.format(host=host, clair=clair_url)
    policy = load_policy_text(text, source="clair-policy.yaml", base_dir=tmp_path)
    ledger = SqliteLedger(tmp_path / f"ledger-{uuid.uuid4().hex[:6]}.db")
    return Runtime(
        policy,
        ledger=ledger,
        env={
            secret_env_var("clair-psk"): psk,
            "DOCKER_CONFIG": str(tmp_path / "no-docker"),
            **(env or {}),
        },
    )


@pytest.fixture
def runtime(
    tmp_path: Path, registry: LocalRegistry, clair: FakeClair
) -> Iterator[Runtime[SqliteLedger]]:
    rt = make_runtime(tmp_path, registry.host, clair.url)
    yield rt
    rt.close()
    rt.ledger.close()


@pytest.fixture
def repository() -> str:
    return f"cl/{uuid.uuid4().hex[:10]}/app"


def push_event(host: str, repository: str, digest: str, now: datetime) -> ImageEvent:
    return ImageEvent(
        kind=EventKind.PUSHED,
        source="distribution",
        image=ImageRef.parse(f"{host}/{repository}:1.0.0@{digest}"),
        time=now,
        delivery_id=uuid.uuid4().hex,
    )


def handle(
    runtime: Runtime[SqliteLedger], host: str, repository: str, digest: str, now: datetime
) -> Handled:
    return runtime.pipeline().handle(push_event(host, repository, digest, now), now=now)


def vulnerabilities(handled: Handled) -> tuple[CheckOutcome, str]:
    assert handled.verdict is not None, handled.ignored
    (check,) = [c for c in handled.verdict.checks if c.name == "vulnerabilities"]
    return check.outcome, check.reason


def paths(clair: FakeClair) -> list[str]:
    return [f"{r.method} {r.path.split('/api/v1/', 1)[1].split('/')[0]}" for r in clair.requests]


def test_critical_finding_in_clair_fails_after_clair_indexes_the_image(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    clair: FakeClair,
    repository: str,
) -> None:
    image = push(repository, "1.0.0", seed=1701, layers=2)
    assert isinstance(image, ImageBlobs)
    clair.set_report(image.digest, CRITICAL)

    handled = handle(runtime, registry.host, repository, image.digest, datetime.now(UTC))

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    outcome, reason = vulnerabilities(handled)
    assert outcome is CheckOutcome.FAIL and "CVE-2022-0778" in reason
    # report missing → index state missing → index request → report
    assert paths(clair) == [
        "GET vulnerability_report",
        "GET index_report",
        "POST index_report",
        "GET vulnerability_report",
    ]
    assert all(r.refused is None for r in clair.requests)  # every request had a valid JWT
    (sent,) = clair.index_requests
    assert sent.hash == image.digest
    assert [layer["hash"] for layer in sent.layers] == list(image.layer_digests)
    assert [layer["uri"] for layer in sent.layers] == [
        f"http://{registry.host}/v2/{repository}/blobs/{d}" for d in image.layer_digests
    ]
    # an anonymous registry has no token service: no header, Clair fetches on its own
    assert all(layer["headers"] == {} for layer in sent.layers)
    assert sent.fetched == [200, 200]  # the fake fetched each layer from the real registry
    assert client.head_manifest(f"quarantine/{repository}", image.digest) is not None


def test_clean_clair_report_passes_without_indexing_again(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    push: PushImage,
    clair: FakeClair,
    repository: str,
) -> None:
    image = push(repository, "1.0.0", seed=1702)
    clair.finish(image.digest)  # indexed earlier (by Quay, or another gate)
    clair.set_report(image.digest, CLEAN)

    handled = handle(runtime, registry.host, repository, image.digest, datetime.now(UTC))

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.PASSED
    assert vulnerabilities(handled) == (CheckOutcome.PASS, "within policy (no findings)")
    assert paths(clair) == ["GET vulnerability_report"]
    assert clair.index_requests == []


def test_unindexed_image_is_pending_while_clair_indexes_then_fails_at_scan_timeout(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    push: PushImage,
    clair: FakeClair,
    repository: str,
) -> None:
    image = push(repository, "1.0.0", seed=1703)
    clair.index_state(image.digest, "ScanLayers")  # Clair takes its time
    pushed = datetime.now(UTC)

    first = handle(runtime, registry.host, repository, image.digest, pushed)
    assert first.verdict is not None and first.verdict.outcome is Outcome.PENDING
    outcome, reason = vulnerabilities(first)
    assert outcome is CheckOutcome.PENDING and "Clair is indexing" in reason, reason
    assert first.recheck_at is not None

    later = handle(runtime, registry.host, repository, image.digest, pushed + timedelta(minutes=5))
    assert later.verdict is not None and later.verdict.outcome is Outcome.PENDING
    assert len(clair.index_requests) == 1  # an index under way is not asked for again

    late = handle(runtime, registry.host, repository, image.digest, pushed + timedelta(minutes=31))
    assert late.verdict is not None and late.verdict.outcome is Outcome.FAILED
    outcome, reason = vulnerabilities(late)
    assert outcome is CheckOutcome.FAIL and "no scan within" in reason, reason


def test_indexing_then_indexed_passes_on_the_recheck(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    push: PushImage,
    clair: FakeClair,
    repository: str,
) -> None:
    image = push(repository, "1.0.0", seed=1704)
    clair.index_state(image.digest, "FetchLayers")
    pushed = datetime.now(UTC)
    first = handle(runtime, registry.host, repository, image.digest, pushed)
    assert first.verdict is not None and first.verdict.outcome is Outcome.PENDING

    clair.finish(image.digest)
    again = handle(runtime, registry.host, repository, image.digest, pushed + timedelta(minutes=2))

    assert again.verdict is not None and again.verdict.outcome is Outcome.PASSED


def test_matcher_still_loading_its_data_is_pending(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    push: PushImage,
    clair: FakeClair,
    repository: str,
) -> None:
    image = push(repository, "1.0.0", seed=1705)
    clair.set_matcher_ready(False)

    handled = handle(runtime, registry.host, repository, image.digest, datetime.now(UTC))

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.PENDING
    outcome, reason = vulnerabilities(handled)
    assert outcome is CheckOutcome.PENDING and "vulnerability data" in reason, reason


@pytest.mark.parametrize("status", [500, 503])
def test_clair_unavailable_is_an_error_retried_never_clean(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    clair: FakeClair,
    repository: str,
    status: int,
    quick_retries: None,
) -> None:
    image = push(repository, "1.0.0", seed=1706)
    clair.set_report(image.digest, CRITICAL)
    clair.finish(image.digest)
    clair.inject(status, count=4)  # every attempt of one evaluation
    late = datetime.now(UTC) + timedelta(hours=2)  # even past scanTimeout
    event = push_event(registry.host, repository, image.digest, late)
    pipeline = runtime.pipeline()

    with pytest.raises(EvidenceUnavailable) as raised:
        pipeline.handle(event, now=late, final_attempt=False)

    assert f"HTTP {status}" in str(raised.value) and "Clair's report of" in str(raised.value)
    assert [r.status for r in clair.requests] == [status] * 4  # the first try, three retries
    assert runtime.ledger.last_verdict(registry.host, repository, image.digest) == "ERROR"
    assert client.head_manifest(f"quarantine/{repository}", image.digest) is None  # no action

    handled = pipeline.handle(event, now=late)  # the queue's retry, Clair back

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    assert "CVE-2022-0778" in vulnerabilities(handled)[1]


def test_a_transient_clair_failure_is_retried_to_a_verdict(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    push: PushImage,
    clair: FakeClair,
    repository: str,
    quick_retries: None,
) -> None:
    image = push(repository, "1.0.0", seed=1707)
    clair.set_report(image.digest, CRITICAL)
    clair.finish(image.digest)
    clair.inject(503, count=2)

    handled = handle(runtime, registry.host, repository, image.digest, datetime.now(UTC))

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    assert [r.status for r in clair.requests] == [503, 503, 200]


def test_a_wrong_psk_is_refused_by_clair_and_is_an_error(
    tmp_path: Path,
    registry: LocalRegistry,
    push: PushImage,
    clair: FakeClair,
    repository: str,
) -> None:
    image = push(repository, "1.0.0", seed=1708)
    clair.finish(image.digest)
    wrong = base64.b64encode(secrets.token_bytes(32)).decode()
    rt = make_runtime(tmp_path, registry.host, clair.url, psk=wrong)
    now = datetime.now(UTC)
    try:
        with pytest.raises(EvidenceUnavailable) as raised:
            rt.pipeline().handle(
                push_event(registry.host, repository, image.digest, now),
                now=now,
                final_attempt=False,
            )
    finally:
        rt.close()
        rt.ledger.close()

    (seen,) = clair.requests  # a refusal is not retried
    assert (seen.status, seen.refused) == (401, "bad signature")
    assert "Clair refused its JWT" in str(raised.value) and wrong not in str(raised.value)


def test_index_of_a_basic_auth_registry_carries_no_credentials(
    tmp_path: Path, auth_registry: AuthRegistry, repository: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = auth_registry.credentials
    basic = "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": basic.removeprefix("Basic ")}}})
    )
    with RegistryClient(auth_registry.host, credentials=creds) as pusher:
        image = make_image(seed=1709)
        push_image(pusher, repository, image, tag="1.0.0")
    # Clair's own registry configuration holds the credentials it fetches with
    with FakeClair(psk=KEY, registry_auth=basic) as clair:
        clair.set_report(image.digest, CRITICAL)
        monkeypatch.setenv("DOCKER_CONFIG", str(config))  # the provider reads the process's
        rt = make_runtime(
            tmp_path, auth_registry.host, clair.url, env={"DOCKER_CONFIG": str(config)}
        )
        try:
            handled = handle(rt, auth_registry.host, repository, image.digest, datetime.now(UTC))
        finally:
            rt.close()
            rt.ledger.close()

        assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
        (sent,) = clair.index_requests
        assert all(layer["headers"] == {} for layer in sent.layers)  # never Basic
        assert "Basic" not in json.dumps(sent.layers) and str(creds.password) not in str(sent)
        assert sent.fetched == [200]


def test_index_of_a_token_registry_carries_a_pull_scoped_bearer(
    tmp_path: Path, repository: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TokenRegistry(users={"ci": "ci-pass"}) as registry:
        creds = Credentials(username="ci", password="ci-pass")
        with RegistryClient(registry.host, credentials=creds) as pusher:
            image = make_image(seed=1710, layers=2)
            push_image(pusher, repository, image, tag="1.0.0")
        config = tmp_path / "docker"
        config.mkdir()
        auth = base64.b64encode(b"ci:ci-pass").decode()
        (config / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
        with FakeClair(psk=KEY) as clair:  # Clair has no credentials of its own here
            clair.set_report(image.digest, CLEAN)
            monkeypatch.setenv("DOCKER_CONFIG", str(config))  # the provider reads the process's
            rt = make_runtime(
                tmp_path, registry.host, clair.url, env={"DOCKER_CONFIG": str(config)}
            )
            try:
                handled = handle(rt, registry.host, repository, image.digest, datetime.now(UTC))
            finally:
                rt.close()
                rt.ledger.close()

            assert handled.verdict is not None and handled.verdict.outcome is Outcome.PASSED
            (sent,) = clair.index_requests
            assert sent.fetched == [200, 200]  # the real registry took the token
            values = {v for layer in sent.layers for v in layer["headers"]["Authorization"]}
            (value,) = values
            assert value.startswith("Bearer ")
            claims = registry.claims(value.removeprefix("Bearer "))
            assert claims["access"] == [
                {"type": "repository", "name": repository, "actions": ["pull"]}
            ]
            assert claims["exp"] - claims["iat"] <= 300


def test_multi_arch_index_is_judged_over_every_platform(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    client: RegistryClient,
    clair: FakeClair,
    repository: str,
) -> None:
    index = make_multiarch(seed=1711)
    push_image(client, repository, index, tag="1.0.0")
    amd64, arm64 = index.children
    clair.set_report(amd64.digest, CLEAN)
    clair.set_report(arm64.digest, CRITICAL)

    handled = handle(runtime, registry.host, repository, index.digest, datetime.now(UTC))

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    outcome, reason = vulnerabilities(handled)
    assert outcome is CheckOutcome.FAIL and "CVE-2022-0778" in reason
    assert sorted(r.hash for r in clair.index_requests) == sorted([amd64.digest, arm64.digest])
    assert not any(index.digest in r.path for r in clair.requests)  # Clair never sees the index


def test_multi_arch_index_waits_for_every_platform(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    client: RegistryClient,
    clair: FakeClair,
    repository: str,
) -> None:
    index = make_multiarch(seed=1712)
    push_image(client, repository, index, tag="1.0.0")
    amd64, arm64 = index.children
    clair.set_report(amd64.digest, CRITICAL)
    clair.index_state(arm64.digest, "ScanLayers")

    handled = handle(runtime, registry.host, repository, index.digest, datetime.now(UTC))

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.PENDING
    outcome, reason = vulnerabilities(handled)
    assert outcome is CheckOutcome.PENDING and "linux/arm64" in reason, reason
    assert len(clair.index_requests) == 2  # both platforms were sent for indexing


@dataclass
class DataPlane:
    """What the source reads of a provider: its host and its OCI client."""

    host: str
    client: RegistryClient

    def data_plane(self) -> RegistryClient:
        return self.client


def test_an_index_request_clair_does_not_answer_in_time_is_not_sent_again(
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    clair: FakeClair,
    repository: str,
) -> None:
    image = push(repository, "1.0.0", seed=1713)
    clair.set_index_delay(2.0)
    source = ClairScanSource(
        url=clair.url, psk=KEY, index_timeout=0.3, backoff=0.0, sleep=lambda _: None
    )
    ref = ImageRef.parse(f"{registry.host}/{repository}@{image.digest}")

    with pytest.raises(RegistryError, match=r"did not answer within 0\.3 s") as raised:
        source(cast("Registry", DataPlane(registry.host, client)), ref)

    assert not isinstance(raised.value, AuthError)
    posts = [a for a in clair.arrivals if a.startswith("POST")]
    assert posts == ["POST /indexer/api/v1/index_report"]  # indexing is not started over
