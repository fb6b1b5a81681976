"""Evidence fails separately and honestly, against a real registry.

A distribution 2.8 registry behind `RegistryProxy` answers 503 to every signature lookup
(`.sig`/`.att` tags, referrers and their tag-schema index); the registry is listed as a
Harbor whose API (the fake on its own port) holds a scan with a CRITICAL finding. The policy
names no scan source, so Harbor's scan is read by default. Before: the discovery error
dropped the whole evidence, the scan was never read, and the image was judged "no scan"
and quarantined. Now: the verdict is ERROR with the cause, the scan is still read, nothing
is acted on, and a retry once the registry answers judges the image for real.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import harbor as harbor_support
from support.harbor import FakeHarbor, robot_docker_config, shape
from support.proxy import RegistryProxy
from support.registries import PushImage

from regwarden.errors import EvidenceUnavailable
from regwarden.model import CheckOutcome, EventKind, ImageEvent, Outcome
from regwarden.oci import RegistryClient
from regwarden.policy import load_policy_text
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime
from regwarden.signatures.keys import generate_private_key
from regwarden.store import SqliteLedger

harbor = harbor_support.harbor

pytestmark = pytest.mark.integration

#: Every request signature discovery makes, and nothing else.
SIGNATURE_LOOKUPS = r"/manifests/sha256-[0-9a-f]{64}(\.sig|\.att)?$|/referrers/"


@pytest.fixture
def runtime(
    tmp_path: Path, proxy: RegistryProxy, harbor: FakeHarbor
) -> Iterator[Runtime[SqliteLedger]]:
    pem = generate_private_key("ecdsa-p256").public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    docker = robot_docker_config(tmp_path / "docker", proxy.host)
    text = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: "{proxy.host}", kind: harbor, api: "{harbor.url}"}}
repositories:
  - match: "hb/**"
    signatures: {{required: true, cosign: {{keys: ["file://cosign.pub"]}}, gracePeriod: 0s}}
    vulnerabilities: {{maxSeverity: high}}
"""
    policy = load_policy_text(text, source="faults.yaml", base_dir=tmp_path)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    rt = Runtime(policy, ledger=ledger, env={"DOCKER_CONFIG": str(docker)})
    yield rt
    rt.close()
    ledger.close()


@pytest.fixture
def pushed(push: PushImage, harbor: FakeHarbor) -> tuple[str, str]:
    """An unsigned image whose Harbor scan found a CRITICAL vulnerability."""
    repository = f"hb/{uuid.uuid4().hex[:10]}/app"
    digest = push(repository, "1.0.0", seed=7301).digest
    harbor.add(
        repository,
        digest,
        artifact=shape("artifact_success_critical.json", digest=digest),
        vulnerabilities=shape("vulnerabilities_critical.json", digest=digest),
    )
    return repository, digest


def push_event(host: str, repository: str, digest: str) -> ImageEvent:
    return ImageEvent(
        kind=EventKind.PUSHED,
        source="distribution",
        image=ImageRef.parse(f"{host}/{repository}:1.0.0@{digest}"),
        time=datetime.now(UTC),
        delivery_id=uuid.uuid4().hex,
        user_agent="skopeo/1.13.3",
    )


def test_503_on_signature_lookups_is_an_error_with_its_cause_and_the_scan_is_read(
    runtime: Runtime[SqliteLedger],
    proxy: RegistryProxy,
    harbor: FakeHarbor,
    client: RegistryClient,
    pushed: tuple[str, str],
) -> None:
    repository, digest = pushed
    proxy.inject(503, count=None, method="GET", path=SIGNATURE_LOOKUPS)
    image = ImageRef.parse(f"{proxy.host}/{repository}@{digest}")

    verdict = runtime.pipeline(alerts=False).assess(image, now=datetime.now(UTC))

    assert verdict.outcome is Outcome.ERROR
    checks = {c.name: c for c in verdict.checks}
    assert checks["signatures"].outcome is CheckOutcome.ERROR
    assert "503" in checks["signatures"].reason
    assert "not signed" not in checks["signatures"].reason
    # the scan was read all the same, and judged on what it says
    assert checks["vulnerabilities"].outcome is CheckOutcome.FAIL
    assert "CVE-2099-1001" in checks["vulnerabilities"].reason
    assert [r.path.rsplit("/", 1)[-1] for r in harbor.requests][-1] == "vulnerabilities"
    # discovery was really refused (and retried) by the registry's side
    assert proxy.count(status=503, path=r"\.sig$") > 1


def test_the_push_is_retried_not_acted_on_then_judged_once_the_registry_answers(
    runtime: Runtime[SqliteLedger],
    proxy: RegistryProxy,
    client: RegistryClient,
    pushed: tuple[str, str],
) -> None:
    repository, digest = pushed
    pipeline = runtime.pipeline()
    proxy.inject(503, count=None, method="GET", path=SIGNATURE_LOOKUPS)
    event = push_event(proxy.host, repository, digest)

    with pytest.raises(EvidenceUnavailable) as raised:
        pipeline.handle(event, now=datetime.now(UTC), final_attempt=False)

    assert "503" in str(raised.value)
    assert runtime.ledger.last_verdict(proxy.host, repository, digest) == "ERROR"
    assert client.head_manifest(repository, digest) is not None  # no action
    assert client.head_manifest(f"quarantine/{repository}", digest) is None

    proxy.clear()  # the registry answers again: the queue's retry judges the image
    handled = pipeline.handle(event, now=datetime.now(UTC), final_attempt=True)

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    reasons = {c.name: c.reason for c in handled.verdict.checks}
    assert reasons["signatures"] == "image is not signed"
    assert "CVE-2099-1001" in reasons["vulnerabilities"]
    assert client.head_manifest(f"quarantine/{repository}", digest) is not None
