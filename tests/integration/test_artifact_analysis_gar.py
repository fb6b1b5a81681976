"""The push gate's evidence on Google Artifact Registry: the GAR provider against `FakeGar`
(the real docker-registry behind its `/v2/` front, the AR REST control plane) and
Artifact Analysis against `FakeGrafeas`, through the real `Runtime.evidence`.

The policy lists `us-docker.pkg.dev` as `gar` and names no scan source, so GAR's own
scanner, `artifact-analysis`, is read; signature discovery runs on the data plane.

A multi-arch index with no occurrences of its own is judged on its first `linux/amd64`
image's, which is all Artifact Analysis scans of a manifest list: the index is a real one
in the registry, its children as a `skopeo copy --all` would leave them.
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
from regwarden.model import CheckOutcome, CheckResult, Outcome, Verdict
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
LIST = r"/v1/projects/demo-proj/occurrences"


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


def judge(
    gcp: Gar, repository: str, digest: str, *, at: timedelta = timedelta(minutes=5)
) -> tuple[Evidence, Verdict]:
    """The evidence and verdict on `repository@digest`, `at` after its push at T0."""
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
        scan_waiting=found.scan_waiting,
        unavailable=found.unavailable,
    )
    return found, evaluate(facts, rules, T0 + at)


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


# -- an index scanned through its linux/amd64 image ---------------------------------------------


def children(index: IndexBlobs) -> dict[str, str]:
    """Each child's platform (`os/arch[/variant]`) → its digest."""
    out = {}
    for child in index.children:
        assert child.platform is not None
        parts = (child.platform["os"], child.platform["architecture"])
        variant = child.platform.get("variant")
        out["/".join(parts + ((variant,) if variant else ()))] = child.manifest_digest
    return out


def vulnerabilities(verdict: Verdict) -> CheckResult:
    (check,) = [c for c in verdict.checks if c.name == "vulnerabilities"]
    return check


def test_an_index_with_no_scan_of_its_own_is_judged_on_its_first_linux_amd64_image(
    gcp: Gar,
) -> None:
    repository = f"demo-proj/repo/multi-{uuid.uuid4().hex[:6]}"
    # amd64 listed second: the platform picks it, not the order
    index = make_multiarch(platforms=("linux/arm64", "linux/amd64", "linux/arm/v7"), seed=4203)
    digest = push_signed(gcp, repository, index, "3.0.0")
    kids = children(index)
    amd64, arm64 = (resource_url(HOST, repository, kids[p]) for p in ("linux/amd64", "linux/arm64"))
    # the arm64 image's findings are never read: Artifact Analysis would not scan it
    gcp.grafeas.set_discovery(arm64, "FINISHED_SUCCESS")
    gcp.grafeas.add_vulnerability(arm64, "CVE-2099-9", "CRITICAL", package="x", version="1")
    gcp.grafeas.set_discovery(amd64, "SCANNING")

    found, pending = judge(gcp, repository, digest)

    assert pending.outcome is Outcome.PENDING and found.scan is None
    check = vulnerabilities(pending)
    assert check.outcome is CheckOutcome.PENDING
    assert (
        f"awaiting Artifact Analysis's scan of the linux/amd64 image {kids['linux/amd64']} "
        f"of index {HOST}/{repository}@{digest} (SCANNING)"
    ) in check.reason

    gcp.grafeas.set_discovery(amd64, "FINISHED_SUCCESS")
    gcp.grafeas.add_vulnerability(amd64, "CVE-2024-1", "LOW", package="zlib", version="1")
    found, passed = judge(gcp, repository, digest)

    assert passed.outcome is Outcome.PASSED
    assert found.scan is not None and found.scan.digest == kids["linux/amd64"]
    assert [f.id for f in found.scan.findings] == ["CVE-2024-1"]
    note = (
        f"Artifact Analysis scanned only this index's linux/amd64 image {kids['linux/amd64']} "
        "(it scans only the first linux/amd64 image of a manifest list); "
        "not scanned: linux/arm64, linux/arm/v7"
    )
    assert found.scan.note == note
    assert vulnerabilities(passed).reason == f"within policy (1 low); {note}"

    gcp.grafeas.add_vulnerability(
        amd64, "CVE-2023-4911", "HIGH", package="glibc", version="2.36-9", effective="CRITICAL"
    )
    found, failed = judge(gcp, repository, digest)

    assert failed.outcome is Outcome.FAILED
    check = vulnerabilities(failed)
    assert check.outcome is CheckOutcome.FAIL
    assert "CVE-2023-4911" in check.reason and check.reason.endswith(note)
    assert "CVE-2099-9" not in check.reason
    # the index's own occurrences asked for first, then the amd64 image's only
    asked = {r.query["filter"][0] for r in gcp.grafeas.calls("GET", LIST)}
    assert asked == {
        f'kind="{kind}" AND resourceUrl="{url}"'
        for kind in ("DISCOVERY", "VULNERABILITY")
        for url in (resource_url(HOST, repository, digest), amd64)
    } - {f'kind="VULNERABILITY" AND resourceUrl="{resource_url(HOST, repository, digest)}"'}


def test_the_index_s_own_discovery_decides_when_it_has_one(gcp: Gar) -> None:
    repository = f"demo-proj/repo/multi-{uuid.uuid4().hex[:6]}"
    index = make_multiarch(seed=4204)
    digest = push_signed(gcp, repository, index, "4.0.0")
    amd64 = resource_url(HOST, repository, children(index)["linux/amd64"])
    gcp.grafeas.set_discovery(amd64, "FINISHED_SUCCESS")
    gcp.grafeas.add_vulnerability(amd64, "CVE-2023-4911", "CRITICAL", package="g", version="2")
    gcp.grafeas.set_discovery(resource_url(HOST, repository, digest), "FINISHED_SUCCESS")

    found, passed = judge(gcp, repository, digest)

    assert passed.outcome is Outcome.PASSED
    assert found.scan is not None and (found.scan.digest, found.scan.note) == (digest, "")
    assert not [r for r in gcp.grafeas.calls("GET", LIST) if amd64 in r.query["filter"][0]]


@pytest.mark.parametrize("status", ["FINISHED_FAILED", "FINISHED_UNSUPPORTED"])
def test_a_failed_scan_of_the_linux_amd64_image_fails_the_index(gcp: Gar, status: str) -> None:
    repository = f"demo-proj/repo/multi-{uuid.uuid4().hex[:6]}"
    index = make_multiarch(seed=4205)
    digest = push_signed(gcp, repository, index, "5.0.0")
    amd64 = children(index)["linux/amd64"]
    gcp.grafeas.set_discovery(resource_url(HOST, repository, amd64), status)

    found, failed = judge(gcp, repository, digest)

    assert found.scan is None and found.unavailable == ()
    assert found.scan_error is not None
    assert (
        f"Artifact Analysis scan of the linux/amd64 image {amd64} of index "
        f"{HOST}/{repository}@{digest} did not produce findings: analysisStatus {status}"
    ) in found.scan_error
    assert failed.outcome is Outcome.FAILED
    assert vulnerabilities(failed).outcome is CheckOutcome.FAIL


def test_an_index_with_no_linux_amd64_image_waits_out_its_scan_timeout_saying_why(
    gcp: Gar,
) -> None:
    repository = f"demo-proj/repo/multi-{uuid.uuid4().hex[:6]}"
    index = make_multiarch(platforms=("linux/arm64", "linux/s390x"), seed=4206)
    digest = push_signed(gcp, repository, index, "6.0.0")
    for child in children(index).values():  # scanned or not, never read
        gcp.grafeas.set_discovery(resource_url(HOST, repository, child), "FINISHED_SUCCESS")
    why = (
        f"artifact-analysis: index {HOST}/{repository}@{digest} lists no linux/amd64 image "
        "(linux/arm64, linux/s390x), and Artifact Analysis scans only the first linux/amd64 "
        "image of a manifest list: no scan will come"
    )

    found, pending = judge(gcp, repository, digest)

    assert (found.scan, found.scan_error, found.unavailable) == (None, None, ())
    assert found.scan_waiting == why
    assert pending.outcome is Outcome.PENDING
    check = vulnerabilities(pending)
    assert check.outcome is CheckOutcome.PENDING and check.reason.startswith(
        f"no scan yet ({why});"
    )

    _, failed = judge(gcp, repository, digest, at=timedelta(minutes=31))  # scanTimeout 30m

    assert failed.outcome is Outcome.FAILED
    assert vulnerabilities(failed).reason == (
        f"no scan within 30m of the push ({why}) (fail closed)"
    )
    asked = {r.query["filter"][0] for r in gcp.grafeas.calls("GET", LIST)}
    assert asked == {f'kind="DISCOVERY" AND resourceUrl="{resource_url(HOST, repository, digest)}"'}
