"""Retention on Azure Container Registry with the shared planner: the ACR provider against
`FakeAcr` (the real azure-containerregistry client on ACR's control plane over TLS, the
real docker-registry behind its `/v2/` front), in-use images read from Container Apps (the
real Resource Graph client at `FakeResourceGraph`) and an AKS cluster (ARM at `FakeArm`,
its pods at `FakeKube`), run the way the Azure functions run it: a scheduled fan-out, then
one work message per repository, dry run first.

Old untagged manifests and old tagged ones are deleted; what a Container App (its
container by tag, a job's init container by digest) or an AKS pod (the digest the kubelet
pulled) runs is kept; a manifest whose `deleteEnabled` is false is never deleted and the
run reports it; one locked after the plan was made is refused by ACR and reported, and the
run still finishes. What is left is checked on the docker-registry itself.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from support.fake_acr import TOKEN_USER, FakeAcr
from support.fake_arm import SUBSCRIPTION, FakeArm
from support.fake_kube import FakeKube
from support.fake_resourcegraph import FakeResourceGraph
from support.retention import FakeRuntime

from regwarden.devtools import LocalRegistry, make_image, push_image
from regwarden.oci import Credentials, DeadlineTransport, RegistryClient
from regwarden.policy import Policy, load_policy_text
from regwarden.providers import ProviderOptions
from regwarden.retention import (
    Decision,
    InUse,
    apply,
    fan_out_scheduled,
    gather_in_use,
    plan_run,
    work_body,
)
from regwarden.store import SqliteLedger

pytest.importorskip("azure.containerregistry")
pytest.importorskip("azure.mgmt.resourcegraph")
pytest.importorskip("kubernetes")
acr_provider = pytest.importorskip("regwarden.providers.acr")

pytestmark = pytest.mark.integration

HOST = "fakereg.azurecr.io"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD = T0 - timedelta(days=40)

POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries: [{{host: {HOST}, kind: acr}}]
defaults:
  team: platform
  retention:
    keep: [{{mostRecent: 1}}]
    delete: [{{untagged: {{olderThan: 7d}}}}, {{olderThan: 30d}}]
    guard: {{maxDeletes: 100, maxShare: 1}}
inventory:
  aks: {{subscriptions: [{SUBSCRIPTION}]}}
  containerapps: {{subscriptions: [{SUBSCRIPTION}]}}
"""


@dataclass
class Seeded:
    repository: str
    old_untagged: list[str]
    old_tagged: str
    app_by_tag: str
    job_init: str
    aks_pod: str
    locked: str
    late_locked: str
    current: str

    @property
    def doomed(self) -> set[str]:
        return {*self.old_untagged, self.old_tagged, self.late_locked}

    @property
    def kept(self) -> set[str]:
        return {self.app_by_tag, self.job_init, self.aks_pod, self.locked, self.current}


@pytest.fixture
def acr(registry: LocalRegistry) -> Iterator[FakeAcr]:
    with FakeAcr(registry.host, login_server=HOST) as fake:
        fake.now = lambda: OLD
        yield fake


@pytest.fixture
def repository(request: pytest.FixtureRequest) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:24].strip("-")
    return f"team/{slug}-{uuid.uuid4().hex[:6]}"


def open_acr(acr: FakeAcr) -> Any:
    return acr_provider.AcrRegistry(
        HOST,
        ProviderOptions(credentials=acr.credential()),
        env=acr.env(),
        sleep=lambda _s: None,
    )


@pytest.fixture
def seeded(acr: FakeAcr, repository: str) -> Seeded:
    """Forty days ago: three manifests by digest, `v1`, `app` (a Container App runs it by
    tag), the digests a job's init container and an AKS pod run, and two more by digest,
    one of them locked against deletion now; an hour ago `v9`."""
    transport = DeadlineTransport(limits=httpx.Limits(), ca_file=acr.ca_file)
    creds = Credentials(username=TOKEN_USER, password=acr.mint_refresh_token())
    with RegistryClient(f"https://{acr.host}", credentials=creds, transport=transport) as client:

        def push(seed: int, tag: str | None = None) -> str:
            return push_image(client, repository, make_image(seed=seed, layer_size=64), tag=tag)

        old_untagged = [push(100 + i) for i in range(3)]
        old_tagged = push(200, "v1")
        app_by_tag = push(300, "app")
        job_init = push(301)
        aks_pod = push(400)
        locked = push(500)
        late_locked = push(501)
        acr.now = lambda: T0 - timedelta(hours=1)
        current = push(600, "v9")
    registry = open_acr(acr)
    try:
        registry.set_manifest_attributes(repository, locked, delete=False, write=False)
    finally:
        registry.close()
    return Seeded(
        repository,
        old_untagged,
        old_tagged,
        app_by_tag,
        job_init,
        aks_pod,
        locked,
        late_locked,
        current,
    )


@dataclass
class Workloads:
    env: dict[str, str]
    credential: Any

    def in_use(self, pol: Policy) -> Callable[[], InUse]:
        return lambda: gather_in_use(
            pol.inventory, base_dir=None, env=self.env, azure_credential=self.credential
        )


@pytest.fixture
def workloads(seeded: Seeded) -> Iterator[Workloads]:
    """Container Apps: app `web` runs `:app`; job `nightly`'s init container runs
    `job_init` by digest. AKS: a pod whose spec tag is gone and whose container status
    names the digest the kubelet pulled."""
    image = f"{HOST}/{seeded.repository}"
    pod = {
        "metadata": {"name": "api-7d9c", "namespace": "prod"},
        "spec": {"containers": [{"name": "api", "image": f"{image}:gone"}]},
        "status": {"containerStatuses": [{"name": "api", "imageID": f"{image}@{seeded.aks_pod}"}]},
    }
    with FakeResourceGraph() as graph, FakeArm() as arm, FakeKube(items={"pods": [pod]}) as kube:
        kube.token = arm.aks_token
        arm.add_cluster("prod", kube)
        graph.add_container_app("web", [f"{image}:app"])
        graph.add_job(
            "nightly", [f"{HOST}/other/batch:1"], init_images=[f"{image}@{seeded.job_init}"]
        )
        env = {**arm.env(), "REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH": graph.url}
        yield Workloads(env, arm.credential())


def policy() -> Policy:
    return load_policy_text(POLICY, source="p.yaml", base_dir="/tmp")


def on_registry(registry: LocalRegistry, seeded: Seeded) -> set[str]:
    """Which of the pushed manifests the docker-registry itself still holds."""
    with RegistryClient(registry.host) as client:
        return {
            digest
            for digest in seeded.doomed | seeded.kept
            if client.head_manifest(seeded.repository, digest) is not None
        }


def decisions(outcome: Any) -> dict[str, Decision]:
    assert outcome.run.plan is not None
    return {d.digest: d for p in outcome.run.plan.plans for d in p.decisions}


def deletes(acr: FakeAcr) -> list[str]:
    return [s.path.rsplit("/", 1)[1] for s in acr.v2_requests if s.method == "DELETE"]


def test_plan_and_apply_keep_what_runs_and_what_is_locked_and_delete_the_rest(
    registry: LocalRegistry,
    acr: FakeAcr,
    seeded: Seeded,
    workloads: Workloads,
    tmp_path: Any,
) -> None:
    ar = open_acr(acr)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        listed = {i.digest: i for i in ar.list_images(seeded.repository)}
        assert listed[seeded.locked].locked and not listed[seeded.late_locked].locked
        runtime = FakeRuntime(policy(), ledger, {HOST: ar})
        tick = {"scheduledTime": "2026-12-01T03:00:00Z"}
        fanned = fan_out_scheduled(tick, ar, runtime.policy, prefixes=(seeded.repository,), now=T0)
        assert [m["repository"] for m in fanned.messages] == [seeded.repository]
        (body,) = fanned.bodies()

        in_use = workloads.in_use(runtime.policy)
        dry = work_body(body, runtime, registry=HOST, now=T0, execute=False, in_use=in_use)
        assert dry.failure is None and dry.outcome.result is None
        by_digest = decisions(dry.outcome)
        assert {d for d, x in by_digest.items() if x.action == "delete"} == seeded.doomed
        for digest in (seeded.app_by_tag, seeded.job_init, seeded.aks_pod):
            assert by_digest[digest].rule == "inUse"
        assert (by_digest[seeded.locked].action, by_digest[seeded.locked].reason) == (
            "keep",
            "kept: locked on the registry",
        )
        report = dry.summary()
        assert report["locked"] == [
            {
                "repository": seeded.repository,
                "digest": seeded.locked,
                "tags": [],
                "reason": "kept: locked on the registry",
            }
        ]
        assert report["in_use"] == {
            "aks:prod": 2,
            f"containerapps:{SUBSCRIPTION}": 1,
            f"containerapps-jobs:{SUBSCRIPTION}": 2,
        }
        assert deletes(acr) == []  # a dry run deletes nothing
        assert on_registry(registry, seeded) == seeded.doomed | seeded.kept

        done = work_body(body, runtime, registry=HOST, now=T0, in_use=in_use)
        assert done.failure is None
        result = done.outcome.result
        assert result is not None and result.status == "done", result
        assert result.deleted == len(seeded.doomed) and result.locked == ()
        assert seeded.locked not in deletes(acr)  # never even asked
        assert done.summary()["locked"][0]["digest"] == seeded.locked
    finally:
        ledger.close()
        ar.close()
    assert on_registry(registry, seeded) == seeded.kept


def test_a_manifest_locked_after_planning_is_refused_reported_and_the_run_finishes(
    registry: LocalRegistry,
    acr: FakeAcr,
    seeded: Seeded,
    workloads: Workloads,
    tmp_path: Any,
) -> None:
    ar = open_acr(acr)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        pol = policy()
        run = plan_run(
            ar,
            pol,
            ledger=ledger,
            now=T0,
            repositories=[seeded.repository],
            in_use=workloads.in_use(pol)(),
            registry_name=HOST,
        )
        assert seeded.late_locked in {d for w in run.work for p in w.phases for d in p}
        # a `lock` quarantine takes it between the plan and the deletion
        ar.set_manifest_attributes(seeded.repository, seeded.late_locked, delete=False)
        result = apply(run, ar, ledger, concurrency=2)
        again = apply(run, ar, ledger, concurrency=2)  # resumed: the lock is asked about again
    finally:
        ledger.close()
        ar.close()
    assert result.status == "done", result  # not failed, not aborted
    assert result.locked == ((seeded.repository, seeded.late_locked),)
    assert result.failures == ()
    assert result.deleted == len(seeded.doomed) - 1
    assert any("locked on the registry" in n for n in result.notes)
    assert result.to_dict()["repositories"][0]["locked"] == [seeded.late_locked]
    assert (again.status, again.locked, again.deleted) == ("done", result.locked, 0)
    assert deletes(acr).count(seeded.late_locked) == 2  # ACR refused it, twice
    assert on_registry(registry, seeded) == seeded.kept | {seeded.late_locked}


def test_an_inventory_that_cannot_be_read_deletes_nothing(
    registry: LocalRegistry,
    acr: FakeAcr,
    seeded: Seeded,
    workloads: Workloads,
    tmp_path: Any,
) -> None:
    from regwarden.errors import RegistryError

    workloads.credential.tokens = {}  # ARM refuses the token: the clusters cannot be listed
    ar = open_acr(acr)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        runtime = FakeRuntime(policy(), ledger, {HOST: ar})
        (body,) = fan_out_scheduled(
            {"run": "blind-1"}, ar, runtime.policy, prefixes=(seeded.repository,), now=T0
        ).bodies()
        with pytest.raises(RegistryError, match=r"inventory\.aks"):
            work_body(body, runtime, registry=HOST, now=T0, in_use=workloads.in_use(runtime.policy))
    finally:
        ledger.close()
        ar.close()
    assert deletes(acr) == []
    assert on_registry(registry, seeded) == seeded.doomed | seeded.kept
