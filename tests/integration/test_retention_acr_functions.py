"""The Azure retention functions as the Functions host calls them: `retention_fanout` with a
`func.TimerRequest` puts one message per repository in scope on the retention queue (a
real Storage queue on Azurite); `retention_worker` with each message as a
`func.QueueMessage` plans (RETENTION_MODE=plan: nothing deleted, no alert) or deletes and
alerts (apply), keeping what a Container App or an AKS pod runs (the `azure` inventory:
Resource Graph at `FakeResourceGraph`, ARM at `FakeArm`, the cluster at `FakeKube`) and
what ACR locks against deletion. Registry: FakeAcr in front of a real docker-registry.
The harness is `support.azure_harness`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from support import azure_harness
from support.azure_harness import HOST, SUBSCRIPTION, T0, Azure
from support.fake_arm import FakeArm
from support.fake_kube import FakeKube

from functions.azure import _retention
from regwarden.devtools import LocalRegistry, make_image, push_image
from regwarden.errors import RegistryError, UsageError
from regwarden.oci import RegistryClient

azure = azure_harness.azure

pytest.importorskip("kubernetes")

pytestmark = pytest.mark.integration

OLD = T0 - timedelta(days=40)

POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: acr}}
defaults:
  team: platform
repositories:
  - match: "ret/**"
    team: alpha
    retention:
      keep: [{{mostRecent: 1}}]
      delete: [{{untagged: {{olderThan: 7d}}}}]
      guard: {{maxDeletes: 100, maxShare: 1}}
notifications:
  channels:
    hook: {{type: webhook, url: "{{hook}}"}}
  routes:
    - {{to: [hook]}}
"""


@pytest.fixture
def azure_policy() -> str:
    return POLICY


@dataclass
class Seeded:
    queue: str
    repositories: list[str]
    doomed: set[str]
    kept: set[str]
    locked: str


def _push(azure: Azure, repository: str, seed: int, tag: str | None = None) -> str:
    with azure.client() as client:
        return push_image(client, repository, make_image(seed=seed, layer_size=64), tag=tag)


@pytest.fixture
def seeded(azure: Azure, tmp_path: Path) -> Iterator[Seeded]:
    """Two repositories under this test's prefix, forty days old: in `api` two untagged
    manifests, one a Container App runs by digest; in `web` one untagged, one an AKS pod
    runs, one locked against deletion; an hour ago `v9` in each. Retention settings on:
    this test's queue, its prefix, the registry."""
    prefix = f"ret/{uuid.uuid4().hex[:8]}/"
    api, web = prefix + "api", prefix + "web"
    azure.acr.now = lambda: OLD
    api_old = _push(azure, api, 10)
    app_runs = _push(azure, api, 11)
    web_old = _push(azure, web, 20)
    pod_runs = _push(azure, web, 21)
    locked = _push(azure, web, 22)
    azure.acr.now = lambda: T0 - timedelta(hours=1)
    current = {_push(azure, api, 30, "v9"), _push(azure, web, 31, "v9")}
    from regwarden.providers import ProviderOptions
    from regwarden.providers.acr import AcrRegistry

    acr = AcrRegistry(HOST, ProviderOptions(credentials=azure.acr.credential()), env=azure.env)
    try:
        acr.set_manifest_attributes(web, locked, delete=False)
    finally:
        acr.close()

    queue = "retention-" + uuid.uuid4().hex[:12]
    azure.queue(queue).create_queue()
    pod = {
        "metadata": {"name": "web-1", "namespace": "prod"},
        "spec": {"containers": [{"name": "web", "image": f"{HOST}/{web}:gone"}]},
        "status": {"containerStatuses": [{"name": "web", "imageID": f"{HOST}/{web}@{pod_runs}"}]},
    }
    with FakeArm() as arm, FakeKube(items={"pods": [pod]}) as kube:
        # the harness's default credential hands out one token: ARM and AKS accept it
        arm.arm_token = arm.aks_token = kube.token = azure.acr.aad_token
        arm.add_cluster("prod", kube, subscription=SUBSCRIPTION)
        azure.graph.add_container_app("api", [f"{HOST}/{api}@{app_runs}"])
        bundle = tmp_path / "cas.pem"
        bundle.write_bytes(Path(azure.acr.ca_file).read_bytes() + Path(arm.ca_file).read_bytes())
        settings = {
            "REGWARDEN_AZURE_CA_BUNDLE": str(bundle),
            "REGWARDEN_AZURE_ENDPOINT_ARM": arm.url,
            "REGWARDEN_STORAGE_ACCOUNT": azure.storage.account,
            "REGWARDEN_RETENTION_QUEUE": queue,
            "REGWARDEN_RETENTION_REGISTRY": HOST,
            "REGWARDEN_RETENTION_PREFIXES": prefix,
            "RETENTION_MODE": "plan",
        }
        for name, value in settings.items():
            azure.setenv(name, value)
        _retention.reset()
        try:
            yield Seeded(
                queue,
                [api, web],
                doomed={api_old, web_old},
                kept={app_runs, pod_runs, locked, *current},
                locked=locked,
            )
        finally:
            _retention.reset()


def on_registry(registry: LocalRegistry, seeded: Seeded) -> set[str]:
    """Which of the pushed manifests the docker-registry itself still holds."""
    with RegistryClient(registry.host) as client:
        return {
            digest
            for digest in seeded.doomed | seeded.kept
            for repository in seeded.repositories
            if client.head_manifest(repository, digest) is not None
        }


def fan_out(azure: Azure, seeded: Seeded) -> list[bytes]:
    azure.function("retention_fanout")(azure.timer())
    assert azure.depth(seeded.queue) == 2
    return [azure.take(seeded.queue)[0] for _ in range(2)]


def test_fan_out_queues_one_message_per_repository_in_scope(azure: Azure, seeded: Seeded) -> None:
    bodies = fan_out(azure, seeded)
    messages = sorted((json.loads(b) for b in bodies), key=lambda m: m["repository"])
    assert [m["repository"] for m in messages] == seeded.repositories
    assert {m["registry"] for m in messages} == {HOST}
    (run,) = {m["run"] for m in messages}
    assert run.startswith((T0 + timedelta(minutes=1)).strftime("%Y%m%dT%H%M"))
    # the same occurrence again (a retry): the same run, so the workers resume
    azure.function("retention_fanout")(azure.timer())
    again = {json.loads(azure.take(seeded.queue)[0])["run"] for _ in range(2)}
    assert again == {run}


def test_the_worker_plans_in_plan_mode_and_deletes_and_alerts_in_apply_mode(
    registry: LocalRegistry, azure: Azure, seeded: Seeded
) -> None:
    bodies = fan_out(azure, seeded)
    summaries = [_retention.work(azure.queue_message(b)) for b in bodies]
    planned = {
        d["digest"] for s in summaries for p in s["plan"]["repositories"] for d in p["decisions"]
    }
    assert planned == seeded.doomed
    assert [s["result"] for s in summaries] == [None, None]  # nothing applied
    (locked,) = [item for s in summaries for item in s["locked"]]
    assert (locked["digest"], locked["reason"]) == (seeded.locked, "kept: locked on the registry")
    assert sorted(k for s in summaries for k in s["in_use"]) == sorted(
        ["aks:prod", f"containerapps:{SUBSCRIPTION}", f"containerapps-jobs:{SUBSCRIPTION}"] * 2
    )
    assert on_registry(registry, seeded) == seeded.doomed | seeded.kept
    assert azure.sink.received == []

    azure.setenv("RETENTION_MODE", "apply")
    _retention.reset()
    worker = azure.function("retention_worker")
    for body in bodies:
        worker(azure.queue_message(body))
    assert on_registry(registry, seeded) == seeded.kept
    alerts = [json.loads(body) for _, body in azure.sink.received]
    assert len(alerts) == 2 and all("alpha" in json.dumps(a) for a in alerts)
    # the same message again (a redelivery): the run is done, nothing more happens
    worker(azure.queue_message(bodies[0], dequeue_count=2))
    assert len(azure.sink.received) == 2


def test_a_worker_that_cannot_read_the_inventory_raises_and_deletes_nothing(
    registry: LocalRegistry, azure: Azure, seeded: Seeded
) -> None:
    bodies = fan_out(azure, seeded)
    azure.setenv("RETENTION_MODE", "apply")
    azure.setenv("REGWARDEN_AZURE_ENDPOINT_ARM", "https://127.0.0.1:9")  # ARM unreachable
    _retention.reset()
    with pytest.raises(RegistryError, match=r"inventory\.aks"):
        azure.function("retention_worker")(azure.queue_message(bodies[0]))
    assert on_registry(registry, seeded) == seeded.doomed | seeded.kept
    # a fan-out without the queues' storage account is a usage error naming it
    azure.monkeypatch.delenv("REGWARDEN_STORAGE_ACCOUNT")
    _retention.reset()
    with pytest.raises(UsageError, match="REGWARDEN_STORAGE_ACCOUNT"):
        azure.function("retention_fanout")(azure.timer())
