"""Pull-based retention rules and how far back pull data goes (issue #16): `pulledWithin`
and `pullCount` judge "not pulled" only where pull tracking covers the question; elsewhere
the image's pull state is unknown and it is kept. And the collection side: the ledger's
tracking start and pull tallies become the plan's `PullTracking` and the records' counts."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.retention import FakeRegistry, record

from regwarden.providers import CAP_PULL_TIMES
from regwarden.retention import (
    COMPLETE_PULLS,
    NO_PULL_TRACKING,
    DeleteOlderThan,
    Guard,
    ImageRecord,
    KeepPullCount,
    KeepPulledWithin,
    PullTracking,
    RetentionRules,
    collect_records,
    plan_registry,
    plan_repository,
)
from regwarden.store import PullTally, SqliteLedger

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = 86400.0
NO_GUARD = Guard(max_deletes=None, max_share=None)
REPO = "team/app"
_NAMES: dict[str, str] = {}


def dg(name: str) -> str:
    digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    _NAMES[digest] = name
    return digest


def rec(
    name: str, *, age: float | None, pulled: float | None = None, pulls: int | None = None
) -> ImageRecord:
    """`name`, pushed `age` days before NOW, last pulled `pulled` days before NOW."""
    now = NOW.timestamp()
    return ImageRecord(
        dg(name),
        (name,),
        None if age is None else now - age * DAY,
        None if pulled is None else now - pulled * DAY,
        1000,
        "application/vnd.oci.image.manifest.v1+json",
        pulls=pulls,
    )


def tracked(days_ago: float | None, *, registry_times: bool = False) -> PullTracking:
    since = None if days_ago is None else NOW.timestamp() - days_ago * DAY
    return PullTracking(since, registry_times)


def decide(
    records: list[ImageRecord], rule: object, tracking: PullTracking
) -> tuple[dict[str, tuple[str, str]], tuple[str, ...]]:
    """name → (action, reason) under the keep rule and a delete-everything rule."""
    rules = RetentionRules(
        keep=(rule,),  # type: ignore[arg-type]
        delete=(DeleteOlderThan(timedelta(0), tagged_only=False),),
        guard=NO_GUARD,
    )
    plan = plan_repository(REPO, records, rules, now=NOW, pull_tracking=tracking)
    return {_NAMES[d.digest]: (d.action, d.reason) for d in plan.decisions}, plan.warnings


WITHIN_30D = KeepPulledWithin(timedelta(days=30))
REPO_IMAGES = [
    rec("old-unpulled", age=200),
    rec("old-pulled", age=200, pulled=1),
    rec("new-unpulled", age=2),  # pushed after tracking began 5 days ago
    rec("undated", age=None),
]


def test_tracking_that_began_inside_the_window_keeps_images_not_seen_pulled() -> None:
    decisions, warnings = decide(REPO_IMAGES, WITHIN_30D, tracked(5))
    assert decisions["old-pulled"] == ("keep", "kept: pulled within 30d (pulled 1d ago)")
    # pushed before tracking began: no pull since then says nothing about the 25 days before
    action, reason = decisions["old-unpulled"]
    assert action == "keep"
    assert reason == (
        "kept: pulledWithin 30d cannot be judged: pull tracking began 2026-11-22 12:00 UTC, "
        "less than 30d ago (5d)"
    )
    assert decisions["undated"][0] == "keep"  # no push time: its life may predate tracking
    # its whole life is on record: not pulled is a fact
    assert decisions["new-unpulled"][0] == "delete"
    assert any(
        w.startswith("pulledWithin 30d: 2 images with no pull on record kept") for w in warnings
    )


def test_tracking_that_covers_the_window_judges_every_image() -> None:
    decisions, warnings = decide(REPO_IMAGES, WITHIN_30D, tracked(40))
    assert decisions["old-pulled"][0] == "keep"
    assert decisions["old-unpulled"][0] == "delete"
    assert decisions["new-unpulled"][0] == "delete"
    assert not any("pull state unknown" in w for w in warnings)
    # tracking that began exactly at the window's start covers it
    decisions, _ = decide(REPO_IMAGES, WITHIN_30D, tracked(30))
    assert decisions["old-unpulled"][0] == "delete"
    decisions, _ = decide(REPO_IMAGES, WITHIN_30D, tracked(29.99))
    assert decisions["old-unpulled"][0] == "keep"


def test_a_tracked_repository_nobody_pulled_is_judged_not_unknown() -> None:
    records = [rec("a", age=200), rec("b", age=100)]
    decisions, warnings = decide(records, WITHIN_30D, tracked(60))
    assert {n: a for n, (a, _) in decisions.items()} == {"a": "delete", "b": "delete"}
    assert not any("no pull times recorded" in w for w in warnings)
    # the same repository tracked for 3 days: nothing is known yet
    decisions, _ = decide(records, WITHIN_30D, tracked(3))
    assert {n: a for n, (a, _) in decisions.items()} == {"a": "keep", "b": "keep"}


def test_pulls_recorded_without_tracking_do_not_make_the_rest_look_unpulled() -> None:
    # the ledger saw one image pulled but never tracked the repository's pulls: before
    # issue #16, every other image looked never pulled, and was deleted
    decisions, warnings = decide(REPO_IMAGES, WITHIN_30D, NO_PULL_TRACKING)
    assert decisions["old-pulled"][0] == "keep"
    assert decisions["old-unpulled"] == (
        "keep",
        "kept: pulledWithin 30d cannot be judged: pulls of this repository are not tracked: "
        "no pull-tracking record",
    )
    assert decisions["new-unpulled"][0] == "keep"
    assert any("3 images with no pull on record kept" in w for w in warnings)
    # an image pulled once, before the window, is as unknown as one never seen pulled
    decisions, _ = decide([rec("stale", age=200, pulled=45)], WITHIN_30D, NO_PULL_TRACKING)
    assert decisions["stale"][0] == "keep"


def test_no_pull_data_at_all_still_follows_unknown() -> None:
    records = [rec("a", age=200), rec("b", age=100)]
    decisions, warnings = decide(records, WITHIN_30D, NO_PULL_TRACKING)
    assert all("no pull times recorded" in r for _, r in decisions.values())
    ignore = KeepPulledWithin(timedelta(days=30), unknown="ignore")
    decisions, warnings = decide(records, ignore, NO_PULL_TRACKING)
    assert {a for a, _ in decisions.values()} == {"delete"}
    assert any("rule ignored (unknown: ignore)" in w for w in warnings)


def test_registry_pull_times_are_complete_whatever_the_ledger_tracked() -> None:
    # ECR keeps last-pulled times itself: the ledger's recent tracking start limits nothing
    decisions, _ = decide(REPO_IMAGES, WITHIN_30D, tracked(5, registry_times=True))
    assert decisions["old-unpulled"][0] == "delete"
    assert decisions["old-pulled"][0] == "keep"
    # and a plan told nothing treats pull data as complete, as before tracking existed
    for tracking in (COMPLETE_PULLS, tracked(None, registry_times=True)):
        decisions, _ = decide(REPO_IMAGES, WITHIN_30D, tracking)
        assert decisions["old-unpulled"][0] == "delete"


def test_pull_counts_are_complete_only_for_images_pushed_after_tracking_began() -> None:
    records = [
        rec("old-few", age=200, pulls=3),
        rec("old-many", age=200, pulls=12),
        rec("new-few", age=2, pulls=3),
        rec("new-none", age=1, pulls=0),
        rec("undated", age=None, pulls=0),
    ]
    decisions, warnings = decide(records, KeepPullCount(10), tracked(5))
    assert decisions["old-many"] == ("keep", "kept: pulled 12 times (at least 10)")
    assert decisions["old-few"] == (
        "keep",
        "kept: pullCount 10 cannot be judged: 3 pulls counted, pushed before pull tracking "
        "began 2026-11-22 12:00 UTC",
    )
    assert decisions["undated"][0] == "keep"
    assert decisions["new-few"][0] == "delete"
    assert decisions["new-none"][0] == "delete"
    assert any(
        w.startswith("pullCount 10: 2 images with fewer pulls on record kept") for w in warnings
    )
    # counts the ledger keeps without a tracking record: nothing below the bar is known
    decisions, _ = decide(records, KeepPullCount(10), NO_PULL_TRACKING)
    assert decisions["new-none"][0] == "keep"
    # counts taken as complete (no tracking told): as before
    decisions, _ = decide(records, KeepPullCount(10), COMPLETE_PULLS)
    assert decisions["old-few"][0] == "delete"


def test_plan_registry_takes_each_repositorys_tracking() -> None:
    records = [rec("old-unpulled", age=200), rec("old-pulled", age=200, pulled=1)]
    rules = RetentionRules(
        keep=(WITHIN_30D,),
        delete=(DeleteOlderThan(timedelta(0), tagged_only=False),),
        guard=NO_GUARD,
    )
    plan = plan_registry(
        {"fresh": records, "covered": records, "told-nothing": records},
        rules,
        now=NOW,
        pull_tracking={"fresh": tracked(5), "covered": tracked(40)},
    )
    deleted = {p.repository: p.images_deleted for p in plan.plans}
    assert deleted == {"covered": 1, "fresh": 0, "told-nothing": 1}


# -- collection: the ledger's tracking and tallies --------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> SqliteLedger:
    led = SqliteLedger(tmp_path / "ledger.db")
    yield led  # type: ignore[misc]
    led.close()


def test_collect_reads_tracking_and_counts_from_the_ledger(ledger: SqliteLedger) -> None:
    a, b, c = dg("a"), dg("b"), dg("c")
    listing = {REPO: [record(REPO, a, "1"), record(REPO, b, "2"), record(REPO, c, "3")]}
    registry = FakeRegistry(listing)
    host = registry.host
    collected = collect_records(registry, REPO, ledger=ledger)
    # nothing tracked, nothing counted
    assert collected.pull_tracking == PullTracking(None, False)
    assert [r.pulls for r in collected.records] == [None, None, None]

    began = NOW - timedelta(days=3)
    ledger.start_pull_tracking(host, REPO, now=began)
    ledger.record_pulls(
        [
            PullTally(host, REPO, a, "ci", NOW - timedelta(days=1), 4),
            PullTally(host, REPO, a, "", NOW - timedelta(days=2), 2),
            PullTally(host, REPO, b, "ci", NOW - timedelta(hours=1), 1),
            PullTally(host, "other", c, "ci", NOW, 9),
        ]
    )
    collected = collect_records(registry, REPO, ledger=ledger)
    assert collected.pull_tracking == PullTracking(began.timestamp(), False)
    by_digest = {r.digest: r for r in collected.records}
    assert {d: r.pulls for d, r in by_digest.items()} == {a: 6, b: 1, c: 0}
    assert by_digest[a].last_pulled == (NOW - timedelta(days=1)).timestamp()
    assert by_digest[c].last_pulled is None

    class PullTimesRegistry(FakeRegistry):
        capabilities = frozenset({CAP_PULL_TIMES})

    ecr_like = collect_records(PullTimesRegistry(listing), REPO, ledger=ledger)
    assert ecr_like.pull_tracking == PullTracking(began.timestamp(), True)
    assert collect_records(registry, REPO, ledger=None).pull_tracking == PullTracking(None)
