"""Retention against the real registry (distribution 2.8 on loopback): 300 images in 5
repositories planned, applied and verified against the plan; an apply interrupted half-way
and resumed without re-deleting (DELETE requests counted at a proxy); 429s injected by the
proxy; a guard rail trip through the CLI that deletes nothing (exit 1)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.cli import run_cli
from support.proxy import RegistryProxy

from regwarden.devtools import LocalRegistry, make_image, make_multiarch, push_image
from regwarden.oci import RegistryClient
from regwarden.policy import Policy, load_policy_text
from regwarden.providers import ProviderOptions
from regwarden.providers.oci import OciRegistry
from regwarden.retention import RunPlan, apply, load_run, plan_run
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
DAY = timedelta(days=1)

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  team: platform
  retention:
    keep:
      - mostRecent: 5
      - semver: {majors: 1, minorsPerMajor: 2, patchesPerMinor: 1, prereleases: 1}
      - tagMatches: "^release-"
    delete:
      - olderThan: 60d
      - untagged: {olderThan: 7d}
      - orphans: {}
    guard: {maxDeletes: %(max_deletes)d, maxShare: 0.9}
notifications:
  channels:
    alerts: {type: file, path: alerts.jsonl}
  routes:
    - {to: [alerts]}
"""


def policy_text(max_deletes: int = 500) -> str:
    return POLICY % {"max_deletes": max_deletes}


@dataclass
class Seeded:
    prefix: str
    repositories: list[str]
    manifests: int


def _tags(j: int) -> list[str]:
    if j % 5 == 0:
        return [f"1.{j // 10}.{j % 10}"]
    if j % 5 == 1:
        return [f"build-{j}"]
    if j % 5 == 2:
        return [f"2.0.0-rc.{j}"]
    if j % 5 == 3:
        return [f"feature-{j}", f"release-{j}"] if j % 15 == 3 else [f"feature-{j}"]
    return [f"sha-{j:04x}"]


def seed(
    client: RegistryClient,
    ledger: SqliteLedger,
    host: str,
    *,
    repositories: int = 5,
    images: int = 50,
    multiarch: bool = True,
) -> Seeded:
    """`repositories` × (`images` tagged images + a signature for every fifth one); ages
    from the ledger's first-seen times (as the receiver records them) except every
    seventh image, which the ledger never saw: its config's `created` is no age (the policy
    does not say `ageFrom: created`), so no age rule selects it."""
    prefix = f"rt-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}/svc{i}" for i in range(repositories)]
    base = make_image(layers=1, layer_size=256, seed=7)
    jobs: list[tuple[str, int]] = [(n, j) for n in names for j in range(images)]

    def push_one(job: tuple[str, int]) -> int:
        name, j = job
        age = 1 + j * 8  # 1 … 393 days
        if j % 7 == 3:
            image = make_image(layers=0, created=NOW - age * DAY, annotations={"n": str(j)})
        else:
            image = make_image(layers=1, layer_size=256, seed=7, annotations={"n": str(j)})
        tags = _tags(j)
        digest = push_image(client, name, image, tag=tags[0])
        for extra in tags[1:]:
            client.put_manifest(name, extra, image.manifest, image.media_type)
        if j % 7 != 3:
            ledger.record_push(host, name, digest, tuple(tags), now=NOW - age * DAY)
        pushed = 1
        if j % 5 == 4:
            sig = make_image(layers=0, platform=None, annotations={"sig": f"{name}:{j}"})
            sig_digest = push_image(client, name, sig, tag=digest.replace(":", "-") + ".sig")
            ledger.record_push(host, name, sig_digest, (), now=NOW - age * DAY)
            pushed += 1
        return pushed

    for n in names:  # the shared layer once per repository, before the parallel pushes
        push_image(client, n, base, tag="warmup")
        client.delete_manifest(n, base.manifest_digest)
    with ThreadPoolExecutor(max_workers=8) as pool:
        count = sum(pool.map(push_one, jobs))
    if multiarch:
        index = make_multiarch(layers=1, layer_size=64, seed=9)
        digest = push_image(client, names[0], index, tag="multi")
        ledger.record_push(host, names[0], digest, ("multi",), now=NOW - 200 * DAY)
        count += 3
    return Seeded(prefix, names, count)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


@pytest.fixture
def oci(registry: LocalRegistry) -> Iterator[OciRegistry]:
    reg = OciRegistry(registry.host, ProviderOptions(concurrency=8))
    yield reg
    reg.close()


def plan_of(
    registry: OciRegistry, ledger: SqliteLedger, seeded: Seeded, text: str, host: str
) -> RunPlan:
    policy: Policy = load_policy_text(text, source="p.yaml", base_dir="/tmp")
    return plan_run(
        registry,
        policy,
        ledger=ledger,
        now=NOW,
        repositories=seeded.repositories,
        registry_name=host,
    )


def present(client: RegistryClient, repository: str, digest: str) -> bool:
    return client.head_manifest(repository, digest) is not None


def test_plan_apply_and_verify_300_images(
    registry: LocalRegistry, client: RegistryClient, oci: OciRegistry, ledger: SqliteLedger
) -> None:
    seeded = seed(client, ledger, registry.host)
    assert seeded.manifests >= 300
    run = plan_of(oci, ledger, seeded, policy_text(), registry.host)
    plan = run.plan
    assert plan is not None and not run.tripped
    assert sum(len(p.decisions) for p in plan.plans) == seeded.manifests
    # every rule kind decided something, and the images of unknown age were announced
    rules = {d.rule for p in plan.plans for d in p.decisions}
    assert {"mostRecent", "semver", "tagMatches", "olderThan", "referrerOfDeleted"} <= rules
    assert {"childOfKept"} & rules or {"childOfDeleted"} & rules
    assert "ageUnknown" in rules
    assert any("no push time for" in w for p in plan.plans for w in p.warnings)
    for p in plan.plans:  # an image with no push time is never deleted for its age
        for d in p.decisions:
            if d.time is None and d.role == "image":
                assert d.action == "keep", d
    assert any("ledger's first-seen" in w for p in plan.plans for w in p.warnings)
    assert 0 < run.deletions < seeded.manifests

    result = apply(run, oci, ledger, concurrency=8)
    assert result.status == "done", result.to_dict()
    assert result.deleted == run.deletions and result.failures == ()

    # what remains is exactly what the plan kept
    for p in plan.plans:
        kept_tags = {t for d in p.decisions if d.action == "keep" for t in d.tags}
        assert set(client.list_tags(p.repository)) == kept_tags, p.repository
        for d in p.decisions:
            assert present(client, p.repository, d.digest) == (d.action == "keep"), d
    # and planning again deletes nothing more
    again = plan_of(oci, ledger, seeded, policy_text(), registry.host)
    assert again.deletions == 0


def test_an_interrupted_apply_resumes_without_deleting_twice(
    registry: LocalRegistry, client: RegistryClient, ledger: SqliteLedger
) -> None:
    seeded = seed(client, ledger, registry.host, repositories=2, images=40, multiarch=False)
    with RegistryProxy(registry.host) as proxy:
        reg = OciRegistry(proxy.host, ProviderOptions(concurrency=8))
        try:
            run = plan_of(reg, ledger, seeded, policy_text(), registry.host)
            total = run.deletions
            assert total > 20
            proxy.clear()

            def deletes() -> int:
                return proxy.count(method="DELETE")

            first = apply(
                run, reg, ledger, concurrency=4, should_stop=lambda: deletes() >= total // 2
            )
            assert first.status == "interrupted"
            half = deletes()
            assert total // 2 <= half < total

            resumed = apply(load_run(ledger, run.run_id), reg, ledger, concurrency=4)
            assert resumed.status == "done"
            assert resumed.resumed == first.deleted
            assert first.deleted + resumed.deleted == total
            assert deletes() == total  # every digest deleted exactly once
            assert proxy.count(method="DELETE", status=404) == 0
        finally:
            reg.close()
    for w in run.work:
        for phase in w.phases:
            for digest in phase:
                assert not present(client, w.repository, digest)


def test_429s_slow_the_apply_down_and_it_still_completes(
    registry: LocalRegistry, client: RegistryClient, ledger: SqliteLedger
) -> None:
    seeded = seed(client, ledger, registry.host, repositories=1, images=50, multiarch=False)
    with RegistryProxy(registry.host) as proxy:
        reg = OciRegistry(proxy.host, ProviderOptions(concurrency=8))
        try:
            run = plan_of(reg, ledger, seeded, policy_text(), registry.host)
            proxy.clear()
            proxy.inject(429, count=6, method="DELETE", headers={"Retry-After": "1"})
            result = apply(run, reg, ledger, concurrency=8)
        finally:
            reg.close()
        assert result.status == "done", result.to_dict()
        assert result.deleted + result.gone == run.deletions
        assert proxy.count(method="DELETE", status=429) == 6
        assert result.throttles >= 6
        assert result.lowest_concurrency < result.concurrency == 8
        assert result.seconds >= 1.0  # waited out Retry-After
    for w in run.work:
        assert not any(present(client, w.repository, d) for p in w.phases for d in p)


def regwarden(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, timeout=180)


def test_cli_plan_dry_run_apply_and_a_guard_trip(
    registry: LocalRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    ledger_path = tmp_path / "ledger.db"
    ledger = SqliteLedger(ledger_path)
    seeded = seed(client, ledger, registry.host, repositories=2, images=30, multiarch=False)
    ledger.close()
    before = {name: sorted(client.list_tags(name)) for name in seeded.repositories}
    tripping = tmp_path / "tripping.yaml"
    tripping.write_text(policy_text(max_deletes=3))
    good = tmp_path / "good.yaml"
    good.write_text(policy_text())
    common = ["--ledger", str(ledger_path)]
    select = ["--registry", registry.host, "--repository", f"{seeded.prefix}/**"]

    # the guard trips: nothing deleted, exit 1, the team alerted
    trip = regwarden(
        *common, "retention", "apply", "-p", str(tripping), *select, "--yes", cwd=tmp_path
    )
    assert trip.returncode == 1, trip.stderr
    assert "guard tripped (maxDeletes 3)" in trip.stderr
    assert {name: sorted(client.list_tags(name)) for name in seeded.repositories} == before
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [a["outcome"] for a in alerts] == ["FAILED"]
    assert alerts[0]["action"] == "delete" and alerts[0]["team"] == "platform"

    # plan never deletes; json has the per-repository plans and totals
    planned = regwarden(
        *common, "retention", "plan", "-p", str(good), *select, "-o", "json", cwd=tmp_path
    )
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(planned.stdout)
    assert {r["repository"] for r in doc["repositories"]} == set(seeded.repositories)
    to_delete = doc["totals"]["images_deleted"]
    assert to_delete > 0 and doc["totals"]["bytes_freed"] > 0
    markdown = regwarden(
        *common, "retention", "plan", "-p", str(good), *select, "-o", "markdown", cwd=tmp_path
    )
    assert markdown.returncode == 0 and "| digest | tags |" in markdown.stdout

    # apply without --yes: a dry run that says so and exits 1
    dry = regwarden(*common, "retention", "apply", "-p", str(good), *select, cwd=tmp_path)
    assert dry.returncode == 1
    assert f"dry run: {to_delete} images" in dry.stderr and "--yes" in dry.stderr
    assert {name: sorted(client.list_tags(name)) for name in seeded.repositories} == before

    done = regwarden(
        *common, "retention", "apply", "-p", str(good), *select, "--yes", "-o", "json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]
    assert result["status"] == "done" and result["deleted"] == to_delete
    again = regwarden(
        *common, "retention", "plan", "-p", str(good), *select, "-o", "json", cwd=tmp_path
    )
    assert json.loads(again.stdout)["totals"]["images_deleted"] == 0

    # invoke retention with an event file: the function's dry run reports and exits 0
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"registry": registry.host, "repository": f"{seeded.prefix}/**"}))
    invoked = regwarden(
        *common, "invoke", "retention", str(event), "-p", str(good), "-o", "json", cwd=tmp_path
    )
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout)["planned_deletions"] == 0
