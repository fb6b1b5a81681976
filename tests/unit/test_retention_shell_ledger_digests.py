"""Untagged manifests a tag listing cannot show, added from the ledger: pushes by digest and
digests left behind by an overwritten tag, read from the registry (gone ones left out),
planned like any other manifest; and none of it on a registry that lists every manifest."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.retention import NO_GUARD, FakeRegistry, dg, record

from regwarden.oci import Manifest
from regwarden.providers import CAP_MANIFEST_LISTING, ListedImage
from regwarden.retention import (
    DeleteUntagged,
    KeepMostRecent,
    RetentionRules,
    collect_records,
    plan_repository,
)
from regwarden.retention.running._ledger_digests import known_digests, listed_from_manifest
from regwarden.store import SqliteLedger

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
REPO = "team/api"
HOST = "registry.test"
INDEX = "application/vnd.oci.image.index.v1+json"


class TagListingRegistry(FakeRegistry):
    """Lists tagged manifests only, as the Distribution API does; holds untagged ones."""

    def list_images(self, repository: str) -> list[ListedImage]:
        return [r for r in super().list_images(repository) if r.tags]


class ListingRegistry(FakeRegistry):
    capabilities = frozenset({CAP_MANIFEST_LISTING})


@pytest.fixture
def ledger(tmp_path: Path) -> SqliteLedger:
    return SqliteLedger(tmp_path / "ledger.db")


def scenario(ledger: SqliteLedger, cls: type[FakeRegistry] = TagListingRegistry) -> FakeRegistry:
    """`1.0` overwritten 40 days ago (its old digest still held), a push by digest 30 days
    ago, a bundle signature of `1.0` pushed by digest, a digest deleted since, and an index
    pushed by digest with one platform image."""
    kept, old = dg("kept"), dg("old-1.0")
    registry = cls(
        {
            REPO: [
                record(REPO, kept, "1.0"),
                record(REPO, old),
                record(REPO, dg("by-digest")),
                record(REPO, dg("bundle"), artifact_type="application/vnd.dev.sigstore.bundle"),
                record(REPO, dg("index"), media_type=INDEX, children=(dg("amd64"),)),
                record(REPO, dg("amd64")),
            ]
        },
        host=HOST,
    )
    registry.subjects = {dg("bundle"): kept}
    ledger.record_push(HOST, REPO, old, ("1.0",), now=NOW - 50 * DAY)
    ledger.record_push(HOST, REPO, kept, ("1.0",), now=NOW - 40 * DAY)
    ledger.record_push(HOST, REPO, dg("by-digest"), (), now=NOW - 30 * DAY)
    ledger.record_push(HOST, REPO, dg("bundle"), (), now=NOW - 30 * DAY)
    ledger.record_push(HOST, REPO, dg("deleted"), (), now=NOW - 30 * DAY)
    ledger.record_push(HOST, REPO, dg("amd64"), (), now=NOW - 20 * DAY)
    ledger.record_push(HOST, REPO, dg("index"), (), now=NOW - 20 * DAY)
    return registry


def test_untagged_manifests_the_ledger_knows_are_added_and_planned(ledger: SqliteLedger) -> None:
    registry = scenario(ledger)
    collected = collect_records(registry, REPO, ledger=ledger)
    by_digest = {r.digest: r for r in collected.records}
    expected = {dg(n) for n in ("kept", "old-1.0", "by-digest", "bundle", "index", "amd64")}
    assert set(by_digest) == expected  # `deleted` is gone from the registry: left out
    looked = sorted(c.digests[0] for c in registry.calls if c.op == "details")
    assert looked == sorted(expected - {dg("kept")} | {dg("deleted")})  # one read each
    assert by_digest[dg("old-1.0")].pushed == (NOW - 50 * DAY).timestamp()
    assert by_digest[dg("by-digest")].pushed == (NOW - 30 * DAY).timestamp()
    assert by_digest[dg("bundle")].subject == dg("kept")
    assert (
        "the registry lists tagged manifests only: read 6 digests the ledger saw pushed that "
        "the listing does not show; 5 still there were added (1 left behind by an overwritten "
        "tag, 4 pushed by digest), 1 no longer there"
    ) in collected.warnings

    rules = RetentionRules(
        keep=(KeepMostRecent(1),), delete=(DeleteUntagged(7 * DAY),), guard=NO_GUARD
    )
    plan = plan_repository(REPO, collected.records, rules, now=NOW)
    deleted = {d.digest: d.rule for d in plan.deletions}
    assert deleted == {
        dg("old-1.0"): "untagged",
        dg("by-digest"): "untagged",
        dg("index"): "untagged",
        dg("amd64"): "childOfDeleted",  # goes with its index, after it
    }
    assert plan.decision(dg("old-1.0")).reason == "deleted: untagged older than 7d (pushed 50d ago)"
    # the signature of the kept image stays, though untagged and pushed by digest
    assert plan.decision(dg("bundle")).rule == "referrerOfKept"
    order = list(plan.delete_order)
    assert order.index(dg("index")) < order.index(dg("amd64"))


def test_a_registry_that_lists_every_manifest_is_not_asked_again(ledger: SqliteLedger) -> None:
    registry = scenario(ledger, ListingRegistry)
    collected = collect_records(registry, REPO, ledger=ledger)
    # only the listed artifact whose subject the listing omits is read (as on ECR)
    assert [c.digests for c in registry.calls if c.op == "details"] == [(dg("bundle"),)]
    assert not any("ledger saw pushed" in w for w in collected.warnings)
    assert dg("deleted") not in {r.digest for r in collected.records}


def test_without_a_ledger_nothing_is_added(ledger: SqliteLedger) -> None:
    registry = scenario(ledger)
    collected = collect_records(registry, REPO)
    assert {r.digest for r in collected.records} == {dg("kept")}
    assert registry.calls == []


def test_known_digests_adds_the_tag_history_at_its_first_sighting() -> None:
    t0 = NOW - 10 * DAY
    times = {dg("a"): (t0, NOW)}
    history = [
        ("1", dg("a"), t0 - DAY),  # seen tagged before the images table says: earlier wins
        ("1", dg("b"), t0),
        ("2", dg("b"), t0 - DAY),
    ]
    assert known_digests(times, history) == {dg("a"): (t0 - DAY, NOW), dg("b"): (t0 - DAY, None)}


def test_a_manifest_read_by_digest_becomes_an_untagged_record() -> None:
    def manifest(doc: dict[str, object]) -> Manifest:
        return Manifest.parse(json.dumps(doc).encode())

    image = manifest(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": dg("config"),
                "size": 10,
            },
            "layers": [
                {"mediaType": "x", "digest": dg("l1"), "size": 100},
                {"mediaType": "x", "digest": dg("l2"), "size": 1000},
            ],
            "subject": {"mediaType": "x", "digest": dg("subject"), "size": 5},
        }
    )
    listed = listed_from_manifest(REPO, image)
    assert (listed.digest, listed.tags, listed.size) == (image.digest, (), 1110)
    assert listed.subject == dg("subject") and listed.children == ()
    assert listed.artifact_type == "application/vnd.oci.image.config.v1+json"
    assert listed.pushed is None and listed.created is None  # times come from the ledger
    index = manifest(
        {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [
                {"mediaType": "x", "digest": dg("amd64"), "size": 500},
                {"mediaType": "x", "digest": dg("arm64"), "size": 500},
            ],
        }
    )
    listed = listed_from_manifest(REPO, index)
    assert listed.children == (dg("amd64"), dg("arm64"))
    assert listed.size == 0  # the platform images count their own
    assert listed.media_type == INDEX
