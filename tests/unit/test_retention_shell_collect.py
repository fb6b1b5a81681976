"""From listings to records: signature subjects, referrers tag-schema indexes, index
children the listing does not show, ledger times, the config's created time (an age only
with `ageFrom: created`); and what the planner then decides from those records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from support.retention import NO_GUARD, FakeRegistry, dg, record

from regwarden.retention import (
    DeleteOlderThan,
    DeleteUntagged,
    KeepMostRecent,
    RetentionRules,
    collect_records,
    plan_repository,
    records_from_listing,
    work_from_plan,
)
from regwarden.store import SqliteLedger

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
INDEX = "application/vnd.oci.image.index.v1+json"
REPO = "team/api"


def sig_tag(subject: str, suffix: str = "sig") -> str:
    return subject.replace(":", "-") + f".{suffix}"


def test_cosign_signatures_follow_their_subject_and_orphans_are_marked() -> None:
    old, new = dg("old"), dg("new")
    listing = [
        record(REPO, new, "2.0", pushed=NOW - 1 * DAY),
        record(REPO, old, "1.0", pushed=NOW - 90 * DAY),
        record(REPO, dg("old.sig"), sig_tag(old), size=200),
        record(REPO, dg("old.att"), sig_tag(old, "att"), size=300),
        record(REPO, dg("gone.sig"), sig_tag(dg("gone")), size=100),
    ]
    records, warnings = records_from_listing(listing)
    assert warnings == []
    rules = RetentionRules(delete=(DeleteOlderThan(30 * DAY),), guard=NO_GUARD)
    plan = plan_repository(REPO, records, rules, now=NOW)
    assert plan.decision(old).rule == "olderThan"
    for artifact in ("old.sig", "old.att"):
        d = plan.decision(dg(artifact))
        assert (d.action, d.rule, d.role) == ("delete", "referrerOfDeleted", "referrer")
    orphan = plan.decision(dg("gone.sig"))
    assert (orphan.action, orphan.role) == ("keep", "orphan")
    # signatures go first, the image after them
    order = list(plan.delete_order)
    assert order.index(dg("old.sig")) < order.index(old)
    work = work_from_plan(plan, records)
    assert [set(p) for p in work.phases] == [{dg("old.sig"), dg("old.att")}, {old}]
    assert work.deletions[old].rule == "olderThan"


def test_referrers_tag_schema_index_and_its_referrers_follow_the_subject() -> None:
    image = dg("image")
    sbom, sig = dg("sbom-referrer"), dg("sig-referrer")
    listing = [
        record(REPO, image, "1.0", pushed=NOW - 90 * DAY),
        record(
            REPO,
            dg("referrers-index"),
            image.replace(":", "-"),
            media_type=INDEX,
            children=(sbom, sig),
        ),
    ]
    records, warnings = records_from_listing(listing)
    by_digest = {r.digest: r for r in records}
    assert by_digest[dg("referrers-index")].subject == image
    assert by_digest[sbom].subject == image and by_digest[sig].subject == image
    assert any("2 untagged manifests added" in w for w in warnings)

    rules = RetentionRules(delete=(DeleteOlderThan(30 * DAY),), guard=NO_GUARD)
    plan = plan_repository(REPO, records, rules, now=NOW)
    assert {d.digest for d in plan.deletions} == {image, dg("referrers-index"), sbom, sig}
    phases = work_from_plan(plan, records).phases
    # the index that lists the referrers, then the referrers, then the image
    assert [set(p) for p in phases] == [{dg("referrers-index")}, {sbom, sig}, {image}]

    keep = RetentionRules(keep=(KeepMostRecent(1),), delete=rules.delete, guard=NO_GUARD)
    kept = plan_repository(REPO, records, keep, now=NOW)
    assert kept.deletions == ()


def test_index_children_the_listing_does_not_show_are_added_and_stay_with_a_kept_index() -> None:
    amd, arm = dg("amd64"), dg("arm64")
    index = dg("index")
    listing = [
        record(REPO, index, "multi", pushed=NOW - 5 * DAY, media_type=INDEX, children=(amd, arm)),
        record(REPO, dg("stale"), pushed=NOW - 90 * DAY),  # untagged, not a child
    ]
    records, warnings = records_from_listing(listing)
    children = [r for r in records if r.digest in (amd, arm)]
    assert len(children) == 2
    assert warnings == [
        "2 untagged manifests added from the indexes that list them (the registry lists "
        "tagged manifests only)"
    ]
    # pushed with their index (its push time is theirs)
    assert all(r.tags == () and r.pushed == (NOW - 5 * DAY).timestamp() for r in children)
    rules = RetentionRules(delete=(DeleteUntagged(7 * DAY),), guard=NO_GUARD)
    plan = plan_repository(REPO, records, rules, now=NOW)
    assert plan.decision(amd).rule == "childOfKept"
    assert plan.decision(arm).rule == "childOfKept"
    assert plan.decision(dg("stale")).action == "delete"
    # a child the registry lists itself (ECR) is not added twice
    listed = [*listing, record(REPO, amd, pushed=NOW - 5 * DAY)]
    again, _ = records_from_listing(listed)
    assert sorted(r.digest for r in again).count(amd) == 1


def test_ledger_times_stand_in_for_push_and_pull_times(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    first, second = dg("first"), dg("second")
    registry = FakeRegistry(
        {
            REPO: [
                record(REPO, first, "1", created=NOW - 400 * DAY),
                record(REPO, second, "2", created=NOW - 300 * DAY),
            ]
        }
    )
    ledger.record_push(registry.host, REPO, first, ("1",), now=NOW - 10 * DAY)
    ledger.record_pull(registry.host, REPO, first, now=NOW - 2 * DAY)
    collected = collect_records(registry, REPO, ledger=ledger)
    by_digest = {r.digest: r for r in collected.records}
    assert by_digest[first].pushed == (NOW - 10 * DAY).timestamp()
    assert by_digest[first].last_pulled == (NOW - 2 * DAY).timestamp()
    assert by_digest[second].pushed is None
    assert by_digest[second].created == (NOW - 300 * DAY).timestamp()
    assert collected.warnings == (
        "the registry keeps no push times: used the ledger's first-seen time for 1 of 2 manifests",
    )
    assert collected.listing_s >= 0 and collected.build_s >= 0

    rules = RetentionRules(delete=(DeleteOlderThan(30 * DAY),), guard=NO_GUARD)
    plan = plan_repository(REPO, collected.records, rules, now=NOW)
    assert plan.decision(first).action == "keep"  # first seen 10 days ago
    # created 300 days ago says its config; no push time: no age, and the plan says so
    unknown = plan.decision(second)
    assert (unknown.action, unknown.rule, unknown.time) == ("keep", "ageUnknown", None)
    assert "its config says created 2026-01-31, used only with ageFrom: created" in unknown.reason
    assert any(w.startswith("no push time for 1 of 2 manifests") for w in plan.warnings)
    # opted in: the config's date is the age
    by_config = RetentionRules(delete=rules.delete, guard=NO_GUARD, age_from="created")
    plan = plan_repository(REPO, collected.records, by_config, now=NOW)
    assert plan.decision(second).rule == "olderThan"
    assert plan.decision(second).reason == "deleted: tagged older than 30d (created 300d ago)"
    # the first image's config (400 days) wins over its ledger first-seen too
    assert plan.decision(first).rule == "olderThan"
    assert any("ageFrom: created: aged 2 of 2 manifests" in w for w in plan.warnings)
    ledger.close()


def test_registries_with_push_times_keep_them() -> None:
    pushed = NOW - 3 * DAY
    listing = [record(REPO, dg("ecr"), "1", pushed=pushed, created=pushed, pulled=NOW - DAY)]
    records, warnings = records_from_listing(listing, times={dg("ecr"): (NOW - 50 * DAY, None)})
    assert records[0].pushed == pushed.timestamp()
    assert records[0].created is None  # ECR's `created` is its push time again
    assert records[0].last_pulled == (NOW - DAY).timestamp()
    assert warnings == []


def test_untagged_artifacts_listed_without_a_subject_are_looked_up() -> None:
    """ECR lists OCI 1.1 referrers as untagged artifacts without their subject: without a
    lookup, an `untagged` rule would delete the signature of a kept image."""
    image, bundle, sbom_gone = dg("image"), dg("bundle"), dg("sbom-of-gone")
    untagged_image = dg("untagged-image")
    bundle_type = "application/vnd.dev.sigstore.bundle.v0.3+json"
    registry = FakeRegistry(
        {
            REPO: [
                record(REPO, image, "1.0", pushed=NOW - 90 * DAY),
                record(REPO, bundle, pushed=NOW - 90 * DAY, artifact_type=bundle_type),
                record(REPO, sbom_gone, pushed=NOW - 90 * DAY, artifact_type="text/spdx+json"),
                record(
                    REPO,
                    untagged_image,
                    pushed=NOW - 90 * DAY,
                    artifact_type="application/vnd.oci.image.config.v1+json",
                ),
            ]
        }
    )
    registry.subjects = {bundle: image, sbom_gone: dg("gone")}
    collected = collect_records(registry, REPO)
    looked = sorted(c.digests[0] for c in registry.calls if c.op == "details")
    assert looked == sorted([bundle, sbom_gone])  # images are not looked up
    assert any("untagged artifacts" in w for w in collected.warnings)
    rules = RetentionRules(
        keep=(KeepMostRecent(1),), delete=(DeleteUntagged(7 * DAY),), guard=NO_GUARD
    )
    plan = plan_repository(REPO, collected.records, rules, now=NOW)
    assert plan.decision(bundle).rule == "referrerOfKept"
    assert plan.decision(sbom_gone).role == "orphan"
    assert plan.decision(untagged_image).rule == "untagged"

    stale = registry.list_images(REPO)
    registry.gone(REPO, bundle)  # deleted between the listing and the lookup: dropped
    registry.list_images = lambda repository: stale  # type: ignore[method-assign]
    assert {r.digest for r in collect_records(registry, REPO).records} == {
        image,
        sbom_gone,
        untagged_image,
    }
