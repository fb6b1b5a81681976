"""The push gate's evidence on Google Artifact Registry: the GAR provider against `FakeGar`
(the real docker-registry behind its `/v2/` front, the AR REST control plane) and
Artifact Analysis against `FakeGrafeas`, through the real `Runtime.evidence`.

The policy lists `us-docker.pkg.dev` as `gar` and names no scan source, so GAR's own
scanner, `artifact-analysis`, is read; signature discovery runs on the data plane.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.fake_gar import FakeGar
from support.fake_grafeas import FakeGrafeas

from regwarden.devtools import (
    ImageBlobs,
    IndexBlobs,
    LocalRegistry,
    make_image,
    make_multiarch,
    push_image,
)
from regwarden.gate import Evidence, Facts, evaluate, gate_rules
from regwarden.model import CheckOutcome, Outcome, Verdict
from regwarden.oci import RegistryClient
from regwarden.policy import load_policy_text
from regwarden.providers import ProviderOptions
from regwarden.providers.gar import GarRegistry
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime
from regwarden.scanning.artifact_analysis import resource_url
from regwarden.signatures import publish, sign_legacy
from regwarden.signatures.keys import PrivateKey, generate_private_key
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

HOST = "us-docker.pkg.dev"
T0 = datetime(2026, 1, 1, tzinfo=UTC)  # FakeGrafeas's scans finish at this time


class Gar:
    def __init__(
        self, gar: FakeGar, grafeas: FakeGrafeas, runtime: Runtime[SqliteLedger], key: PrivateKey
    ) -> None:
        self.gar = gar
        self.grafeas = grafeas
        self.runtime = runtime
        self.key = key


@pytest.fixture
def gcp(registry: LocalRegistry, tmp_path: Path) -> Iterator[Gar]:
    key = generate_private_key()
    pem = key.public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    policy = load_policy_text(
        f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: gar}}
defaults:
  signatures: {{required: true, cosign: {{keys: ["file://cosign.pub"]}}, gracePeriod: 0s}}
  vulnerabilities: {{maxSeverity: high}}
""",
        source="gar.yaml",
        base_dir=tmp_path,
    )
    with FakeGar(registry.host) as gar, FakeGrafeas() as grafeas:
        gar.now = lambda: T0
        env = {
            "REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": gar.url,
            "REGWARDEN_GCP_ENDPOINT_CONTAINERANALYSIS": grafeas.url,
        }
        provider = GarRegistry(
            HOST, ProviderOptions(data_plane_host=gar.host, account="demo-proj"), env=env
        )
        ledger = SqliteLedger(tmp_path / "ledger.db")
        runtime = Runtime(policy, ledger=ledger, env=env, registry_factory=lambda host: provider)
        yield Gar(gar, grafeas, runtime, key)
        runtime.close()
        ledger.close()
        provider.close()


def push_signed(gcp: Gar, repository: str, content: ImageBlobs | IndexBlobs, tag: str) -> str:
    with RegistryClient(gcp.gar.host) as client:
        digest = push_image(client, repository, content, tag)
        art = sign_legacy(
            image_digest=digest,
            docker_reference=f"{HOST}/{repository}",
            key=gcp.key,
        )
        publish(client, repository, art)
    return digest


def judge(gcp: Gar, repository: str, digest: str) -> tuple[Evidence, Verdict]:
    image = ImageRef.parse(f"{HOST}/{repository}@{digest}")
    rules = gate_rules(gcp.runtime.policy.for_repository(repository))
    found = gcp.runtime.evidence(gcp.runtime.registry(HOST), image, rules)
    facts = Facts(
        image=image,
        tags=("1.0.0",),
        pushed_at=T0,
        signatures=found.signatures,
        signatures_unmet=found.signatures_unmet,
        signature_error=found.signature_error,
        scan=found.scan,
        scan_error=found.scan_error,
        unavailable=found.unavailable,
    )
    return found, evaluate(facts, rules, T0 + timedelta(minutes=5))


def test_a_signed_gar_image_with_a_critical_finding_fails_on_its_scan_alone(gcp: Gar) -> None:
    repository = f"demo-proj/repo/app-{uuid.uuid4().hex[:6]}"
    digest = push_signed(gcp, repository, make_image(seed=4201), "1.0.0")
    url = resource_url(HOST, repository, digest)
    gcp.grafeas.set_discovery(url, "FINISHED_SUCCESS")
    gcp.grafeas.add_vulnerability(
        url, "CVE-2023-4911", "HIGH", package="glibc", version="2.36-9", effective="CRITICAL"
    )

    found, verdict = judge(gcp, repository, digest)

    assert found.scan is not None and found.scan.scanner == "artifact-analysis"
    assert [s.verified for s in found.signatures] == [True]
    assert verdict.outcome is Outcome.FAILED
    outcomes = {c.name: c.outcome for c in verdict.checks}
    assert outcomes["signatures"] is CheckOutcome.PASS
    assert outcomes["vulnerabilities"] is CheckOutcome.FAIL
    # the occurrences are asked for under GAR's own host, never the loopback front's
    (query,) = [
        r.query["filter"][0]
        for r in gcp.grafeas.calls("GET", r"/v1/projects/demo-proj/occurrences")
        if "VULNERABILITY" in r.query["filter"][0]
    ]
    assert query == f'kind="VULNERABILITY" AND resourceUrl="https://{HOST}/{repository}@{digest}"'


def test_a_multi_arch_index_is_judged_on_its_own_occurrences(gcp: Gar) -> None:
    repository = f"demo-proj/repo/multi-{uuid.uuid4().hex[:6]}"
    index = make_multiarch(seed=4202)
    digest = push_signed(gcp, repository, index, "2.0.0")
    gcp.grafeas.set_discovery(resource_url(HOST, repository, digest), "SCANNING")

    _, pending = judge(gcp, repository, digest)
    assert pending.outcome is Outcome.PENDING

    gcp.grafeas.set_discovery(resource_url(HOST, repository, digest), "FINISHED_SUCCESS")
    gcp.grafeas.add_vulnerability(
        resource_url(HOST, repository, digest), "CVE-2024-1", "LOW", package="zlib", version="1"
    )
    found, passed = judge(gcp, repository, digest)
    assert passed.outcome is Outcome.PASSED
    assert found.scan is not None and [f.id for f in found.scan.findings] == ["CVE-2024-1"]
