"""The gate-correctness scenarios on Azure Container Registry, driven through the function
app as Azure drives it (issue #14, "How to test without Azure"): the Functions host
stand-in (`support.azure_host`, a process of its own) serves `functions/azure/
function_app.py`; every manifest PUT a push made is delivered to `on_push` as ACR's system
topic delivers it (ImagePushed, Event Grid schema, one event per delivery).

- a 2-platform index pushed with `skopeo copy --all` and signed with `regwarden sign`
  (legacy `.sig` tag, bundle referrer) passes, the signature's own event re-evaluating it
  from a PENDING hold (`lock`: write and delete locked on the index and each child, still
  readable) — released when it passes, every attribute back as it was;
- the same index unsigned is quarantined by `lock` (FAILED: read locked too, on the index
  and each child), by `move` (into `quarantine/{repository}`) and by `retag`; the alert
  arrives on the alerts topic with `data.team`, `data.severity`, `data.verdict`;
  `actions.release` (what `regwarden quarantine release` runs) restores it;
- retention: `retention_fanout` (the admin API's run of the timer) → one message per
  repository on `regwarden-retention-work` (Azurite) → `retention_worker` deletes what the
  policy lets go and keeps what is in use and what is locked.

Every check of the registry's state reads the real docker-registry (the fake out of the
way) or FakeAcr's attributes, never only a function's answer. Each test prints its
figures as one JSON line.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.azure_world import HOST, World, azure_world, image
from support.chaos import placement

from regwarden.actions import release
from regwarden.devtools import LocalRegistry, make_multiarch
from regwarden.errors import AuthError
from regwarden.quarantine_names import quarantine_tag
from regwarden.reference import ImageRef

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo"),
]

KEYS = "file://cosign.pub"
POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: acr}}
defaults:
  mode: enforce
  team: alpha
  signatures: {{required: true, cosign: {{keys: ["{KEYS}"]}}, gracePeriod: 0s}}
  quarantine: {{strategy: lock}}
repositories:
  - match: "moved/**"
    quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
  - match: "held/**"
    quarantine: {{strategy: retag}}
  - match: "late/**"
    signatures: {{required: true, cosign: {{keys: ["{KEYS}"]}}, gracePeriod: 1h}}
  - match: "apps/**"
    team: bravo
    signatures: {{required: false}}
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
"""Unsigned fails at once: `locked/` is locked (the default), `moved/` moved, `held/`
retagged; `late/` waits an hour for its signature under a `lock` hold; `apps/` is
retention's."""
OPEN = {"write": True, "delete": True, "read": True, "list": True}


def attrs(flags: dict[str, bool]) -> dict[str, bool]:
    """FakeAcr's changeable attributes in the lock's words."""
    return {
        "write": flags["writeEnabled"],
        "delete": flags["deleteEnabled"],
        "read": flags["readEnabled"],
        "list": flags["listEnabled"],
    }


@pytest.fixture
def world(registry: LocalRegistry, tmp_path: Path) -> Iterator[World]:
    with azure_world(registry, tmp_path, POLICY) as w:
        w.start()
        yield w


def everything(index: Any) -> list[str]:
    return [str(index.manifest_digest), *(str(c.manifest_digest) for c in index.children)]


def ref(repository: str, digest: str) -> ImageRef:
    return ImageRef(registry=HOST, repository=repository, tag=None, digest=digest)


def alerts_of(world: World, repository: str) -> list[dict[str, Any]]:
    """The alerts topic's CloudEvents about `repository`."""
    return [a for a in world.alerts() if a["data"].get("repository") == repository]


def quarantine_alerts(world: World, repository: str) -> list[dict[str, Any]]:
    return [a for a in alerts_of(world, repository) if a["data"].get("action") == "quarantine"]


def figures(name: str, started: float, **more: Any) -> None:
    print(json.dumps({"test": name, "seconds": round(time.monotonic() - started, 2), **more}))


# -- a signed index passes; a hold while it waits -------------------------------------------


@pytest.mark.parametrize("fmt", ["legacy", "bundle"])
def test_a_signed_index_is_held_then_released_by_its_signature(world: World, fmt: str) -> None:
    started = time.monotonic()
    repo = image("late")
    index = make_multiarch(seed=911 if fmt == "legacy" else 912, layer_size=128)
    digest, pushed = world.push_content(repo, "1.0", index)
    digests = everything(index)
    # skopeo --all: each child by digest, then the index by its tag
    assert [e["data"]["target"].get("tag") for e in pushed] == [None, None, "1.0"]

    world.deliver(pushed)

    with closing(world.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "PENDING"
    held = {d: attrs(a) for d, a in world.attributes(repo, digests).items()}
    # a hold: nothing can overwrite or delete any of it, and it can still be pulled
    assert held == {d: {**OPEN, "write": False, "delete": False} for d in digests}
    with world.origin() as origin:
        assert placement(origin, repo, f"quarantine/{repo}", index) == "untouched"
    with world.client() as front:
        assert front.head_manifest(repo, "1.0") is not None  # readable through ACR

    signature = world.sign(repo, digest, fmt)
    assert signature
    world.deliver(signature)

    with closing(world.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "PASSED"
        record = ledger.quarantined(HOST, repo, digest)
        assert record is not None and record.strategy == "lock"
        assert record.released_at is not None  # the hold, released by the verdict
    released = {d: attrs(a) for d, a in world.attributes(repo, digests).items()}
    assert released == {d: OPEN for d in digests}
    # the team heard of the hold and of its release (data.team / severity / verdict are
    # what subscriptions filter on)
    heard = [(a["data"]["action"], a["data"]["verdict"]) for a in alerts_of(world, repo)]
    assert heard == [("quarantine", "PENDING"), ("release", "PASSED")]
    figures(f"signed-{fmt}", started, deliveries=len(pushed) + len(signature))


# -- unsigned: lock, move, retag; release ---------------------------------------------------


def test_an_unsigned_index_is_read_locked_whole_and_release_restores_it(world: World) -> None:
    started = time.monotonic()
    repo = image("locked")
    index = make_multiarch(seed=913, layer_size=128)
    digest, pushed = world.push_content(repo, "1.0", index)
    digests = everything(index)

    world.deliver(pushed)

    locked = {d: attrs(a) for d, a in world.attributes(repo, digests).items()}
    assert locked == {d: {**OPEN, "write": False, "delete": False, "read": False} for d in digests}
    with world.client() as front:  # nobody can pull it through ACR
        with pytest.raises(AuthError) as refused:
            front.head_manifest(repo, digest)
        assert refused.value.status == 403
    with world.origin() as origin:  # and nothing was moved or deleted
        assert placement(origin, repo, f"quarantine/{repo}", index) == "untouched"
    with closing(world.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "FAILED"
        record = ledger.quarantined(HOST, repo, digest)
        assert record is not None and record.strategy == "lock" and record.released_at is None
        assert [a.status for a in ledger.actions() if a.kind == "quarantine"] == ["done"]
    (alert,) = quarantine_alerts(world, repo)
    data = alert["data"]
    assert (data["team"], data["verdict"]) == ("alpha", "FAILED") and data["severity"]

    # Event Grid delivers the same push again: one verdict stands, nothing is done twice
    world.deliver(pushed[-1:])
    assert len(quarantine_alerts(world, repo)) == 1
    # the alerts topic's own subscription: `notify` sends it to the team's webhook, once
    # however often Event Grid delivers it
    assert world.sink.received == []  # the gate itself publishes only to the topic
    world.deliver([alert, alert], function="notify")
    ((_, sent),) = world.sink.received
    hooked = json.loads(sent)  # the webhook's CloudEvent, the alert its data
    assert (hooked["data"]["image"], hooked["data"]["team"]) == (data["image"], "alpha")

    with closing(world.ledger()) as ledger, closing(world.provider()) as acr:
        out = release(
            acr, ledger, image=ref(repo, digest), reason="accepted risk", now=datetime.now(UTC)
        )
        record = ledger.quarantined(HOST, repo, digest)
    assert record is not None and record.released_at is not None
    del out
    restored = {d: attrs(a) for d, a in world.attributes(repo, digests).items()}
    assert restored == {d: OPEN for d in digests}
    with world.client() as front:
        assert front.head_manifest(repo, "1.0") is not None
    figures("lock", started, digests=len(digests))


def test_an_unsigned_index_is_moved_whole_and_release_brings_it_back(world: World) -> None:
    started = time.monotonic()
    repo = image("moved")
    held = f"quarantine/{repo}"
    index = make_multiarch(seed=914, layer_size=128)
    digest, pushed = world.push_content(repo, "1.0", index)

    world.deliver(pushed)

    with world.origin() as origin:
        assert placement(origin, repo, held, index) == "quarantined"
        assert origin.head_manifest(held, quarantine_tag(digest)) is not None
    with closing(world.ledger()) as ledger:
        record = ledger.quarantined(HOST, repo, digest)
        assert record is not None
        assert (record.strategy, record.location, record.tags) == ("move", held, ("1.0",))
        assert [a.status for a in ledger.actions() if a.kind == "quarantine"] == ["done"]
    (alert,) = quarantine_alerts(world, repo)
    assert alert["data"]["verdict"] == "FAILED"

    with closing(world.ledger()) as ledger, closing(world.provider()) as acr:
        out = release(
            acr, ledger, image=ref(repo, digest), reason="accepted risk", now=datetime.now(UTC)
        )
    assert out.restored_tags == ("1.0",) and out.location == repo
    with world.origin() as origin:
        assert placement(origin, repo, held, index) == "untouched"
    figures("move", started)


def test_an_unsigned_index_is_retagged_and_release_puts_the_tags_back(world: World) -> None:
    started = time.monotonic()
    repo = image("held")
    index = make_multiarch(seed=915, layer_size=128)
    digest, pushed = world.push_content(repo, "1.0", index)

    world.deliver(pushed)

    qtag = quarantine_tag(digest)
    with closing(world.provider()) as acr:
        assert acr.tags_of(repo, digest) == (qtag,)
        assert acr.resolve(repo, "1.0") is None
    with closing(world.ledger()) as ledger:
        record = ledger.quarantined(HOST, repo, digest)
        assert record is not None and (record.strategy, record.tags) == ("retag", ("1.0",))
    assert len(quarantine_alerts(world, repo)) == 1

    with closing(world.ledger()) as ledger, closing(world.provider()) as acr:
        out = release(
            acr, ledger, image=ref(repo, digest), reason="signed now", now=datetime.now(UTC)
        )
        assert out.restored_tags == ("1.0",)
        assert acr.resolve(repo, "1.0") == digest
    figures("retag", started)


# -- retention through the functions ----------------------------------------------------------


def test_retention_through_the_functions_keeps_what_runs_and_what_is_locked(
    world: World,
) -> None:
    """Forty days ago, under this test's prefix: in `api` an untagged manifest and one a
    Container App runs by digest; in `web` an untagged one, one an AKS pod runs, one
    locked against deletion (deleteEnabled false); an hour ago `v9` in each. The timer
    (the admin API's run of `retention_fanout`) puts one message per repository on the
    retention queue; the host's queue listener hands each to `retention_worker`
    (RETENTION_MODE=apply), which deletes the two old untagged manifests and keeps the
    rest; team bravo hears of it on the alerts topic."""
    pytest.importorskip("kubernetes")
    from support.fake_arm import FakeArm
    from support.fake_kube import FakeKube
    from support.fake_resourcegraph import SUBSCRIPTION, FakeResourceGraph

    from regwarden.devtools import make_image, push_image

    started = time.monotonic()
    prefix = f"apps/{uuid.uuid4().hex[:8]}/"
    api, web = prefix + "api", prefix + "web"
    now = datetime.now(UTC)
    with world.client() as client:

        def push(repository: str, seed: int, tag: str | None = None) -> str:
            return push_image(client, repository, make_image(seed=seed, layer_size=64), tag=tag)

        world.acr.now = lambda: now - timedelta(days=40)
        api_old, app_runs = push(api, 930), push(api, 931)
        web_old, pod_runs, locked = push(web, 932), push(web, 933), push(web, 934)
        world.acr.now = lambda: now - timedelta(hours=1)
        api_v9, web_v9 = push(api, 935, "v9"), push(web, 936, "v9")
    with closing(world.provider()) as acr:
        acr.set_manifest_attributes(web, locked, delete=False)
    doomed = {(api, api_old), (web, web_old)}
    kept = {(api, app_runs), (web, pod_runs), (web, locked), (api, api_v9), (web, web_v9)}
    pod = {
        "metadata": {"name": "web-1", "namespace": "prod"},
        "spec": {"containers": [{"name": "web", "image": f"{HOST}/{web}:gone"}]},
        "status": {"containerStatuses": [{"name": "web", "imageID": f"{HOST}/{web}@{pod_runs}"}]},
    }
    with (
        FakeResourceGraph(now=now) as graph,
        FakeArm() as arm,
        FakeKube(items={"pods": [pod]}) as kube,
    ):
        arm.arm_token = arm.aks_token = kube.token = world.acr.aad_token  # one identity
        arm.add_cluster("prod", kube, subscription=SUBSCRIPTION)
        graph.add_container_app("api", [f"{HOST}/{api}@{app_runs}"])
        world.trust(arm.ca_file)
        world.env.update(
            {
                "REGWARDEN_AZURE_SUBSCRIPTION": SUBSCRIPTION,
                "REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH": graph.url,
                "REGWARDEN_AZURE_ENDPOINT_ARM": arm.url,
                "REGWARDEN_RETENTION_REGISTRY": HOST,
                "REGWARDEN_RETENTION_PREFIXES": prefix,
                "RETENTION_MODE": "apply",
            }
        )
        host = world.restart()  # app settings are read at the host's start

        assert host.run_timer("retention_fanout") == 202, world.log()[-4000:]
        calls = host.wait_for(
            lambda seen: len([c for c in seen if c["function"] == "retention_worker"]) >= 2,
            timeout=180,
        )
    work = [c for c in calls if c["function"] == "retention_worker"]
    assert [c["ok"] for c in work] == [True, True], (work, world.log()[-4000:])
    assert [c["dequeue_count"] for c in work] == [1, 1]
    with world.origin() as origin:  # the docker-registry itself
        left = {(r, d) for r, d in doomed | kept if origin.head_manifest(r, d) is not None}
    assert left == kept
    assert attrs(world.acr.attributes(web, locked))["delete"] is False
    deleted = [a["data"] for a in world.alerts() if a["data"].get("action") == "delete"]
    assert {(d["team"], d["repository"]) for d in deleted} == {("bravo", api), ("bravo", web)}
    figures("retention", started, deleted=len(doomed), kept=len(kept))
