"""The gate-correctness scenarios on Google Artifact Registry, driven through the Cloud Run
functions as Pub/Sub drives them (issue #13, "How to test without Google"): every `gcr`
message a push made, in order, delivered to `on_push`; the retention tick to
`retention_fanout`, and each work message it published to `retention_worker`.

- a 2-platform index pushed with `skopeo copy --all` and signed with `regwarden sign`
  (legacy: its `.sig` tag's INSERT; bundle: the OCI 1.1 referrer's) passes, the
  signature's own message re-evaluating it;
- the same index unsigned is quarantined — `move` to `PROJECT/quarantine/{repository}`
  (the copy there with every child and blob, the source gone) or `retag` (its tags gone
  through the AR tags API, `quarantined-…` on it) — with the ledger's record and the
  alert; `actions.release` (what `regwarden quarantine release` runs) restores it;
- retention deletes old untagged versions and keeps an image a Cloud Run service runs,
  with its signature, and alerts the team.

Every check of the registry's state reads the real docker-registry (the fake out of the
way) or Artifact Registry's API (GarRegistry over the real client), never the messages.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from typing import Any

import pytest
from support import gcp_harness
from support.chaos import placement
from support.fake_cloudrun import FakeCloudRun
from support.gcp_harness import ALERTS, HOST, PROJECT, T0, WORK, Gcp, image, tick

from regwarden.actions import release
from regwarden.devtools import LocalRegistry, make_image, make_multiarch, push_image
from regwarden.oci import RegistryClient
from regwarden.providers import ProviderOptions
from regwarden.providers.gar import GarRegistry
from regwarden.quarantine_names import quarantine_tag
from regwarden.reference import ImageRef

gcp = gcp_harness.gcp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo"),
]

QUARANTINE = f"{PROJECT}/quarantine/{{repository}}"
KEYS = "file://cosign.pub"
POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: gar}}
defaults:
  mode: enforce
  team: alpha
  signatures: {{required: true, cosign: {{keys: ["{KEYS}"]}}, gracePeriod: 0s}}
  quarantine: {{strategy: move, repository: "{QUARANTINE}"}}
repositories:
  - match: "{PROJECT}/held/**"
    quarantine: {{strategy: retag}}
  - match: "{PROJECT}/late/**"
    signatures: {{required: true, cosign: {{keys: ["{KEYS}"]}}, gracePeriod: 1h}}
  - match: "{PROJECT}/apps/**"
    team: bravo
    signatures: {{required: false}}
    retention:
      keep: [{{mostRecent: 1}}]
      delete: [{{untagged: {{olderThan: 7d}}}}, {{olderThan: 30d}}]
      guard: {{maxDeletes: 20, maxShare: 1}}
notifications:
  channels:
    alerts: {{type: pubsub, topic: "{ALERTS}"}}
  routes:
    - {{to: [alerts]}}
"""
"""Unsigned fails at once and is moved (`gated`) or retagged (`held`); `late` waits an
hour for its signature; `apps` is retention's."""
AREAS = ("gated", "held", "late", "apps", "quarantine")


@pytest.fixture
def gcp_policy() -> str:
    return POLICY


@pytest.fixture
def world(gcp: Gcp) -> Gcp:
    """The AR repositories the policy names (the quarantine one as Terraform creates it)."""
    for area in AREAS:
        gcp.gar.add_repository(area)
    return gcp


@pytest.fixture
def gar_api(world: Gcp) -> Iterator[GarRegistry]:
    """Artifact Registry as a person's tools see it: the real client on the AR API, the
    real registry's `/v2/` behind the front (what `regwarden quarantine release` opens)."""
    registry = GarRegistry(
        HOST,
        ProviderOptions(data_plane_host=world.gar.host, account=PROJECT),
        env={"REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": world.gar.url},
        sleep=lambda _s: None,
    )
    yield registry
    registry.close()


@pytest.fixture
def origin(registry: LocalRegistry) -> Iterator[RegistryClient]:
    """The docker-registry itself, the fake out of the way."""
    with RegistryClient(registry.host) as client:
        yield client


def deliver_all(gcp: Gcp, since: int) -> list[dict[str, Any]]:
    """Every `gcr` message from index `since`, in order, through `on_push` (alternating
    the delivery forms, as Eventarc and push subscriptions both deliver); each answer's
    results."""
    results = []
    for n, message in enumerate(gcp.gcr(since)):
        status, answer = gcp.deliver(
            "on_push", message, mode=("binary", "push", "structured")[n % 3]
        )
        assert status == 200, answer
        results.extend(answer["results"])
    return results


def judged(results: list[dict[str, Any]], digest: str) -> list[dict[str, Any]]:
    """The results with a verdict on `digest`."""
    return [r for r in results if "verdict" in r and r["image"].endswith(f"@{digest}")]


def ref(repository: str, digest: str) -> ImageRef:
    return ImageRef(registry=HOST, repository=repository, tag=None, digest=digest)


def quarantine_alerts(gcp: Gcp, repository: str) -> list[dict[str, Any]]:
    return [
        a
        for a in gcp.alerts()
        if a["attributes"].get("repository") == repository
        and a["attributes"].get("action") == "quarantine"
    ]


# -- a signed multi-arch index passes ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["legacy", "bundle"])
def test_a_signed_index_passes_and_its_late_signature_re_evaluates_it(
    world: Gcp, gar_api: GarRegistry, origin: RegistryClient, fmt: str
) -> None:
    gcp = world
    repo = image("late")
    index = make_multiarch(seed=811 if fmt == "legacy" else 812, layer_size=128)
    start = len(gcp.gar.gcr)
    digest = gcp.push_content(repo, "1.0", index)
    children = [c.manifest_digest for c in index.children]
    pushed = gcp.gcr(start)
    # skopeo --all: each child by digest, then the index by its tag
    assert [json.loads(m["data"]).get("tag") for m in pushed][-1] == f"{HOST}/{repo}:1.0"
    assert len(pushed) == 3

    first = deliver_all(gcp, start)
    (early,) = judged(first, digest)
    assert early["verdict"] == "PENDING" and early["actions"] == []  # the grace period
    signed_from = len(gcp.gar.gcr)
    gcp.sign(repo, digest, fmt)
    signature = gcp.gcr(signed_from)
    assert signature and all(json.loads(m["data"])["action"] == "INSERT" for m in signature)
    gcp.at(T0 + timedelta(minutes=5))  # still inside the grace period

    then = deliver_all(gcp, signed_from)

    # the signature's own messages judged its subject (a bundle makes two: the referrer
    # by digest, with its `subject`, and the referrers tag schema's `sha256-…` tag)
    late = judged(then, digest)
    assert late and all(r["verdict"] == "PASSED" and r["actions"] == [] for r in late), then
    assert not [r for r in then if "verdict" in r and not r["image"].endswith(digest)]
    assert placement(origin, repo, f"{PROJECT}/quarantine/{repo}", index) == "untouched"
    assert gar_api.resolve(repo, "1.0") == digest
    assert gar_api.tags_of(repo, digest) == ("1.0",)
    assert {c for c in children if gar_api.resolve(repo, c) == c} == set(children)
    assert not gcp.gar.calls("DELETE", r"/v1/.*") and not gcp.gar.calls("POST", r"/v1/.*/tags")
    assert quarantine_alerts(gcp, repo) == []
    with closing(gcp.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "PASSED"
        assert ledger.quarantined(HOST, repo, digest) is None


# -- the same index unsigned is quarantined, then released ------------------------------------


def test_an_unsigned_index_is_moved_whole_and_release_brings_it_back(
    world: Gcp, gar_api: GarRegistry, origin: RegistryClient
) -> None:
    gcp = world
    repo = image("gated")
    held = f"{PROJECT}/quarantine/{repo}"
    index = make_multiarch(seed=813, layer_size=128)
    start = len(gcp.gar.gcr)
    digest = gcp.push_content(repo, "1.0", index)
    pushed = len(gcp.gar.gcr)
    everything = {index.manifest_digest, *(c.manifest_digest for c in index.children)}

    results = deliver_all(gcp, start)

    (verdict,) = judged(results, digest)
    assert verdict["verdict"] == "FAILED"
    assert any(a.startswith("quarantine") for a in verdict["actions"]), verdict
    # the docker-registry: every manifest and blob in the quarantine repository, none left
    assert placement(origin, repo, held, index) == "quarantined"
    # Artifact Registry's API: nothing under the source package, all of it under quarantine
    assert gar_api.list_images(repo) == []
    moved = {i.digest: i.tags for i in gar_api.list_images(held)}
    assert set(moved) == everything and moved[digest] == (quarantine_tag(digest),)
    with closing(gcp.ledger()) as ledger:
        record = ledger.quarantined(HOST, repo, digest)
        assert record is not None and record.released_at is None
        assert (record.strategy, record.location, record.tags) == ("move", held, ("1.0",))
        assert [a.status for a in ledger.actions() if a.kind == "quarantine"] == ["done"]
    (alert,) = quarantine_alerts(gcp, repo)
    assert alert["attributes"]["verdict"] == "FAILED"
    assert json.loads(alert["data"])["image"].endswith(f"{repo}@{digest}")
    # the move's own writes (the copy's INSERTs, the source's DELETEs) judge nothing new
    moves = gcp.gcr(pushed)
    after = deliver_all(gcp, pushed)
    assert [json.loads(m["data"])["action"] for m in moves] == ["INSERT"] * 3 + ["DELETE"] * 3
    assert [r for r in after if "verdict" in r] == [], after

    released_from = len(gcp.gar.gcr)
    with closing(gcp.ledger()) as ledger:
        out = release(gar_api, ledger, image=ref(repo, digest), reason="accepted risk", now=T0)
        record = ledger.quarantined(HOST, repo, digest)
    assert out.restored_tags == ("1.0",) and out.location == repo
    assert record is not None and record.released_at is not None
    assert placement(origin, repo, held, index) == "untouched"
    assert gar_api.resolve(repo, "1.0") == digest
    assert {i.digest for i in gar_api.list_images(repo)} == everything
    assert gar_api.list_images(held) == []
    # the release's own pushes come back through on_push: the person's decision stands
    again = deliver_all(gcp, released_from)
    # (still unsigned, so FAILED again, and left where the person put it)
    rejudged = judged(again, digest)
    assert rejudged and all(r["actions"] == [] for r in rejudged), again
    assert all(any("not quarantined again" in n for n in r["notes"]) for r in rejudged)
    assert placement(origin, repo, held, index) == "untouched"
    assert len(quarantine_alerts(gcp, repo)) == 1


def test_an_unsigned_index_is_retagged_through_the_tags_api_and_release_puts_the_tags_back(
    world: Gcp, gar_api: GarRegistry, origin: RegistryClient
) -> None:
    gcp = world
    repo = image("held")
    index = make_multiarch(seed=814, layer_size=128)
    start = len(gcp.gar.gcr)
    digest = gcp.push_content(repo, "1.0", index)
    gcp.push_content(repo, "stable", index)  # a second tag on the same index

    results = deliver_all(gcp, start)

    verdicts = judged(results, digest)
    assert verdicts and all(v["verdict"] == "FAILED" for v in verdicts)
    qtag = quarantine_tag(digest)
    # Artifact Registry's API: only the quarantine tag is left on the index
    assert gar_api.tags_of(repo, digest) == (qtag,)
    assert gar_api.resolve(repo, "1.0") is None and gar_api.resolve(repo, "stable") is None
    assert len(gcp.gar.calls("DELETE", r"/v1/.*/packages/[^/]+/tags/(1\.0|stable)")) == 2
    assert gcp.gar.calls("POST", r"/v1/.*/packages/[^/]+/tags")  # createTag quarantined-…
    # the docker-registry: still there by digest, every child too; nothing copied anywhere
    assert placement(origin, repo, f"{PROJECT}/quarantine/{repo}", index) == "untouched"
    assert origin.head_manifest(repo, qtag) is not None
    with closing(gcp.ledger()) as ledger:
        record = ledger.quarantined(HOST, repo, digest)
        assert record is not None
        assert (record.strategy, record.location) == ("retag", repo)
        assert record.tags == ("1.0", "stable")
    assert len(quarantine_alerts(gcp, repo)) == 1  # one quarantine, however many pushes

    with closing(gcp.ledger()) as ledger:
        out = release(gar_api, ledger, image=ref(repo, digest), reason="signed now", now=T0)
    assert out.restored_tags == ("1.0", "stable")
    assert gar_api.tags_of(repo, digest) == ("1.0", "stable")
    assert gar_api.resolve(repo, "1.0") == digest and gar_api.resolve(repo, "stable") == digest


# -- retention through the functions ----------------------------------------------------------


def test_retention_through_the_functions_deletes_old_untagged_versions_and_keeps_what_runs(
    world: Gcp, origin: RegistryClient
) -> None:
    """Forty days ago: two images pushed by digest, a third signed (legacy `.sig`), and the
    image the Cloud Run service `api` runs by digest, signed too; an hour ago `v9`. The
    tick fans out one work message; the worker (RETENTION_MODE=apply) deletes the old
    untagged versions and the signature of a deleted one, and keeps what runs, with its
    signature, and the newest; the team hears of it on the alerts topic."""
    gcp = world
    repo = image("apps")
    old = T0 - timedelta(days=40)
    gcp.gar.now = lambda: old
    with RegistryClient(gcp.gar.host) as client:

        def by_digest(seed: int) -> str:
            return push_image(client, repo, make_image(seed=seed, layer_size=64), tag=None)

        def signature(digest: str) -> str:
            before = len(gcp.gar.gcr)
            gcp.sign(repo, digest, "legacy")
            (sig,) = [json.loads(m["data"]) for m in gcp.gcr(before)]
            return str(sig["digest"]).rsplit("@", 1)[1]

        untagged = [by_digest(821), by_digest(822)]
        signed_unused = by_digest(823)
        signature_of_deleted = signature(signed_unused)
        running = by_digest(824)
        signature_of_running = signature(running)
        gcp.gar.now = lambda: T0 - timedelta(hours=1)
        current = push_image(client, repo, make_image(seed=825, layer_size=64), tag="v9")
    doomed = {*untagged, signed_unused, signature_of_deleted}
    kept = {running, signature_of_running, current}
    for name, value in {
        "REGWARDEN_RETENTION_REGISTRY": HOST,
        "REGWARDEN_RETENTION_TOPIC": WORK,
        "REGWARDEN_RETENTION_PREFIXES": repo,
        "RETENTION_MODE": "apply",
    }.items():
        gcp.setenv(name, value)
    gcp.at(T0)

    with FakeCloudRun() as run:
        run.deploy(PROJECT, "us-central1", "api", f"{HOST}/{repo}@{running}")
        gcp.setenv("REGWARDEN_GCP_ENDPOINT_RUN", run.url)
        scheduled = tick(f"projects/{PROJECT}/topics/regwarden-retention-tick", T0)
        status, fanned = gcp.deliver("retention_fanout", scheduled)
        assert status == 200, fanned
        assert (fanned["queued"], fanned["repositories"]) == (1, [repo])
        work = gcp.pubsub.published(WORK)
        assert [m["attributes"]["repository"] for m in work] == [repo]
        answers = [gcp.deliver("retention_worker", {**m, "topic": WORK}) for m in work]
        # Cloud Run's listing of every region was read: what `api` runs is in use
        assert run.calls("GET", rf"/v2/projects/{PROJECT}/locations/-/services")
        # the same work message again (Pub/Sub's at-least-once)
        redelivered = gcp.deliver("retention_worker", {**work[0], "topic": WORK})

    ((status, done),) = answers
    assert status == 200, done
    assert done["mode"] == "apply" and done["result"]["status"] == "done", done
    assert done["result"]["deleted"] == len(doomed)
    left = {d for d in doomed | kept if origin.head_manifest(repo, d) is not None}
    assert left == kept  # on the docker-registry itself
    assert gcp.gar.calls("POST", r"/v1/.*/versions:batchDelete")
    (alert,) = [a for a in gcp.alerts() if a["attributes"].get("action") == "delete"]
    assert (alert["attributes"]["team"], alert["attributes"]["repository"]) == ("bravo", repo)
    body = json.loads(alert["data"])
    assert f"{len(doomed)} images deleted" in body["summary"], body
    # the redelivery deleted nothing more and alerted nothing more
    assert redelivered[0] == 200, redelivered
    assert len([a for a in gcp.alerts() if a["attributes"].get("action") == "delete"]) == 1
    assert {d for d in kept if origin.head_manifest(repo, d) is not None} == kept
