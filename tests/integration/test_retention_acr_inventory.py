"""The Azure in-use inventory sources: `containerapps` (the real azure-mgmt-resourcegraph
client at `FakeResourceGraph`'s `resources` table: Container Apps and jobs, containers and
init containers) and `aks` (ARM's managedClusters list and listClusterUserCredential at
the HTTPS `FakeArm`, then the real Kubernetes client at `FakeKube`, with an Entra token
for the AKS server application); the policy's sections; and fail closed: anything that
cannot be read stops retention."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from support.fake_arm import AKS_SERVER_APP, SUBSCRIPTION, FakeArm
from support.fake_kube import FakeKube
from support.fake_resourcegraph import FakeResourceGraph

from regwarden.errors import AuthError, PolicyError, RegistryError, UsageError
from regwarden.policy import (
    AksInventory,
    ContainerAppsInventory,
    load_policy_text,
    policy_json_schema,
    validate_text,
)
from regwarden.reference import ImageRef
from regwarden.retention import (
    INVENTORIES,
    gather_in_use,
    refs_from_aks,
    refs_from_containerapps,
)

pytest.importorskip("azure.mgmt.resourcegraph")
pytest.importorskip("kubernetes")

pytestmark = pytest.mark.integration

HOST = "fakereg.azurecr.io"
OTHER_SUB = "00000000-0000-0000-0000-0000000000bb"


def dg(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def names(refs: tuple[ImageRef, ...]) -> set[str]:
    return {str(r) for r in refs}


def pod(name: str, image: str, resolved: str | None = None) -> dict[str, Any]:
    status = {"containerStatuses": [{"name": "c", "imageID": resolved}]} if resolved else {}
    return {
        "metadata": {"name": name, "namespace": "prod"},
        "spec": {"containers": [{"name": "c", "image": image}]},
        "status": status,
    }


@pytest.fixture
def graph() -> Iterator[FakeResourceGraph]:
    with FakeResourceGraph() as fake:
        yield fake


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    with FakeArm(page=2) as fake:
        yield fake


def graph_env(graph: FakeResourceGraph) -> dict[str, str]:
    return {"REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH": graph.url}


# -- Container Apps ----------------------------------------------------------------------------


def test_container_apps_and_jobs_protect_their_containers_and_init_containers(
    graph: FakeResourceGraph,
) -> None:
    graph.add_container_app(
        "api",
        [f"{HOST}/team/api:2", f"{HOST}/team/proxy@{dg('proxy')}"],
        init_images=[f"{HOST}/team/migrate:7"],
    )
    graph.add_container_app("bare", [f"{HOST}/team/bare"])  # no tag: runs :latest
    graph.add_job("nightly", [f"{HOST}/team/batch@{dg('batch')}"], init_images=[f"{HOST}/i:1"])
    graph.add_container_app("elsewhere", [f"{HOST}/team/other:1"], subscription=OTHER_SUB)
    graph.add_finding(HOST, "team/api", dg("x"), "CVE-1", "High")  # another table

    section = ContainerAppsInventory(subscriptions=(SUBSCRIPTION,))
    found = refs_from_containerapps(section, env=graph_env(graph))
    assert names(found.refs) == {
        f"{HOST}/team/api:2",
        f"{HOST}/team/proxy@{dg('proxy')}",
        f"{HOST}/team/migrate:7",  # an init container runs too
        f"{HOST}/team/bare:latest",
        f"{HOST}/team/batch@{dg('batch')}",
        f"{HOST}/i:1",
    }
    assert found.sources == {
        f"containerapps:{SUBSCRIPTION}": 4,
        f"containerapps-jobs:{SUBSCRIPTION}": 2,
    }
    (query,) = graph.queries
    assert query["subscriptions"] == [SUBSCRIPTION]
    assert query["query"].startswith("resources\n| where type in~ (")

    only_apps = ContainerAppsInventory(subscriptions=(SUBSCRIPTION,), jobs=False)
    assert f"{HOST}/team/batch@{dg('batch')}" not in names(
        refs_from_containerapps(only_apps, env=graph_env(graph)).refs
    )
    # no subscriptions listed: REGWARDEN_AZURE_SUBSCRIPTION's, else every one readable
    everywhere = refs_from_containerapps(ContainerAppsInventory(), env=graph_env(graph))
    assert f"{HOST}/team/other:1" in names(everywhere.refs)
    assert graph.queries[-1].get("subscriptions") in (None, [])
    env = {**graph_env(graph), "REGWARDEN_AZURE_SUBSCRIPTION": OTHER_SUB}
    assert names(refs_from_containerapps(ContainerAppsInventory(), env=env).refs) == {
        f"{HOST}/team/other:1"
    }


def test_a_resource_graph_that_refuses_or_fails_stops_retention(graph: FakeResourceGraph) -> None:
    graph.add_container_app("api", [f"{HOST}/team/api:2"])
    section = ContainerAppsInventory(subscriptions=(SUBSCRIPTION,))
    graph.fail_next("POST", r"/providers/Microsoft.ResourceGraph/resources", 403)
    with pytest.raises(AuthError, match=r"inventory\.containerapps"):
        refs_from_containerapps(section, env=graph_env(graph))
    graph.add_container_app("broken", ["not a reference!"])
    with pytest.raises(UsageError, match=r"container app .*broken"):
        refs_from_containerapps(section, env=graph_env(graph))


# -- AKS -----------------------------------------------------------------------------------------


def test_every_cluster_of_the_subscription_is_read_with_an_entra_token_for_aks(
    arm: FakeArm,
) -> None:
    with (
        FakeKube(token=arm.aks_token, items={"pods": [pod("a", f"{HOST}/team/api:1")]}) as one,
        FakeKube(
            token=arm.aks_token,
            items={"pods": [pod("b", f"{HOST}/team/web:gone", f"{HOST}/team/web@{dg('web')}")]},
        ) as two,
        FakeKube(token="local-account", items={"pods": [pod("c", f"{HOST}/team/ops:3")]}) as three,
        FakeKube(token=arm.aks_token, items={"pods": [pod("d", f"{HOST}/team/x:1")]}) as other,
    ):
        arm.add_cluster("prod", one)
        arm.add_cluster("stage", two, resource_group="rg2")
        arm.add_cluster("legacy", three, local_token="local-account")  # no Entra integration
        arm.add_cluster("theirs", other, subscription=OTHER_SUB)
        credential = arm.credential()
        found = refs_from_aks(
            AksInventory(subscriptions=(SUBSCRIPTION,)), env=arm.env(), credential=credential
        )
    assert names(found.refs) == {
        f"{HOST}/team/api:1",
        f"{HOST}/team/web:gone",
        f"{HOST}/team/web@{dg('web')}",  # the digest the kubelet pulled
        f"{HOST}/team/ops:3",
    }
    assert found.sources == {"aks:prod": 1, "aks:stage": 2, "aks:legacy": 1}
    # three clusters at two a page: the nextLink was followed
    lists = arm.calls("GET", r"/subscriptions/[^/]+/providers/.*")
    assert len(lists) == 2 and all(
        r.headers["authorization"] == f"Bearer {arm.arm_token}" for r in lists
    )
    posts = arm.calls("POST", r".*/listClusterUserCredential")
    assert [r.query["format"] for r in posts] == [["exec"]] * 3
    # kubelogin is never run: the Entra token for the AKS server app is sent instead
    assert f"{AKS_SERVER_APP}/.default" in credential.scopes
    assert {s.authorization for s in one.seen} == {f"Bearer {arm.aks_token}"}
    assert {s.authorization for s in three.seen} == {"Bearer local-account"}
    assert other.seen == []


def test_named_clusters_are_read_without_listing_the_subscription(arm: FakeArm) -> None:
    with FakeKube(token=arm.aks_token, items={"pods": [pod("a", f"{HOST}/team/api:1")]}) as kube:
        resource_id = arm.add_cluster("prod", kube, subscription=OTHER_SUB)
        arm.add_cluster("ignored", kube)
        found = refs_from_aks(
            AksInventory(clusters=(resource_id,)), env=arm.env(), credential=arm.credential()
        )
    assert names(found.refs) == {f"{HOST}/team/api:1"}
    assert arm.calls("GET", r".*") == []
    assert [r.path for r in arm.calls("POST", r".*")] == [
        f"{resource_id}/listClusterUserCredential"
    ]


def test_a_stopped_cluster_a_refusal_or_an_unreadable_cluster_stops_retention(
    arm: FakeArm,
) -> None:
    section = AksInventory(subscriptions=(SUBSCRIPTION,))
    with FakeKube(token=arm.aks_token, items={"pods": []}) as kube:
        arm.add_cluster("paused", kube, power="Stopped")
        with pytest.raises(RegistryError, match=r"paused is Stopped"):
            refs_from_aks(section, env=arm.env(), credential=arm.credential())
        arm.clusters.clear()
        resource_id = arm.add_cluster("prod", kube)
        kube.fail["/api/v1/pods"] = 403
        with pytest.raises(RegistryError, match=r"inventory\.aks cluster 'prod'.*403"):
            refs_from_aks(section, env=arm.env(), credential=arm.credential())
        kube.fail.clear()
        arm.fail_next("POST", r".*/listClusterUserCredential", 403)
        with pytest.raises(AuthError, match=r"user credential of .*prod"):
            refs_from_aks(section, env=arm.env(), credential=arm.credential())
        wrong = arm.credential()
        wrong.tokens = {}  # a token ARM does not accept
        with pytest.raises(AuthError, match=r"HTTP 401"):
            refs_from_aks(section, env=arm.env(), credential=wrong)
        missing = resource_id.replace("/prod", "/gone")
        with pytest.raises(RegistryError, match=r"HTTP 404"):
            refs_from_aks(
                AksInventory(clusters=(missing,)), env=arm.env(), credential=arm.credential()
            )
    # the stand-in's certificate is verified: without its CA nothing is read
    with pytest.raises(RegistryError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        refs_from_aks(
            section,
            env={"REGWARDEN_AZURE_ENDPOINT_ARM": arm.url},
            credential=arm.credential(),
        )
    with pytest.raises(UsageError, match=r"REGWARDEN_AZURE_SUBSCRIPTION is not set"):
        refs_from_aks(AksInventory(), env=arm.env(), credential=arm.credential())


# -- the policy ----------------------------------------------------------------------------------


def test_the_policy_takes_both_sections_and_gather_in_use_reads_them(
    graph: FakeResourceGraph, arm: FakeArm
) -> None:
    assert {"aks", "containerapps"} <= set(INVENTORIES)
    with FakeKube(token=arm.aks_token, items={"pods": [pod("a", f"{HOST}/team/api:1")]}) as kube:
        resource_id = arm.add_cluster("prod", kube)
        graph.add_container_app("web", [f"{HOST}/team/web:3"])
        policy = load_policy_text(
            f"""\
apiVersion: regwarden/v1
kind: Policy
inventory:
  aks: {{clusters: [{resource_id}]}}
  containerapps: {{subscriptions: [{SUBSCRIPTION}], jobs: false}}
""",
            source="p.yaml",
            base_dir="/tmp",
        )
        assert policy.inventory.containerapps == ContainerAppsInventory(
            subscriptions=(SUBSCRIPTION,), jobs=False
        )
        found = gather_in_use(
            policy.inventory,
            base_dir="/tmp",
            env={**arm.env(), **graph_env(graph)},
            azure_credential=arm.credential(),
        )
    assert names(found.refs) == {f"{HOST}/team/api:1", f"{HOST}/team/web:3"}
    assert set(found.sources) == {"aks:prod", f"containerapps:{SUBSCRIPTION}"}
    with pytest.raises(PolicyError, match=r"AKS cluster's resource id"):
        load_policy_text(
            "apiVersion: regwarden/v1\nkind: Policy\ninventory: {aks: {clusters: [prod]}}\n",
            source="p.yaml",
            base_dir="/tmp",
        )


def test_policy_validate_and_the_schema_cover_both_sections() -> None:
    good = (
        "apiVersion: regwarden/v1\nkind: Policy\ninventory:\n"
        "  aks: {subscriptions: [s1], clusters: []}\n"
        "  containerapps: {subscriptions: [s1], apps: true, jobs: false}\n"
    )
    assert validate_text(good, source="p.yaml", support=True) == []
    bad = (
        "apiVersion: regwarden/v1\nkind: Policy\ninventory:\n"
        "  aks: {clusters: [prod], region: eastus}\n"
        "  containerapps: {revisions: true}\n"
    )
    problems = [str(p) for p in validate_text(bad, source="p.yaml")]
    assert any("inventory.aks.clusters" in p and "resource id" in p for p in problems), problems
    assert any("region" in p for p in problems) and any("revisions" in p for p in problems)
    definitions = policy_json_schema()["$defs"]
    assert set(definitions["AksInventory"]["properties"]) == {"subscriptions", "clusters"}
    assert set(definitions["ContainerAppsInventory"]["properties"]) == {
        "subscriptions",
        "apps",
        "jobs",
    }
    assert "resource id" in definitions["AksInventory"]["properties"]["clusters"]["description"]
