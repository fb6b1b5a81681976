"""Referrers only the OCI 1.1 referrers API shows: which manifests are asked about, the
records the answers become, how the planner treats them, the orchestration (probe once,
one level down, orphans through the ledger, errors), and the client's capability probe."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from support.retention import NO_GUARD, FakeRegistry, dg, record

from regwarden.errors import AuthError, NotFound, RegistryError
from regwarden.oci import OCI_INDEX, OCI_MANIFEST, Descriptor, RegistryClient
from regwarden.providers import CAP_REFERRERS_API
from regwarden.retention import (
    DeleteOlderThan,
    DeleteOrphans,
    KeepMostRecent,
    RetentionRules,
    collect_records,
    plan_repository,
    records_from_listing,
    work_from_plan,
)
from regwarden.retention.running._referrers import find_referrers, referrer_listing, subjects_to_ask

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
REPO = "team/api"
INDEX = "application/vnd.oci.image.index.v1+json"
SIG = "application/vnd.dev.sigstore.bundle.v0.3+json"
SBOM = "application/spdx+json"


def ref(name: str, artifact_type: str = SIG, **annotations: str) -> Descriptor:
    return Descriptor(
        media_type=OCI_MANIFEST,
        digest=dg(name),
        size=len(name) * 10,
        artifact_type=artifact_type,
        annotations=dict(annotations),
    )


# -- which manifests are asked about --------------------------------------------------------


def test_subjects_are_listed_manifests_that_are_not_referrers_then_index_children() -> None:
    image, index, amd, arm = dg("image"), dg("index"), dg("amd64"), dg("arm64")
    listing = [
        record(REPO, image, "1.0"),
        record(REPO, index, "multi", media_type=INDEX, children=(amd, arm, image)),
        record(REPO, dg("cosign-sig"), image.replace(":", "-") + ".sig"),
        record(REPO, dg("schema"), image.replace(":", "-"), media_type=INDEX, children=(amd,)),
        record(REPO, dg("bundle"), subject=image),
        # an ordinary image whose tag merely starts like a digest is still asked about
        record(REPO, dg("odd"), "sha256-nightly"),
    ]
    assert subjects_to_ask(listing) == [image, index, dg("odd"), amd, arm]
    assert subjects_to_ask([]) == []


# -- the records the answers become ---------------------------------------------------------


def test_referrer_listing_makes_untagged_records_that_follow_the_subject() -> None:
    image, other = dg("image"), dg("other")
    sig = ref("sig", SIG, **{"org.opencontainers.image.created": "2026-11-01T10:00:00Z"})
    sbom = ref("sbom", SBOM, **{"org.opencontainers.image.created": "yesterday"})
    naive = ref("naive", SBOM, **{"org.opencontainers.image.created": "2026-11-01T10:00:00"})
    listed = ref("listed")
    found = [
        (image, [sig, sbom, listed, Descriptor(OCI_MANIFEST, image, 1)]),
        (other, [sig, naive]),  # a digest named twice: the first subject wins
    ]
    out = referrer_listing(REPO, found, known={listed.digest})
    assert [r.digest for r in out] == [sig.digest, sbom.digest, naive.digest]
    first = out[0]
    assert (first.repository, first.tags, first.subject) == (REPO, (), image)
    assert (first.media_type, first.size, first.artifact_type) == (OCI_MANIFEST, 30, SIG)
    assert first.created == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert out[1].created is None and out[2].created is None  # unreadable or without a zone
    assert out[2].subject == other and out[1].pushed is None


def test_api_referrers_follow_their_subject_in_the_plan_and_go_first() -> None:
    old, new = dg("old"), dg("new")
    sig, sbom, sbom_sig = ref("old.sig"), ref("old.sbom", SBOM), ref("old.sbom.sig")
    listing = [
        record(REPO, new, "2.0", pushed=NOW - 1 * DAY),
        record(REPO, old, "1.0", pushed=NOW - 90 * DAY),
    ]
    added = referrer_listing(REPO, [(old, [sig, sbom]), (new, [ref("new.sig")])], set())
    added += referrer_listing(REPO, [(sbom.digest, [sbom_sig])], {r.digest for r in added})
    records, _ = records_from_listing([*listing, *added])
    rules = RetentionRules(
        keep=(KeepMostRecent(1),), delete=(DeleteOlderThan(30 * DAY),), guard=NO_GUARD
    )
    plan = plan_repository(REPO, records, rules, now=NOW)
    assert {d.digest for d in plan.deletions} == {old, sig.digest, sbom.digest, sbom_sig.digest}
    assert plan.decision(sbom_sig.digest).reason == f"deleted: referrer of deleted {sbom.digest}"
    assert plan.decision(dg("new.sig")).rule == "referrerOfKept"
    phases = work_from_plan(plan, records).phases
    assert [set(p) for p in phases] == [{sbom_sig.digest, sig.digest}, {sbom.digest}, {old}]


# -- orchestration --------------------------------------------------------------------------


class DataPlane:
    """The part of `RegistryClient` that `find_referrers` uses, over a dict of answers."""

    def __init__(self, answers: dict[str, list[Descriptor]], *, api: bool = True) -> None:
        self.answers = answers
        self.api = api
        self.present: set[str] = set()
        self.missing: set[str] = set()
        self.failing: set[str] = set()
        self.asked: list[str] = []
        self.heads: list[str] = []
        self.probes = 0
        self._lock = threading.Lock()

    def supports_referrers_api(self, repo: str, digest: str) -> bool:
        self.probes += 1
        return self.api

    def referrers(self, repo: str, digest: str) -> list[Descriptor]:
        with self._lock:
            self.asked.append(digest)
        if digest in self.failing:
            raise RegistryError(f"referrers of {repo}@{digest}: got HTTP 500", status=500)
        if digest in self.missing:
            raise NotFound(f"manifest {repo}@{digest} not found")
        return list(self.answers.get(digest, ()))

    def head_manifest(self, repo: str, digest: str) -> Descriptor | None:
        with self._lock:
            self.heads.append(digest)
        return Descriptor(OCI_MANIFEST, digest, 1) if digest in self.present else None


def _find(plane: DataPlane, listing: list[Any], **kwargs: Any) -> Any:
    return find_referrers(cast(RegistryClient, plane), REPO, listing, **kwargs)


def test_without_the_api_nothing_is_asked() -> None:
    plane = DataPlane({dg("image"): [ref("sig")]}, api=False)
    assert _find(plane, [record(REPO, dg("image"), "1")], ledger_digests=[dg("x")]) is None
    assert plane.asked == [] and plane.probes == 1
    empty = DataPlane({})
    assert _find(empty, [record(REPO, dg("s"), dg("i").replace(":", "-") + ".sig")]) is None
    assert empty.probes == 0  # nothing to ask about: not even the probe


def test_referrers_one_level_down_and_images_deleted_meanwhile() -> None:
    image, gone = dg("image"), dg("gone")
    sbom = ref("sbom", SBOM)
    plane = DataPlane({image: [ref("sig"), sbom], sbom.digest: [ref("sbom.sig")]})
    plane.missing = {gone}
    found = _find(plane, [record(REPO, image, "1"), record(REPO, gone, "2")], concurrency=3)
    assert [(r.digest, r.subject) for r in found.listing] == [
        (dg("sig"), image),
        (sbom.digest, image),
        (dg("sbom.sig"), sbom.digest),
    ]
    assert sorted(plane.asked) == sorted([image, gone, dg("sig"), sbom.digest])
    assert (found.asked, found.orphans, found.ledger_asked) == (4, 0, 0)
    assert found.note() == (
        "listed the referrers of 4 manifests through the referrers API (the tag listing "
        "does not show them): 3 found"
    )


def test_other_registry_errors_propagate() -> None:
    plane = DataPlane({})
    plane.failing = {dg("image")}
    with pytest.raises(RegistryError, match="HTTP 500"):
        _find(plane, [record(REPO, dg("image"), "1"), record(REPO, dg("other"), "2")])


def test_orphans_through_the_ledger_only_when_the_subject_is_really_gone() -> None:
    image, deleted, untagged = dg("image"), dg("deleted"), dg("untagged")
    plane = DataPlane(
        {
            image: [ref("sig")],
            deleted: [ref("orphan.sig"), ref("orphan.sbom", SBOM)],
            untagged: [ref("untagged.sig")],
            dg("orphan.sbom"): [ref("orphan.sbom.sig")],
        }
    )
    plane.present = {untagged}
    ledger = [image, deleted, untagged, dg("sig"), dg("never-referred")]
    found = _find(plane, [record(REPO, image, "1")], ledger_digests=ledger)
    subjects = {r.digest: r.subject for r in found.listing}
    assert subjects == {
        dg("sig"): image,
        dg("orphan.sig"): deleted,
        dg("orphan.sbom"): deleted,
        dg("orphan.sbom.sig"): dg("orphan.sbom"),
    }
    assert dg("untagged.sig") not in subjects  # its subject exists, unlisted: left alone
    assert sorted(plane.heads) == sorted([deleted, untagged])  # only those with referrers
    assert (found.orphans, found.ledger_asked) == (2, 3)
    assert "asked about 3 digests the ledger saw" in found.note()
    assert "2 orphaned referrers" in found.note()

    records, _ = records_from_listing([record(REPO, image, "1", pushed=NOW), *found.listing])
    rules = RetentionRules(delete=(DeleteOrphans(),), guard=NO_GUARD)
    plan = plan_repository(REPO, records, rules, now=NOW)
    assert plan.decision(dg("orphan.sig")).rule == "orphans"
    assert plan.decision(dg("orphan.sbom.sig")).rule == "referrerOfDeleted"
    assert plan.decision(dg("sig")).action == "keep"


def test_ledger_digests_asked_are_capped_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    import regwarden.retention.running._referrers as referrers_module

    monkeypatch.setattr(referrers_module, "MAX_LEDGER_ASKED", 2)
    plane = DataPlane({dg("newest"): [ref("newest.sig")], dg("oldest"): [ref("oldest.sig")]})
    ledger = [dg("newest"), dg("middle"), dg("oldest")]  # newest first, as collect passes
    found = _find(plane, [record(REPO, dg("image"), "1")], ledger_digests=ledger)
    assert dg("oldest") not in plane.asked  # past the cap: not asked this run
    assert {dg("newest"), dg("middle")} <= set(plane.asked)
    assert found.ledger_asked == 2
    assert [r.digest for r in found.listing] == [dg("newest.sig")]


class ApiRegistry(FakeRegistry):
    """The in-memory registry with a data plane that has the referrers API, declaring it
    (as the generic OCI provider does) unless `referrers_api` is False (as ECR, which lists
    its referrers itself)."""

    def __init__(
        self, plane: DataPlane, *args: Any, referrers_api: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.plane = plane
        self.capabilities = frozenset({CAP_REFERRERS_API} if referrers_api else ())

    def data_plane(self) -> Any:
        return self.plane


def test_collect_records_adds_api_referrers_where_the_registry_declares_the_api() -> None:
    image = dg("image")
    plane = DataPlane({image: [ref("sig"), ref("sbom", SBOM)]})
    listing = {REPO: [record(REPO, image, "1.0", pushed=NOW - 90 * DAY)]}
    collected = collect_records(ApiRegistry(plane, listing), REPO)
    assert {r.digest: r.subject for r in collected.records} == {
        image: None,
        dg("sig"): image,
        dg("sbom"): image,
    }
    assert collected.warnings[-1].startswith("listed the referrers of 3 manifests")

    ecr = DataPlane({image: [ref("sig")]})
    collected = collect_records(ApiRegistry(ecr, listing, referrers_api=False), REPO)
    assert [r.digest for r in collected.records] == [image] and ecr.probes == 0
    # a registry double without a data plane is listed as before
    assert [r.digest for r in collect_records(FakeRegistry(listing), REPO).records] == [image]


# -- the client's capability probe ----------------------------------------------------------


def _client(handler: Any) -> RegistryClient:
    return RegistryClient(
        "registry.example.com",
        transport=httpx.MockTransport(handler),
        sleep=lambda _: None,
        max_retries=1,
    )


@pytest.mark.parametrize(("status", "expected"), [(200, True), (404, False), (405, False)])
def test_the_probe_asks_once_and_remembers(status: int, expected: bool) -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers["accept"]))
        if status == 200:
            body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
            return httpx.Response(200, json=body, headers={"Content-Type": OCI_INDEX})
        return httpx.Response(status, text="404 page not found")

    with _client(handler) as client:
        threads = [
            threading.Thread(target=client.supports_referrers_api, args=("a/b", dg(str(i))))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert client.supports_referrers_api("c/d", dg("x")) is expected
    assert len(seen) == 1
    assert seen[0][0].startswith("/v2/a/b/referrers/sha256:") and seen[0][1] == OCI_INDEX


def test_a_failed_probe_raises_and_is_asked_again() -> None:
    answers = [503, 503, 501]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(answers.pop(0) if answers else 200)

    with _client(handler) as client:
        with pytest.raises(RegistryError, match="503"):
            client.supports_referrers_api("a/b", dg("x"))
        assert client.supports_referrers_api("a/b", dg("x")) is False  # 501: no API
        assert client.supports_referrers_api("a/b", dg("x")) is False
    assert len(seen) == 3  # two tries of the first probe, one of the second

    with _client(lambda _: httpx.Response(403)) as refused, pytest.raises(AuthError):
        refused.supports_referrers_api("a/b", dg("x"))
