"""Retention on ECR against moto server, behind `EcrLimitsProxy` (ECR's paging and 100-id
batch limits): plan + apply + verify what remains, an interrupted apply resumed, and the
number of API calls counted on the client: ceil(n/1000) describe_images and ceil(d/100)
batch_delete_image, nothing else."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import ecr_registry as ecr_support
from support import moto_server as support
from support.moto_server import (
    EcrLimitsProxy,
    MotoServer,
    oci_manifest,
    put_manifest,
    watch,
)

from regwarden.policy import load_policy_text
from regwarden.providers.ecr import EcrRegistry
from regwarden.retention import apply, load_run, plan_run
from regwarden.store import SqliteLedger

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy
registry = ecr_support.registry

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
REPO = "bulk/app"
N = 1100
OLDER_THAN_DAYS = 849  # images v850 … v1099 are older: 250 deletions

POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
defaults:
  team: platform
  retention:
    keep: [{{mostRecent: 10}}]
    delete: [{{olderThan: {OLDER_THAN_DAYS}d}}]
    guard: {{maxDeletes: 1000, maxShare: 0.5}}
"""


def ages(doc: dict[str, Any]) -> None:
    """moto stamps every image with the time it was pushed; give image vN an age of N days
    (what a registry pushed to for years would answer)."""
    for detail in doc.get("imageDetails") or []:
        tag = (detail.get("imageTags") or ["v0"])[0]
        detail["imagePushedAt"] = (NOW - timedelta(days=int(tag[1:]))).timestamp()


@pytest.fixture
def seeded(moto: MotoServer, ecr_proxy: EcrLimitsProxy) -> dict[str, str]:
    ecr = moto.client("ecr")
    ecr.create_repository(repositoryName=REPO)

    def push(i: int) -> tuple[str, str]:
        raw, _ = oci_manifest(f"ret-{i}")
        return f"v{i}", put_manifest(ecr, REPO, raw, tag=f"v{i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        tags = dict(pool.map(push, range(N)))
    ecr_proxy.rewrite["DescribeImages"] = ages
    return tags


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


def remaining(moto: MotoServer) -> set[str]:
    ecr = moto.client("ecr")
    out: set[str] = set()
    for page in ecr.get_paginator("describe_images").paginate(repositoryName=REPO):
        out |= {d["imageDigest"] for d in page["imageDetails"]}
    return out


def test_plan_and_apply_with_the_fewest_api_calls(
    moto: MotoServer, seeded: dict[str, str], registry: EcrRegistry, ledger: SqliteLedger
) -> None:
    policy = load_policy_text(POLICY, source="p.yaml", base_dir="/tmp")
    calls = watch(registry.client)
    run = plan_run(registry, policy, ledger=ledger, now=NOW, repositories=[REPO])
    assert run.plan is not None and not run.tripped
    d = run.deletions
    assert d == N - (OLDER_THAN_DAYS + 1)
    expected_deleted = {seeded[f"v{i}"] for i in range(OLDER_THAN_DAYS + 1, N)}
    assert {x.digest for x in run.plan.plan(REPO).deletions} == expected_deleted

    result = apply(run, registry, ledger, concurrency=4)
    assert result.status == "done", result.to_dict()
    assert result.deleted == d
    names = [name for name, _ in calls.seen]
    assert names.count("DescribeImages") == math.ceil(N / 1000)
    assert names.count("BatchDeleteImage") == math.ceil(d / 100) == result.requests
    assert set(names) == {"DescribeImages", "BatchDeleteImage"}
    assert all(len(p["imageIds"]) <= 100 for p in calls.of("BatchDeleteImage"))
    assert remaining(moto) == set(seeded.values()) - expected_deleted


def test_an_interrupted_apply_resumes_in_whole_batches(
    moto: MotoServer, seeded: dict[str, str], registry: EcrRegistry, ledger: SqliteLedger
) -> None:
    policy = load_policy_text(POLICY, source="p.yaml", base_dir="/tmp")
    run = plan_run(registry, policy, ledger=ledger, now=NOW, repositories=[REPO])
    calls = watch(registry.client)
    first = apply(
        run,
        registry,
        ledger,
        concurrency=1,
        should_stop=lambda: calls.count("BatchDeleteImage") >= 1,
    )
    assert first.status == "interrupted"
    assert first.deleted == 100
    resumed = apply(load_run(ledger, run.run_id), registry, ledger, concurrency=1)
    assert resumed.status == "done"
    assert resumed.resumed == 100 and resumed.deleted == run.deletions - 100
    batches = calls.of("BatchDeleteImage")
    assert len(batches) == math.ceil(run.deletions / 100)
    sent = [i["imageDigest"] for b in batches for i in b["imageIds"]]
    assert len(sent) == len(set(sent)) == run.deletions  # no digest sent twice
    assert len(remaining(moto)) == N - run.deletions
