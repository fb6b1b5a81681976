"""The AWS inventory against moto server: images of running ECS tasks and of ECS services'
task definitions, and Lambda container functions, protect the ECR images they name (tags
resolved through ECR) from a plan that would otherwise delete them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import ecr_registry as ecr_support
from support import moto_server as support
from support.moto_server import (
    REGISTRY_HOST,
    MotoServer,
    oci_manifest,
    put_manifest,
)

from regwarden.errors import RegistryError
from regwarden.policy import AwsInventory, load_policy_text
from regwarden.providers.ecr import EcrRegistry
from regwarden.retention import plan_run, refs_from_aws
from regwarden.store import SqliteLedger

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy
registry = ecr_support.registry

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@pytest.fixture
def workloads(moto: MotoServer) -> dict[str, str]:
    """ECR images, an ECS cluster running one of them as a task and another as a service,
    and a Lambda function packaged as a third."""
    ecr = moto.client("ecr")
    digests: dict[str, str] = {}
    for repo in ("team/api", "team/worker", "team/fn"):
        ecr.create_repository(repositoryName=repo)
        for tag in ("1", "2", "3"):
            raw, _ = oci_manifest(f"{repo}:{tag}")
            digests[f"{repo}:{tag}"] = put_manifest(ecr, repo, raw, tag=tag)
    ecs = moto.client("ecs")
    ecs.create_cluster(clusterName="prod")
    ecs.register_task_definition(
        family="api",
        containerDefinitions=[
            {"name": "api", "image": f"{REGISTRY_HOST}/team/api:2", "memory": 128}
        ],
    )
    ecs.register_task_definition(
        family="worker",
        containerDefinitions=[
            {"name": "worker", "image": f"{REGISTRY_HOST}/team/worker:1", "memory": 128}
        ],
    )
    ecs.run_task(
        cluster="prod",
        taskDefinition="api",
        launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}},
    )
    ecs.create_service(
        cluster="prod", serviceName="worker", taskDefinition="worker", desiredCount=0
    )
    iam = moto.client("iam")
    role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument=json.dumps({}))["Role"]["Arn"]
    moto.client("lambda").create_function(
        FunctionName="fn",
        Role=role,
        PackageType="Image",
        Code={"ImageUri": f"{REGISTRY_HOST}/team/fn:3"},
    )
    return digests


def clients(moto: MotoServer) -> Any:
    return lambda service, region: moto.client(service)


def test_ecs_and_lambda_images_are_found(moto: MotoServer, workloads: dict[str, str]) -> None:
    found = refs_from_aws(AwsInventory(regions=("us-east-1",)), client=clients(moto))
    refs = {str(r) for r in found.refs}
    assert f"{REGISTRY_HOST}/team/api:2" in refs  # the running task (and its definition)
    assert f"{REGISTRY_HOST}/team/worker:1" in refs  # the service's task definition
    assert f"{REGISTRY_HOST}/team/fn:3" in refs  # the function's image URI
    assert any(r.startswith(f"{REGISTRY_HOST}/team/fn@sha256:") for r in refs)  # as resolved
    assert set(found.sources) == {"ecs:us-east-1", "lambda:us-east-1"}

    only_ecs = refs_from_aws(
        AwsInventory(regions=("us-east-1",), lambda_=False, clusters=("prod",)),
        client=clients(moto),
    )
    assert set(only_ecs.sources) == {"ecs:us-east-1"}


def test_images_in_use_are_not_deleted(
    moto: MotoServer, workloads: dict[str, str], registry: EcrRegistry, tmp_path: Path
) -> None:
    policy = load_policy_text(
        "apiVersion: regwarden/v1\nkind: Policy\ndefaults:\n  retention:\n"
        "    delete: [{olderThan: 1d}]\n    guard: {maxShare: 1}\n",
        source="p.yaml",
        base_dir=tmp_path,
    )
    in_use = refs_from_aws(AwsInventory(regions=("us-east-1",)), client=clients(moto))
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        run = plan_run(
            registry,
            policy,
            ledger=ledger,
            now=NOW + timedelta(days=30),  # everything is a month old by then
            repositories=["team/api", "team/worker", "team/fn"],
            in_use=in_use,
        )
    finally:
        ledger.close()
    assert run.plan is not None
    kept = {
        (p.repository, d.digest): d.rule
        for p in run.plan.plans
        for d in p.decisions
        if d.action == "keep"
    }
    assert kept == {
        ("team/api", workloads["team/api:2"]): "inUse",
        ("team/worker", workloads["team/worker:1"]): "inUse",
        ("team/fn", workloads["team/fn:3"]): "inUse",
    }
    assert run.deletions == 6


def test_an_unreachable_aws_api_is_an_error() -> None:
    def broken(service: str, region: str | None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service,
            region_name="us-east-1",
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
        )

    with pytest.raises(RegistryError, match=r"inventory\.aws region us-east-1"):
        refs_from_aws(AwsInventory(regions=("us-east-1",)), client=broken)
