"""The `cloudrun` in-use inventory: the real google-cloud-run client (REST) driven at a
loopback Cloud Run Admin API v2 (`FakeCloudRun`): service templates, the revisions that
serve traffic (by share, by traffic tag, the latest ready one) and job templates, read
with paging, per region or through one global listing; what it finds protects images from
a plan; and anything it cannot read stops retention (fail closed)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.fake_cloudrun import FakeCloudRun, TrafficSplit
from support.retention import FakeRegistry, FakeRuntime, record

from regwarden.errors import RegistryError, UsageError
from regwarden.policy import CloudRunInventory, load_policy_text
from regwarden.reference import ImageRef
from regwarden.retention import (
    gather_in_use,
    refs_from_cloudrun,
    run_retention,
    serving_revisions,
)
from regwarden.store import SqliteLedger

pytest.importorskip("google.cloud.run_v2")

pytestmark = pytest.mark.integration

PROJECT = "demo-proj"
HOST = "us-docker.pkg.dev"
APPS = f"{HOST}/{PROJECT}/apps"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def dg(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def names(refs: tuple[ImageRef, ...]) -> set[str]:
    return {str(r) for r in refs}


@pytest.fixture
def run() -> Iterator[FakeCloudRun]:
    with FakeCloudRun(page_limit=2) as fake:
        yield fake


def env_of(fake: FakeCloudRun, **extra: str) -> dict[str, str]:
    return {"REGWARDEN_GCP_ENDPOINT_RUN": fake.url, **extra}


# -- which revisions serve ------------------------------------------------------------------


def test_serving_revisions_are_shares_tags_and_the_latest_ready_one() -> None:
    from google.cloud import run_v2

    name = f"projects/{PROJECT}/locations/us-central1/services/api"
    service = run_v2.Service.from_json(
        f"""{{
          "name": "{name}",
          "latestReadyRevision": "{name}/revisions/api-00004-ddd",
          "trafficStatuses": [
            {{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "api-00001-aaa",
              "percent": 90}},
            {{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "api-00002-bbb",
              "tag": "canary"}},
            {{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "api-00003-ccc"}},
            {{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 10}}
          ]
        }}"""
    )
    assert serving_revisions(service) == [
        f"{name}/revisions/api-00001-aaa",  # 90 %
        f"{name}/revisions/api-00002-bbb",  # a tag: reachable at its own URL
        f"{name}/revisions/api-00004-ddd",  # LATEST, named by latestReadyRevision
    ]  # api-00003-ccc: no share, no tag — it serves nothing


# -- reading Cloud Run -----------------------------------------------------------------------


def test_services_revisions_and_jobs_across_pages_and_regions(run: FakeCloudRun) -> None:
    old = f"{APPS}/api@{dg('api-1')}"
    run.deploy(PROJECT, "us-central1", "api", f"{APPS}/api:1", revision_image=old)
    run.deploy(PROJECT, "us-central1", "api", f"{APPS}/api:2")  # takes the traffic …
    run.route_traffic(  # … until it is pinned back to 1
        PROJECT,
        "us-central1",
        "api",
        TrafficSplit("api-00001-" + _suffix("api", 1), 100),
    )
    run.deploy(PROJECT, "us-central1", "api", f"{APPS}/api:3")  # latest ready, no share
    for i in range(3):  # more services than a page holds
        run.deploy(PROJECT, "europe-west1", f"web{i}", f"{APPS}/web{i}")
    run.deploy(PROJECT, "us-central1", "mesh", f"{APPS}/mesh:1", sidecar=f"{APPS}/proxy:9")
    run.add_job(PROJECT, "us-central1", "nightly", f"{APPS}/batch@{dg('batch')}")
    for i in range(3):
        run.add_job(PROJECT, "europe-west1", f"job{i}", f"{APPS}/job{i}:1")
    run.deploy("other-proj", "us-central1", "elsewhere", f"{APPS}/elsewhere:1")

    found = refs_from_cloudrun(CloudRunInventory(projects=(PROJECT,)), env=env_of(run))
    assert names(found.refs) == {
        old,  # revision 1 serves 100 %, and records its image by digest
        f"{APPS}/api:3",  # the template, and the latest ready revision
        *(f"{APPS}/web{i}:latest" for i in range(3)),  # no tag: Cloud Run runs :latest
        f"{APPS}/mesh:1",
        f"{APPS}/proxy:9",  # a sidecar is in use too
        f"{APPS}/batch@{dg('batch')}",
        *(f"{APPS}/job{i}:1" for i in range(3)),
    }
    assert f"{APPS}/api:2" not in names(found.refs)  # revision 2 serves nothing now
    assert found.sources == {"cloudrun:demo-proj/-": 7, "cloudrun-jobs:demo-proj/-": 4}
    # every page was read: 5 services and 4 jobs at 2 a page
    assert len(run.calls("GET", r"/v2/projects/demo-proj/locations/-/services")) == 3
    assert len(run.calls("GET", r"/v2/projects/demo-proj/locations/-/jobs")) == 2

    listed = refs_from_cloudrun(
        CloudRunInventory(projects=(PROJECT, "other-proj"), regions=("us-central1",), jobs=False),
        env=env_of(run),
    )
    assert set(listed.sources) == {
        "cloudrun:demo-proj/us-central1",
        "cloudrun:other-proj/us-central1",
    }
    assert f"{APPS}/elsewhere:1" in names(listed.refs)
    assert not any("web" in r for r in names(listed.refs))  # europe-west1 is not listed


def _suffix(service: str, generation: int) -> str:
    name = f"projects/{PROJECT}/locations/us-central1/services/{service}"
    return hashlib.sha256(f"{name}/{generation}".encode()).hexdigest()[:3]


def test_a_traffic_tag_keeps_its_revision_in_use(run: FakeCloudRun) -> None:
    run.deploy(PROJECT, "us-central1", "api", f"{APPS}/api:1")
    run.deploy(PROJECT, "us-central1", "api", f"{APPS}/api:2")
    run.deploy(PROJECT, "us-central1", "api", f"{APPS}/api:3")
    run.route_traffic(
        PROJECT,
        "us-central1",
        "api",
        TrafficSplit(None, 100),
        TrafficSplit("api-00001-" + _suffix("api", 1), 0, tag="rollback"),
    )
    found = refs_from_cloudrun(CloudRunInventory(projects=(PROJECT,)), env=env_of(run))
    assert names(found.refs) == {f"{APPS}/api:1", f"{APPS}/api:3"}


def test_the_project_defaults_to_the_one_regwarden_runs_in(run: FakeCloudRun) -> None:
    run.deploy(PROJECT, "us-central1", "api", f"{APPS}/api:1")
    found = refs_from_cloudrun(
        CloudRunInventory(jobs=False), env=env_of(run, GOOGLE_CLOUD_PROJECT=PROJECT)
    )
    assert names(found.refs) == {f"{APPS}/api:1"}
    with pytest.raises(UsageError, match="GOOGLE_CLOUD_PROJECT is not set"):
        refs_from_cloudrun(CloudRunInventory(), env=env_of(run))


# -- fail closed ----------------------------------------------------------------------------


def test_a_region_the_global_listing_missed_is_an_error(run: FakeCloudRun) -> None:
    run.deploy(PROJECT, "us-central1", "api", f"{APPS}/api:1")
    run.unreachable = ["asia-east1"]
    with pytest.raises(RegistryError, match="regions not reached: asia-east1"):
        refs_from_cloudrun(CloudRunInventory(projects=(PROJECT,)), env=env_of(run))


@pytest.mark.parametrize(
    ("what", "pattern"),
    [
        ("services", r"/v2/projects/demo-proj/locations/-/services"),
        ("revision", r"/v2/.*/revisions/.*"),
        ("jobs", r"/v2/projects/demo-proj/locations/-/jobs"),
    ],
)
def test_a_listing_that_is_refused_is_an_error(run: FakeCloudRun, what: str, pattern: str) -> None:
    run.deploy(PROJECT, "us-central1", "api", f"{APPS}/api:1")
    run.fail_next("GET", pattern, 403)
    with pytest.raises(RegistryError, match=r"inventory\.cloudrun: cannot list") as caught:
        refs_from_cloudrun(CloudRunInventory(projects=(PROJECT,)), env=env_of(run))
    assert caught.value.status == 403


def test_a_policy_with_an_unreadable_cloudrun_plans_nothing(
    run: FakeCloudRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "defaults:\n  retention: {delete: [{olderThan: 1d}], guard: {maxShare: 1}}\n"
        "inventory:\n  cloudrun: {projects: [demo-proj], regions: [us-central1], jobs: false}\n"
    )
    pol = load_policy_text(text, source=str(tmp_path / "p.yaml"), base_dir=tmp_path)
    assert pol.inventory.cloudrun == CloudRunInventory(
        projects=(PROJECT,), regions=("us-central1",), jobs=False
    )
    repo = f"{PROJECT}/apps/api"
    registry = FakeRegistry(
        {repo: [record(repo, dg(f"a{i}"), f"{i}", pushed=NOW - 9 * DAY) for i in range(3)]},
        host=HOST,
    )
    run.deploy(PROJECT, "us-central1", "api", f"{APPS}/api:1")
    monkeypatch.setenv("REGWARDEN_GCP_ENDPOINT_RUN", run.url)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        runtime = FakeRuntime(pol, ledger, {HOST: registry})
        planned = run_retention(runtime, registry=HOST, now=NOW)  # dry run
        assert planned.run.in_use == {"cloudrun:demo-proj/us-central1": 1}
        assert planned.run.deletions == 2  # api:1 runs on Cloud Run, by tag → its digest
        # 403: not retried (the client retries 503 on ListServices for up to 10 s)
        run.fail_next("GET", r"/v2/projects/demo-proj/locations/us-central1/services", 403)
        with pytest.raises(RegistryError, match=r"inventory\.cloudrun"):
            run_retention(runtime, registry=HOST, now=NOW, execute=True)
    finally:
        ledger.close()
    assert registry.deleted() == []


def test_gather_reads_cloudrun_with_the_environment_it_is_given(run: FakeCloudRun) -> None:
    run.deploy(PROJECT, "us-central1", "api", f"{APPS}/api:1")
    pol = load_policy_text(
        "apiVersion: regwarden/v1\nkind: Policy\ninventory: {cloudrun: {jobs: false}}\n",
        source="p.yaml",
        base_dir="/tmp",
    )
    found = gather_in_use(
        pol.inventory, base_dir=None, env=env_of(run, GOOGLE_CLOUD_PROJECT=PROJECT)
    )
    assert names(found.refs) == {f"{APPS}/api:1"}
