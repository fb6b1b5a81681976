"""In-use inventory: reference listings, Kubernetes (through the real client against a
loopback fake API server serving recorded shapes), ECS task parsing, and protections with
tags resolved through the registry."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.fake_kube import FakeKube, load_items, write_kubeconfig
from support.retention import FakeRegistry, record

from regwarden.errors import RegistryError, UsageError
from regwarden.policy import load_policy_text
from regwarden.reference import ImageRef
from regwarden.retention import (
    gather_in_use,
    images_from_ecs_task,
    images_from_pod,
    images_from_workload,
    in_use_protections,
    parse_ref_lines,
    refs_from_kubernetes,
)

pytest.importorskip("kubernetes")

R = "registry.example.com"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def dg(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def names(refs: list[ImageRef]) -> set[str]:
    return {str(r) for r in refs}


# -- listings -----------------------------------------------------------------------------------


def test_reference_lines_skip_comments_and_blank_lines() -> None:
    text = (
        "# images in use outside Kubernetes\n"
        f"{R}/payments/api@{dg('a')}\n"
        "\n"
        f"   {R}/payments/ledger:2.4.1   # the batch VM\n"
        "nginx\n"
    )
    refs = parse_ref_lines(text, source="in-use.txt")
    assert names(refs) == {
        f"{R}/payments/api@{dg('a')}",
        f"{R}/payments/ledger:2.4.1",
        "docker.io/library/nginx",
    }


def test_a_bad_reference_line_is_an_error_with_its_line() -> None:
    with pytest.raises(UsageError, match=r"in-use\.txt:3: .*got 'Bad Ref'"):
        parse_ref_lines("# x\nok/ref:1\nBad Ref\n", source="in-use.txt")


def test_gather_reads_files_relative_to_the_policy(tmp_path: Path) -> None:
    (tmp_path / "in-use.txt").write_text(f"{R}/team/api:1.0\n")
    text = "apiVersion: regwarden/v1\nkind: Policy\ninventory: {files: ['file://in-use.txt']}\n"
    pol = load_policy_text(text, source=str(tmp_path / "p.yaml"), base_dir=tmp_path)
    found = gather_in_use(pol.inventory, base_dir=tmp_path)
    assert names(list(found.refs)) == {f"{R}/team/api:1.0"}
    assert found.sources == {"file://in-use.txt": 1}
    (tmp_path / "in-use.txt").unlink()
    with pytest.raises(UsageError, match=r"inventory file 'file://in-use\.txt'"):
        gather_in_use(pol.inventory, base_dir=tmp_path)


# -- Kubernetes objects ---------------------------------------------------------------------------


def test_pods_give_spec_images_and_resolved_digests() -> None:
    api, worker, pending, debug = load_items("pods")
    assert names(images_from_pod(api)) == {
        f"{R}/payments/migrate@{dg('migrate')}",
        f"{R}/payments/api:1.4.2",
        f"{R}/payments/api@{dg('api-1.4.2')}",
        "docker.io/envoyproxy/envoy:v1.31.0",
        f"docker.io/envoyproxy/envoy@{dg('envoy')}",
    }
    # dockershim's docker-pullable:// prefix; a pending pod has no imageID yet
    assert f"{R}/batch/worker@{dg('worker-2.0.0')}" in names(images_from_pod(worker))
    assert names(images_from_pod(pending)) == {f"{R}/batch/new:0.1.0"}
    # a bare local image id is not a registry digest; ephemeral containers count
    assert names(images_from_pod(debug)) == {
        f"{R}/payments/api@{dg('api-1.3.0')}",
        f"{R}/tools/debug:latest",
    }


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("deployments", {f"{R}/payments/api:1.4.2", f"{R}/payments/migrate@{dg('migrate')}"}),
        ("replicasets", {f"{R}/payments/api:1.4.1"}),
        ("statefulsets", {f"{R}/payments/db:15.4"}),
        ("daemonsets", {"quay.io/prometheus/node-exporter:v1.8.2"}),
        ("jobs", {f"{R}/batch/report:3.1.0"}),
        ("cronjobs", {f"{R}/batch/report:3.1.0"}),
    ],
)
def test_workload_templates(resource: str, expected: set[str]) -> None:
    kind = {
        "deployments": "Deployment",
        "replicasets": "ReplicaSet",
        "statefulsets": "StatefulSet",
        "daemonsets": "DaemonSet",
        "jobs": "Job",
        "cronjobs": "CronJob",
    }[resource]
    found: set[str] = set()
    for obj in load_items(resource):
        found |= names(images_from_workload(obj, kind))
    assert found == expected


def test_ecs_task_containers_are_pinned_to_their_resolved_digest() -> None:
    task = {
        "taskArn": "arn:aws:ecs:eu-west-1:123456789012:task/prod/abc",
        "containers": [
            {
                "name": "api",
                "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/api:1.2",
                "imageDigest": dg("ecs-api"),
            },
            {"name": "sidecar", "image": "public.ecr.aws/aws-observability/aws-otel-collector"},
        ],
    }
    assert names(images_from_ecs_task(task)) == {
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/api:1.2",
        f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/api@{dg('ecs-api')}",
        "public.ecr.aws/aws-observability/aws-otel-collector",
    }


# -- Kubernetes through the client --------------------------------------------------------


@pytest.fixture
def clusters() -> Iterator[tuple[FakeKube, FakeKube]]:
    staging_items = {"pods": [load_items("pods")[1]]}
    with (
        FakeKube(token="prod-token") as prod,
        FakeKube(token="staging-token", items=staging_items, page=1) as staging,
    ):
        yield prod, staging


def test_every_context_is_read_with_paging(
    tmp_path: Path, clusters: tuple[FakeKube, FakeKube]
) -> None:
    prod, staging = clusters
    config = write_kubeconfig(tmp_path, {"prod": prod, "staging": staging}, current="staging")
    found = refs_from_kubernetes(["prod", "staging"], kubeconfig=str(config))
    got = names(list(found.refs))
    assert f"{R}/payments/api@{dg('api-1.4.2')}" in got  # pod status digest
    assert f"{R}/payments/api:1.4.1" in got  # an old ReplicaSet: a rollback target
    assert f"{R}/batch/report:3.1.0" in got  # CronJob template
    assert found.sources["kubernetes:staging"] == 2  # worker pod: image + imageID
    # prod's 4 pods came in pages of 2, following `continue`
    pod_requests = [s for s in prod.seen if s.path == "/api/v1/pods"]
    assert len(pod_requests) == 2
    assert "continue" not in pod_requests[0].query and "continue" in pod_requests[1].query
    assert all(s.query.get("limit") == ["500"] for s in pod_requests)
    assert {s.authorization for s in prod.seen} == {"Bearer prod-token"}
    assert {s.path for s in prod.seen} == {
        "/api/v1/pods",
        "/apis/apps/v1/deployments",
        "/apis/apps/v1/replicasets",
        "/apis/apps/v1/statefulsets",
        "/apis/apps/v1/daemonsets",
        "/apis/batch/v1/jobs",
        "/apis/batch/v1/cronjobs",
    }

    current = refs_from_kubernetes(kubeconfig=str(config), in_cluster=False)
    assert set(current.sources) == {"kubernetes:current"}
    assert {s.authorization for s in staging.seen} == {"Bearer staging-token"}


def test_a_cluster_that_refuses_is_an_error_not_an_empty_inventory(
    tmp_path: Path, clusters: tuple[FakeKube, FakeKube]
) -> None:
    prod, _ = clusters
    prod.fail["/apis/batch/v1/cronjobs"] = 403
    config = write_kubeconfig(tmp_path, {"prod": prod}, current="prod")
    with pytest.raises(RegistryError, match=r"context 'prod': cannot list workloads: HTTP 403"):
        refs_from_kubernetes(["prod"], kubeconfig=str(config))
    with pytest.raises(UsageError, match="cannot load the Kubernetes configuration"):
        refs_from_kubernetes(["nope"], kubeconfig=str(config))


# -- protections ------------------------------------------------------------------------------


def test_tags_in_use_are_resolved_through_the_registry() -> None:
    running, old = dg("running"), dg("old")
    registry = FakeRegistry(
        {
            "payments/api": [
                record("payments/api", running, "1.4.2", pushed=NOW - timedelta(days=400)),
                record("payments/api", old, "1.3.0"),
            ],
            "other/repo": [record("other/repo", dg("x"), "1")],
        },
        host=R,
    )
    refs = [
        ImageRef.parse(f"{R}/payments/api:1.4.2"),
        ImageRef.parse(f"{R}/payments/api:9.9.9"),  # a tag that no longer exists
        ImageRef.parse(f"{R}/payments/api@{dg('pinned')}"),
        ImageRef.parse("docker.io/library/nginx:1.27"),  # another registry
        ImageRef.parse(f"{R}/unplanned/repo:1"),  # not a planned repository
    ]
    prot = in_use_protections(refs, registry, repositories=["payments/api", "other/repo"])
    assert set(prot) == {"payments/api"}
    assert prot["payments/api"].in_use == {running, dg("pinned")}
    assert prot["payments/api"].in_use_tags == {"1.4.2", "9.9.9"}
    resolved = sorted(c.digests[0] for c in registry.calls if c.op == "resolve")
    assert resolved == ["1.4.2", "9.9.9"]  # one lookup per distinct tag
