"""Retention on Google Artifact Registry with the shared planner: the GAR provider against
the fake Artifact Registry (the real AR client on its REST control plane, the real
docker-registry behind its `/v2/` front), in-use images read from Cloud Run (the real
google-cloud-run client at `FakeCloudRun`) and from a GKE cluster (the `kubernetes`
source at `FakeKube`), run the way the GCP functions run it: a scheduled fan-out, then one
work message per repository, dry run first.

Untagged versions older than the policy's age, and old tagged ones, are deleted with AR's
batchDeleteVersions; an image Cloud Run runs (by digest, by tag) or a GKE pod runs is kept,
and so are the signatures of kept images; a 429 on batch delete slows the run down and it
still finishes. What is left is checked on the docker-registry itself, the fake out of the
way.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.fake_cloudrun import FakeCloudRun
from support.fake_gar import FakeGar
from support.fake_kube import FakeKube, write_kubeconfig
from support.retention import FakeRuntime

from regwarden.devtools import LocalRegistry, make_image, push_image
from regwarden.oci import RegistryClient
from regwarden.policy import Policy, load_policy_text
from regwarden.providers import ProviderOptions
from regwarden.retention import Decision, InUse, fan_out_scheduled, gather_in_use, work_body
from regwarden.signatures import publish, sign_legacy
from regwarden.signatures.keys import generate_private_key
from regwarden.store import SqliteLedger

pytest.importorskip("google.cloud.artifactregistry_v1")
pytest.importorskip("google.cloud.run_v2")
pytest.importorskip("kubernetes")
gar_provider = pytest.importorskip("regwarden.providers.gar")

pytestmark = pytest.mark.integration

HOST = "us-docker.pkg.dev"
PROJECT = "demo-proj"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD = T0 - timedelta(days=40)
DAY = timedelta(days=1)

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
registries: [{host: us-docker.pkg.dev, kind: gar}]
defaults:
  team: platform
  retention:
    keep: [{mostRecent: 1}]
    delete: [{untagged: {olderThan: 7d}}, {olderThan: 30d}]
    guard: {maxDeletes: 100, maxShare: 1}
inventory:
  kubernetes: {contexts: [gke-prod]}
  cloudrun: {projects: [demo-proj], regions: [us-central1], jobs: false}
"""


@dataclass
class Seeded:
    """What was pushed to `repository`, by role."""

    repository: str
    old_untagged: list[str]
    old_tagged: str
    signature_of_deleted: str
    young_untagged: str
    run_by_digest: str
    run_by_tag: str
    signature_of_kept: str
    gke_pod: str
    current: str

    @property
    def doomed(self) -> set[str]:
        return {*self.old_untagged, self.old_tagged, self.signature_of_deleted}

    @property
    def kept(self) -> set[str]:
        return {
            self.young_untagged,
            self.run_by_digest,
            self.run_by_tag,
            self.signature_of_kept,
            self.gke_pod,
            self.current,
        }


@pytest.fixture
def gar(registry: LocalRegistry) -> Iterator[FakeGar]:
    with FakeGar(registry.host, PROJECT) as fake:
        fake.now = lambda: OLD
        yield fake


@pytest.fixture
def repository(request: pytest.FixtureRequest) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:24].strip("-")
    return f"{PROJECT}/repo/{slug}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def seeded(gar: FakeGar, repository: str) -> Seeded:
    """Forty days ago: five manifests pushed by digest, `v1` (signed with a cosign `.sig`
    tag), `stable` (signed too), and the digests Cloud Run and a GKE pod run; a day ago one
    more by digest; an hour ago `v9`."""
    key = generate_private_key()
    with RegistryClient(gar.host) as client:

        def push(seed: int, tag: str | None = None) -> str:
            return push_image(client, repository, make_image(seed=seed, layer_size=64), tag=tag)

        def sign(digest: str) -> str:
            art = sign_legacy(image_digest=digest, docker_reference=f"{HOST}/{repository}", key=key)
            publish(client, repository, art)
            return art.digest

        old_untagged = [push(100 + i) for i in range(5)]
        old_tagged = push(200, "v1")
        signature_of_deleted = sign(old_tagged)
        run_by_digest = push(300)
        run_by_tag = push(301, "stable")
        signature_of_kept = sign(run_by_tag)
        gke_pod = push(400)
        gar.now = lambda: T0 - DAY
        young_untagged = push(500)
        gar.now = lambda: T0 - timedelta(hours=1)
        current = push(600, "v9")
    return Seeded(
        repository,
        old_untagged,
        old_tagged,
        signature_of_deleted,
        young_untagged,
        run_by_digest,
        run_by_tag,
        signature_of_kept,
        gke_pod,
        current,
    )


@dataclass
class Workloads:
    run: FakeCloudRun
    kubeconfig: Path

    def in_use(self, pol: Policy) -> Callable[[], InUse]:
        """The worker's inventory read, as a function wires it (the kubernetes client reads
        KUBECONFIG once, at its import: the path is passed)."""
        return lambda: gather_in_use(pol.inventory, base_dir=None, kubeconfig=str(self.kubeconfig))


@pytest.fixture
def workloads(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workloads]:
    """Cloud Run: service `api` runs `stable` by tag; service `worker`'s latest ready
    revision runs `run_by_digest` by digest. GKE: a pod whose spec tag is gone and whose
    container status names the digest the kubelet pulled."""
    image = f"{HOST}/{seeded.repository}"
    pod = {
        "metadata": {"name": "api-7d9c", "namespace": "prod"},
        "spec": {"containers": [{"name": "api", "image": f"{image}:gone"}]},
        "status": {"containerStatuses": [{"name": "api", "imageID": f"{image}@{seeded.gke_pod}"}]},
    }
    with FakeCloudRun() as run, FakeKube(token="gke-token", items={"pods": [pod]}) as kube:
        run.deploy(PROJECT, "us-central1", "api", f"{image}:stable")
        run.deploy(PROJECT, "us-central1", "worker", f"{image}@{seeded.run_by_digest}")
        kubeconfig = write_kubeconfig(tmp_path, {"gke-prod": kube}, current="gke-prod")
        monkeypatch.setenv("REGWARDEN_GCP_ENDPOINT_RUN", run.url)
        yield Workloads(run, kubeconfig)


def open_gar(gar: FakeGar) -> Any:
    return gar_provider.GarRegistry(
        HOST,
        ProviderOptions(data_plane_host=gar.host, account=PROJECT),
        env={"REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": gar.url},
        sleep=lambda _s: None,  # the provider's own backoff: the executor's pause is enough
    )


def policy() -> Policy:
    return load_policy_text(POLICY, source="p.yaml", base_dir="/tmp")


def on_registry(registry: LocalRegistry, seeded: Seeded) -> set[str]:
    """Which of the pushed manifests the docker-registry itself still holds (the fake out
    of the way)."""
    with RegistryClient(registry.host) as client:
        return {
            digest
            for digest in seeded.doomed | seeded.kept
            if client.head_manifest(seeded.repository, digest) is not None
        }


def decisions(outcome: Any) -> dict[str, Decision]:
    assert outcome.run.plan is not None
    return {d.digest: d for p in outcome.run.plan.plans for d in p.decisions}


def batch_deletes(gar: FakeGar) -> list[Any]:
    return gar.calls("POST", r"/v1/.*/versions:batchDelete")


def test_untagged_and_old_versions_go_in_one_batch_and_what_runs_stays(
    registry: LocalRegistry,
    gar: FakeGar,
    seeded: Seeded,
    workloads: Workloads,
    tmp_path: Path,
) -> None:
    gr = open_gar(gar)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        runtime = FakeRuntime(policy(), ledger, {HOST: gr})
        tick = {"scheduledTime": "2026-12-01T03:00:00Z"}
        # the registry is shared with other tests: this test's repository is the scope
        fanned = fan_out_scheduled(tick, gr, runtime.policy, prefixes=(seeded.repository,), now=T0)
        assert [m["repository"] for m in fanned.messages] == [seeded.repository]
        (body,) = fanned.bodies()

        in_use = workloads.in_use(runtime.policy)
        dry = work_body(body, runtime, registry=HOST, now=T0, execute=False, in_use=in_use)
        assert dry.failure is None and dry.outcome.result is None
        by_digest = decisions(dry.outcome)
        assert {d for d, x in by_digest.items() if x.action == "delete"} == seeded.doomed
        assert (by_digest[seeded.run_by_digest].rule, by_digest[seeded.run_by_tag].rule) == (
            "inUse",
            "inUse",
        )
        assert by_digest[seeded.gke_pod].rule == "inUse"
        assert by_digest[seeded.signature_of_kept].rule == "referrerOfKept"
        assert by_digest[seeded.signature_of_deleted].rule == "referrerOfDeleted"
        assert by_digest[seeded.young_untagged].action == "keep"
        assert dry.outcome.run.in_use == {
            "kubernetes:gke-prod": 2,
            "cloudrun:demo-proj/us-central1": 2,
        }
        assert batch_deletes(gar) == []  # a dry run deletes nothing
        assert on_registry(registry, seeded) == seeded.doomed | seeded.kept

        done = work_body(body, runtime, registry=HOST, now=T0, in_use=in_use)
        assert done.failure is None
        result = done.outcome.result
        assert result is not None and result.status == "done", result
        assert result.deleted == len(seeded.doomed)
        # one batch per phase: what nothing else waits on (the untagged versions and the
        # signature), then the signature's subject, once its referrer is gone
        assert result.requests == 2
        first, then = ({n.rsplit("/", 1)[1] for n in c.body["names"]} for c in batch_deletes(gar))
        assert first == {*seeded.old_untagged, seeded.signature_of_deleted}
        assert then == {seeded.old_tagged}
        assert done.outcome.run.run_id == dry.outcome.run.run_id  # the dry run's plan, applied
    finally:
        ledger.close()
        gr.close()
    assert on_registry(registry, seeded) == seeded.kept
    listed = {i.digest for i in open_gar(gar).list_images(seeded.repository)}
    assert listed == seeded.kept


def test_a_throttled_batch_delete_slows_the_run_and_it_still_finishes(
    registry: LocalRegistry,
    gar: FakeGar,
    seeded: Seeded,
    workloads: Workloads,
    tmp_path: Path,
) -> None:
    attempts = gar_provider.THROTTLE_ATTEMPTS
    # every retry the provider makes is refused, so the batch comes back `throttled` and
    # the executor asks again after its own pause
    gar.fail_next(
        "POST", r"/v1/.*/versions:batchDelete", 429, times=attempts, headers={"Retry-After": "0"}
    )
    gr = open_gar(gar)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        runtime = FakeRuntime(policy(), ledger, {HOST: gr})
        (body,) = fan_out_scheduled(
            {"run": "throttled-1"}, gr, runtime.policy, prefixes=(seeded.repository,), now=T0
        ).bodies()
        done = work_body(
            body,
            runtime,
            registry=HOST,
            now=T0,
            concurrency=8,
            in_use=workloads.in_use(runtime.policy),
        )
    finally:
        ledger.close()
        gr.close()
    result = done.outcome.result
    assert done.failure is None and result is not None and result.status == "done", result
    assert result.deleted == len(seeded.doomed)
    assert result.throttles >= attempts  # each 429 the provider retried, and the batch
    assert result.lowest_concurrency < 8  # the run slowed down
    # the first phase's batch: throttled (the provider's retries all refused), then asked
    # again; the second phase's: at once
    assert result.requests == 3
    assert len(batch_deletes(gar)) == attempts + 2
    assert on_registry(registry, seeded) == seeded.kept


def test_a_cloud_run_inventory_that_cannot_be_read_deletes_nothing(
    registry: LocalRegistry,
    gar: FakeGar,
    seeded: Seeded,
    workloads: Workloads,
    tmp_path: Path,
) -> None:
    from regwarden.errors import RegistryError

    workloads.run.fail_next("GET", r"/v2/projects/demo-proj/locations/us-central1/services", 403)
    gr = open_gar(gar)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        runtime = FakeRuntime(policy(), ledger, {HOST: gr})
        (body,) = fan_out_scheduled(
            {"run": "blind-1"}, gr, runtime.policy, prefixes=(seeded.repository,), now=T0
        ).bodies()
        with pytest.raises(RegistryError, match=r"inventory\.cloudrun"):
            work_body(body, runtime, registry=HOST, now=T0, in_use=workloads.in_use(runtime.policy))
    finally:
        ledger.close()
        gr.close()
    assert batch_deletes(gar) == []
    assert on_registry(registry, seeded) == seeded.doomed | seeded.kept
