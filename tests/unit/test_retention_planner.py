"""The planner: rules combined, protections, indexes and referrers, guard rails, registry
runs, determinism, idempotency and rendering, with a fixed `now`."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from regwarden.errors import InvalidReference, UsageError
from regwarden.retention import (
    DeleteOlderThan,
    DeleteOrphans,
    DeleteQuarantineExpired,
    DeleteUntagged,
    Guard,
    ImageRecord,
    KeepMostRecent,
    KeepPulledWithin,
    KeepSemver,
    KeepTagMatches,
    Protections,
    RepositoryPlan,
    RetentionRules,
    plan_markdown,
    plan_registry,
    plan_repository,
    plan_table,
    plan_to_dict,
    protections_from_refs,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = 86400.0
NO_GUARD = Guard(max_deletes=None, max_share=None)
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"

_NAMES: dict[str, str] = {}


def dg(name: str) -> str:
    digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    _NAMES[digest] = name
    return digest


def nm(digest: str) -> str:
    return _NAMES[digest]


def sig_tag(subject: str, kind: str = "sig") -> str:
    return f"sha256-{dg(subject)[7:]}.{kind}"


def rec(
    name: str,
    *tags: str,
    age: float | None = 1,
    pulled: float | None = None,
    size: int = 1000,
    children: tuple[str, ...] = (),
    subject: str | None = None,
) -> ImageRecord:
    now = NOW.timestamp()
    return ImageRecord(
        digest=dg(name),
        tags=tags,
        pushed=None if age is None else now - age * DAY,
        last_pulled=None if pulled is None else now - pulled * DAY,
        size=size,
        media_type=INDEX if children else MANIFEST,
        children=tuple(dg(c) for c in children),
        subject=None if subject is None else dg(subject),
    )


def outcome(plan: RepositoryPlan) -> dict[str, tuple[str, str]]:
    """name → (action, rule) for every decision."""
    return {nm(d.digest): (d.action, d.rule) for d in plan.decisions}


def reasons(plan: RepositoryPlan) -> dict[str, str]:
    return {nm(d.digest): d.reason for d in plan.decisions}


# The policy contract's example section, as the adapter would build it.
CONTRACT = RetentionRules(
    keep=(
        KeepMostRecent(10),
        KeepSemver(majors=3, minors_per_major=2, patches_per_minor=1),
        KeepPulledWithin(timedelta(days=30)),
        KeepTagMatches("^release-"),
    ),
    delete=(DeleteUntagged(timedelta(days=7)), DeleteOlderThan(timedelta(days=180))),
    guard=Guard(max_deletes=500, max_share=0.5),
)


def test_contract_example_policy_on_a_mixed_repository() -> None:
    records = [rec(f"new{i}", f"build-{i}", age=200 + i) for i in range(10)]  # the 10 newest tagged
    records += [
        rec("old-build", "build-old", age=300),  # 11th most recent, nothing keeps it
        rec("v4", "4.0.0", age=400),
        rec("v3", "v3.1.0", age=401),
        rec("v3-old", "v3.0.0", age=402),
        rec("v2", "2.0.0", age=403),
        rec("v1", "1.0.0", age=404),  # 4th major: not kept by semver
        rec("rel", "release-2024", age=500),
        rec("pulled", "build-x", age=600, pulled=3),
        rec("fresh-untagged", age=2),
        rec("stale-untagged", age=9),
        rec("a", "a", age=1000),
        rec("b", "b", age=1000),
        rec("c", "c", age=1000),
        rec("d", "d", age=1000),
        rec("e", "e", age=1000),
        rec("f", "f", age=1000),
        rec("g", "g", age=1000),
        rec("h", "h", age=1000),
        rec("i", "i", age=1000),
    ]
    plan = plan_repository("payments/api", records, CONTRACT, now=NOW)
    got = outcome(plan)
    for i in range(10):
        assert got[f"new{i}"] == ("keep", "mostRecent")
    assert reasons(plan)["new1"] == "kept: 10 most recent (rank 2)"
    assert got["old-build"] == ("delete", "olderThan")
    assert reasons(plan)["old-build"] == "deleted: tagged older than 180d (pushed 300d ago)"
    assert {k: got[k] for k in ("v4", "v3", "v3-old", "v2", "v1")} == {
        "v4": ("keep", "semver"),
        "v3": ("keep", "semver"),
        "v3-old": ("keep", "semver"),
        "v2": ("keep", "semver"),
        "v1": ("delete", "olderThan"),
    }
    assert got["rel"] == ("keep", "tagMatches")
    assert got["pulled"] == ("keep", "pulledWithin")
    assert reasons(plan)["pulled"] == "kept: pulled within 30d (pulled 3d ago)"
    assert got["fresh-untagged"] == ("keep", "default")
    assert got["stale-untagged"] == ("delete", "untagged")
    assert reasons(plan)["stale-untagged"] == "deleted: untagged older than 7d (pushed 9d ago)"
    deleted = {k for k, (action, _) in got.items() if action == "delete"}
    assert deleted == {"old-build", "v1", "stale-untagged", *"abcdefghi"}
    assert plan.images_deleted == 12 and plan.images_kept == len(records) - 12
    assert plan.bytes_freed == 12 * 1000 and plan.bytes_kept == (len(records) - 12) * 1000
    assert not plan.tripped and plan.warnings == ()


def test_keep_always_wins_and_first_keep_rule_explains() -> None:
    records = [rec("x", "release-1", "1.0.0", age=1000)]
    rules = RetentionRules(
        keep=(KeepTagMatches("^release-"), KeepSemver()),
        delete=(DeleteOlderThan(timedelta(days=1)),),
        guard=NO_GUARD,
    )
    plan = plan_repository("r", records, rules, now=NOW)
    assert outcome(plan) == {"x": ("keep", "tagMatches")}


def test_a_tag_match_protects_the_whole_image_with_all_its_tags() -> None:
    records = [rec("x", "pr-17", "release-3", "tmp", age=1000)]
    rules = RetentionRules(
        keep=(KeepTagMatches("^release-"),), delete=(DeleteOlderThan(timedelta(days=1)),)
    )
    plan = plan_repository("r", records, rules, now=NOW)
    assert plan.images_deleted == 0 and plan.decisions[0].tags == ("pr-17", "release-3", "tmp")


# -- indexes and their children -----------------------------------------------------------------


UNTAGGED_7D = RetentionRules(
    keep=(KeepTagMatches("^v"),),
    delete=(DeleteUntagged(timedelta(days=7)), DeleteOlderThan(timedelta(days=90))),
    guard=NO_GUARD,
)


def test_multi_arch_index_keeps_its_untagged_children() -> None:
    records = [
        rec("idx", "v1", age=100, children=("amd64", "arm64")),
        rec("amd64", age=100),
        rec("arm64", age=100),
        rec("loose", age=100),
    ]
    plan = plan_repository("r", records, UNTAGGED_7D, now=NOW)
    got = outcome(plan)
    assert got == {
        "idx": ("keep", "tagMatches"),
        "amd64": ("keep", "childOfKept"),
        "arm64": ("keep", "childOfKept"),
        "loose": ("delete", "untagged"),
    }
    assert reasons(plan)["amd64"] == f"kept: child of kept index {dg('idx')}"
    roles = {nm(d.digest): d.role for d in plan.decisions}
    assert roles == {"idx": "image", "amd64": "child", "arm64": "child", "loose": "image"}


def test_deleting_an_index_deletes_its_children_after_it() -> None:
    records = [
        rec("idx", "old", age=100, children=("amd64", "arm64", "absent")),
        rec("amd64", age=100),
        rec("arm64", age=100),
    ]
    plan = plan_repository("r", records, UNTAGGED_7D, now=NOW)
    assert outcome(plan) == {
        "idx": ("delete", "olderThan"),
        "amd64": ("delete", "childOfDeleted"),
        "arm64": ("delete", "childOfDeleted"),
    }
    assert reasons(plan)["arm64"] == f"deleted: child of deleted index {dg('idx')}"
    assert plan.delete_order[0] == dg("idx")


def test_a_child_shared_with_a_kept_index_stays() -> None:
    records = [
        rec("old-idx", "old", age=100, children=("shared", "only-old")),
        rec("new-idx", "v2", age=1, children=("shared",)),
        rec("shared", age=100),
        rec("only-old", age=100),
    ]
    got = outcome(plan_repository("r", records, UNTAGGED_7D, now=NOW))
    assert got["shared"] == ("keep", "childOfKept")
    assert got["only-old"] == ("delete", "childOfDeleted")
    assert got["old-idx"] == ("delete", "olderThan")


def test_a_tagged_child_is_an_image_but_a_kept_index_still_protects_it() -> None:
    records = [
        rec("idx", "v1", age=100, children=("amd64",)),
        rec("amd64", "amd64-only", age=100),
        rec("idx2", "gone", age=100, children=("arm64",)),
        rec("arm64", "v-arm", age=100),
    ]
    got = outcome(plan_repository("r", records, UNTAGGED_7D, now=NOW))
    assert got["amd64"] == ("keep", "childOfKept")  # olderThan selected it; the index wins
    assert got["idx2"] == ("delete", "olderThan")
    assert got["arm64"] == ("keep", "tagMatches")  # its own tag keeps it, index or not


def test_children_of_an_index_do_not_use_up_most_recent() -> None:
    records = [
        rec("idx", "latest", age=1, children=("c1", "c2")),
        rec("c1", age=0.5),
        rec("c2", age=0.5),
        rec("older", "v0", age=2),
    ]
    rules = RetentionRules(keep=(KeepMostRecent(2),), delete=(DeleteOlderThan(timedelta(0)),))
    got = outcome(plan_repository("r", records, rules, now=NOW))
    assert got["idx"] == ("keep", "mostRecent") and got["older"] == ("keep", "mostRecent")


def test_nested_indexes_are_kept_and_deleted_as_a_tree() -> None:
    records = [
        rec("top", "v1", age=50, children=("mid",)),
        rec("mid", age=50, children=("leaf",)),
        rec("leaf", age=50),
        rec("top2", "x", age=500, children=("mid2",)),
        rec("mid2", age=500, children=("leaf2",)),
        rec("leaf2", age=500),
    ]
    plan = plan_repository("r", records, UNTAGGED_7D, now=NOW)
    got = outcome(plan)
    assert got["mid"] == got["leaf"] == ("keep", "childOfKept")
    assert got["mid2"] == got["leaf2"] == ("delete", "childOfDeleted")
    order = [nm(d) for d in plan.delete_order]
    assert order.index("top2") < order.index("mid2") < order.index("leaf2")


# -- referrers: signatures, attestations, SBOMs ----------------------------------------------------


def test_signatures_follow_their_image() -> None:
    records = [
        rec("img", "v1", age=100),
        rec("img-sig", sig_tag("img"), age=100),
        rec("img-att", sig_tag("img", "att"), age=100),
        rec("img-sbom", age=100, subject="img"),  # OCI 1.1 referrer
        rec("old", "old", age=100),
        rec("old-sig", sig_tag("old"), age=100),
        rec("old-ref", age=100, subject="old"),
        rec("ref-of-ref", age=100, subject="old-ref"),  # a signature of the SBOM
    ]
    plan = plan_repository("r", records, UNTAGGED_7D, now=NOW)
    got = outcome(plan)
    assert got == {
        "img": ("keep", "tagMatches"),
        "img-sig": ("keep", "referrerOfKept"),
        "img-att": ("keep", "referrerOfKept"),
        "img-sbom": ("keep", "referrerOfKept"),
        "old": ("delete", "olderThan"),
        "old-sig": ("delete", "referrerOfDeleted"),
        "old-ref": ("delete", "referrerOfDeleted"),
        "ref-of-ref": ("delete", "referrerOfDeleted"),
    }
    assert reasons(plan)["old-sig"] == f"deleted: referrer of deleted {dg('old')}"
    order = [nm(d) for d in plan.delete_order]
    assert order.index("ref-of-ref") < order.index("old-ref") < order.index("old")
    assert order.index("old-sig") < order.index("old")


def test_signatures_do_not_count_as_images_and_tag_rules_ignore_them() -> None:
    records = [
        rec("img", "v1", age=3),
        rec("sig", sig_tag("img"), age=1),
        rec("img2", "v2", age=2),
    ]
    rules = RetentionRules(
        keep=(KeepMostRecent(1), KeepTagMatches("^sha256-")),
        delete=(DeleteOlderThan(timedelta(0)),),
        guard=NO_GUARD,
    )
    got = outcome(plan_repository("r", records, rules, now=NOW))
    assert got == {
        "sig": ("delete", "referrerOfDeleted"),
        "img2": ("keep", "mostRecent"),
        "img": ("delete", "olderThan"),
    }


ORPHANS = RetentionRules(
    keep=(KeepMostRecent(5),),
    delete=(DeleteUntagged(timedelta(days=7)), DeleteOrphans(timedelta(days=1))),
    guard=NO_GUARD,
)


def test_a_signature_whose_subject_was_deleted_is_an_orphan() -> None:
    records = [
        rec("img", "v1", age=10),
        rec("orphan-sig", sig_tag("deleted-long-ago"), age=40),
        rec("orphan-ref", age=40, subject="also-gone"),
        rec("young-orphan", age=0.5, subject="gone-too"),
    ]
    plan = plan_repository("r", records, ORPHANS, now=NOW)
    got = outcome(plan)
    assert got == {
        "img": ("keep", "mostRecent"),
        "orphan-sig": ("delete", "orphans"),
        "orphan-ref": ("delete", "orphans"),
        "young-orphan": ("keep", "default"),
    }
    assert reasons(plan)["orphan-sig"] == (
        f"deleted: orphaned referrer (subject {dg('deleted-long-ago')} is not in the "
        "repository, pushed 40d ago)"
    )
    assert reasons(plan)["young-orphan"] == "kept: orphan not older than 1d (orphans rule)"
    assert {nm(d.digest): d.role for d in plan.decisions}["orphan-ref"] == "orphan"


def test_orphans_stay_without_an_orphans_rule() -> None:
    records = [rec("img", "v1", age=10), rec("orphan", age=40, subject="gone")]
    rules = RetentionRules(delete=(DeleteUntagged(timedelta(days=7)),), guard=NO_GUARD)
    plan = plan_repository("r", records, rules, now=NOW)
    assert outcome(plan)["orphan"] == ("keep", "default")
    assert "no orphans rule" in reasons(plan)["orphan"]


def test_a_signature_only_repository_is_left_alone() -> None:
    records = [rec(f"sig{i}", sig_tag(f"elsewhere{i}"), age=100) for i in range(3)]
    plan = plan_repository("sigs/api", records, ORPHANS, now=NOW)
    assert plan.images_deleted == 0
    assert any("signature repository?" in w for w in plan.warnings)


# -- protections ------------------------------------------------------------------------------


OLD_DIES = RetentionRules(
    delete=(DeleteUntagged(timedelta(days=7)), DeleteOlderThan(timedelta(days=30))),
    guard=NO_GUARD,
)


@pytest.mark.parametrize(
    ("protections", "expected"),
    [
        (Protections(in_use=frozenset({dg("old")})), ("keep", "inUse", "kept: in use")),
        (
            Protections(in_use_tags=frozenset({"v0.1"})),
            ("keep", "inUse", "kept: in use as tag 'v0.1'"),
        ),
        (
            Protections(locked=frozenset({dg("old")})),
            ("keep", "locked", "kept: locked on the registry"),
        ),
        (
            Protections(quarantined={dg("old"): NOW - timedelta(days=400)}),
            ("keep", "quarantined", "kept: quarantined until released"),
        ),
        (Protections(in_use=frozenset({dg("other")})), ("delete", "olderThan", None)),
        (Protections(in_use_tags=frozenset({"latest"})), ("delete", "olderThan", None)),
    ],
    ids=["digest", "tag", "locked", "quarantined", "other-digest", "other-tag"],
)
def test_an_in_use_digest_under_an_old_tag_is_kept(
    protections: Protections, expected: tuple[str, str, str | None]
) -> None:
    records = [rec("old", "v0.1", age=400), rec("new", "latest", age=1)]
    plan = plan_repository("r", records, OLD_DIES, now=NOW, protections=protections)
    decision = plan.decision(dg("old"))
    assert (decision.action, decision.rule) == expected[:2]
    if expected[2] is not None:
        assert decision.reason == expected[2]


def test_an_in_use_index_keeps_its_children_and_signatures() -> None:
    records = [
        rec("idx", "old", age=400, children=("c1",)),
        rec("c1", age=400),
        rec("sig", sig_tag("idx"), age=400),
    ]
    plan = plan_repository(
        "r", records, OLD_DIES, now=NOW, protections=Protections(in_use=frozenset({dg("idx")}))
    )
    assert outcome(plan) == {
        "idx": ("keep", "inUse"),
        "c1": ("keep", "childOfKept"),
        "sig": ("keep", "referrerOfKept"),
    }


def test_an_in_use_child_survives_its_deleted_index() -> None:
    records = [
        rec("idx", "old", age=400, children=("c1", "c2")),
        rec("c1", age=400),
        rec("c2", age=400),
    ]
    plan = plan_repository(
        "r", records, OLD_DIES, now=NOW, protections=Protections(in_use=frozenset({dg("c1")}))
    )
    assert outcome(plan) == {
        "idx": ("delete", "olderThan"),
        "c1": ("keep", "inUse"),
        "c2": ("delete", "childOfDeleted"),
    }


def test_a_protected_referrer_keeps_its_subject() -> None:
    records = [rec("img", "old", age=400), rec("att", age=400, subject="img")]
    plan = plan_repository(
        "r", records, OLD_DIES, now=NOW, protections=Protections(locked=frozenset({dg("att")}))
    )
    assert outcome(plan) == {"img": ("keep", "subjectOfKept"), "att": ("keep", "locked")}
    assert reasons(plan)["img"] == f"kept: subject of kept referrer {dg('att')}"


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (NOW - timedelta(days=31), ("delete", "quarantineExpired")),
        (NOW - timedelta(days=29), ("keep", "quarantined")),
        (None, ("keep", "quarantined")),  # unknown quarantine time never expires
    ],
    ids=["expired", "not-yet", "unknown"],
)
def test_quarantine_expiry(since: datetime | None, expected: tuple[str, str]) -> None:
    records = [rec("q", age=40), rec("q-sig", sig_tag("q"), age=40), rec("fine", "v1", age=40)]
    rules = RetentionRules(delete=(DeleteQuarantineExpired(timedelta(days=30)),), guard=NO_GUARD)
    plan = plan_repository(
        "quarantine/api",
        records,
        rules,
        now=NOW,
        protections=Protections(quarantined={dg("q"): since}),
    )
    got = outcome(plan)
    assert got["q"] == expected
    assert got["q-sig"][0] == expected[0]
    assert got["fine"] == ("keep", "default")
    if expected[0] == "delete":
        assert reasons(plan)["q"] == "deleted: quarantined longer than 30d (since 31d ago)"


def test_protections_from_refs() -> None:
    digest = dg("running")
    got = protections_from_refs(
        [
            "reg.example.com/team/api:1.2",
            f"reg.example.com/team/api@{digest}",
            f"reg.example.com/team/api:prod@{digest}",
            "reg.example.com/team/web",
            "other.example.com/team/api:9.9",
        ],
        registry="reg.example.com",
    )
    assert set(got) == {"team/api", "team/web"}
    assert got["team/api"].in_use == {digest} and got["team/api"].in_use_tags == {"1.2"}
    assert got["team/web"].in_use_tags == {"latest"}
    with pytest.raises(InvalidReference):
        protections_from_refs(["reg.example.com/Team/API:1"])


# -- guard rails -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("guard", "trip"),
    [
        (Guard(max_deletes=3, max_share=None), ("maxDeletes 3", 3)),
        (Guard(max_deletes=None, max_share=0.5), ("maxShare 0.5", 5)),
        (Guard(max_deletes=4, max_share=0.3), ("maxShare 0.3", 3)),  # the stricter limit
        (Guard(max_deletes=6, max_share=0.6), None),
        (Guard(max_deletes=None, max_share=None), None),
    ],
    ids=["count", "share", "both-stricter-share", "within", "off"],
)
def test_guard_rails(guard: Guard, trip: tuple[str, int] | None) -> None:
    records = [rec(f"old{i}", age=30) for i in range(6)] + [
        rec(f"new{i}", "v", age=1) for i in range(4)
    ]
    rules = RetentionRules(delete=(DeleteUntagged(timedelta(days=7)),), guard=guard)
    plan = plan_repository("r", records, rules, now=NOW)
    if trip is None:
        assert not plan.tripped and plan.images_deleted == 6
        return
    assert plan.trip is not None
    assert (plan.trip.guard, plan.trip.limit) == trip
    assert (plan.trip.selected, plan.trip.population, plan.trip.bytes) == (6, 10, 6000)
    assert plan.images_deleted == 0 and plan.deletions == () and plan.delete_order == ()
    assert plan.bytes_freed == 0 and plan.images_kept == 10
    old = plan.decision(dg("old0"))
    assert old.action == "keep" and old.rule == "guard"
    assert old.reason == (
        f"kept: {trip[0]} tripped; would have been deleted: untagged older than 7d (pushed 30d ago)"
    )
    assert plan.warnings[-1] == (
        f"guard tripped ({trip[0]}): 6 of 10 selected for deletion, limit {trip[1]}; "
        "nothing will be deleted"
    )


def test_default_guard_share_protects_small_repositories() -> None:
    rules = RetentionRules(delete=(DeleteUntagged(timedelta(days=7)),))
    plan = plan_repository("r", [rec("only", age=30)], rules, now=NOW)
    assert plan.tripped and plan.images_deleted == 0


def test_run_wide_guard_in_plan_registry() -> None:
    repos = {
        f"team/r{i}": [rec(f"r{i}-old{j}", age=30) for j in range(2)]
        + [rec(f"r{i}-new", "v", age=1)]
        for i in range(3)
    }
    rules = RetentionRules(delete=(DeleteUntagged(timedelta(days=7)),), guard=Guard(max_share=1))
    ok = plan_registry(repos, rules, now=NOW, max_deletes=6)
    assert not ok.tripped and ok.images_deleted == 6
    tripped = plan_registry(repos, rules, now=NOW, max_deletes=5)
    assert tripped.trip is not None and tripped.tripped
    assert (tripped.trip.scope, tripped.trip.selected, tripped.trip.limit) == ("run", 6, 5)
    assert tripped.images_deleted == 0 and tripped.bytes_freed == 0
    assert all(p.trip == tripped.trip for p in tripped.plans)
    with pytest.raises(UsageError, match="max_deletes"):
        plan_registry(repos, rules, now=NOW, max_deletes=-1)


# -- registry runs, determinism, idempotency --------------------------------------------------


def test_plan_registry_per_repository_rules_protections_and_skips() -> None:
    repos = {
        "team/api": [rec("api-old", "v1", age=400), rec("api-new", "v2", age=1)],
        "team/web": [rec("web-old", "v1", age=400), rec("web-new", "v2", age=1)],
        "scratch/tmp": [rec("tmp", age=400)],
    }
    rules = RetentionRules(delete=(DeleteOlderThan(timedelta(days=30)),), guard=NO_GUARD)
    plan = plan_registry(
        repos,
        lambda name: rules if name.startswith("team/") else None,
        now=NOW,
        protections={"team/web": Protections(in_use=frozenset({dg("web-old")}))},
    )
    assert [p.repository for p in plan.plans] == ["team/api", "team/web"]
    assert plan.skipped == ("scratch/tmp",)
    assert outcome(plan.plan("team/api"))["api-old"] == ("delete", "olderThan")
    assert outcome(plan.plan("team/web"))["web-old"] == ("keep", "inUse")
    assert (plan.images_deleted, plan.images_kept) == (1, 3)
    shared = plan_registry(
        repos, rules, now=NOW, protections=Protections(in_use=frozenset({dg("api-old")}))
    )
    assert outcome(shared.plan("team/api"))["api-old"] == ("keep", "inUse")
    with pytest.raises(KeyError, match="got repository 'nope'"):
        plan.plan("nope")


def _messy_repository() -> list[ImageRecord]:
    rng = random.Random(1234)
    records: list[ImageRecord] = []
    for i in range(60):
        tags: tuple[str, ...] = ()
        roll = rng.random()
        if roll < 0.4:
            tags = (f"{rng.randint(0, 3)}.{rng.randint(0, 3)}.{rng.randint(0, 3)}",)
        elif roll < 0.6:
            tags = (f"build-{i}",)
        children = (f"m{i}-a", f"m{i}-b") if rng.random() < 0.2 else ()
        records.append(
            rec(f"m{i}", *tags, age=rng.choice([1, 5, 10, 100, 100, 400]), children=children)
        )
        records += [rec(c, age=100) for c in children]
        if tags and rng.random() < 0.3:
            records.append(rec(f"m{i}-sig", sig_tag(f"m{i}"), age=100))
    return records


MESSY_RULES = RetentionRules(
    keep=(KeepMostRecent(5), KeepSemver(majors=2, minors_per_major=1, patches_per_minor=1)),
    delete=(
        DeleteUntagged(timedelta(days=7)),
        DeleteOlderThan(timedelta(days=50)),
        DeleteOrphans(),
    ),
    guard=NO_GUARD,
)


def test_plans_do_not_depend_on_input_order() -> None:
    records = _messy_repository()
    first = plan_repository("r", records, MESSY_RULES, now=NOW)
    shuffled = records[:]
    random.Random(99).shuffle(shuffled)
    assert plan_repository("r", shuffled, MESSY_RULES, now=NOW) == first
    times = [d.time for d in first.decisions]
    assert times == sorted(times, reverse=True)  # newest first


def test_replanning_after_applying_deletes_nothing_more() -> None:
    records = _messy_repository()
    plan = plan_repository("r", records, MESSY_RULES, now=NOW)
    assert plan.images_deleted > 0
    doomed = set(plan.delete_order)
    assert doomed == {d.digest for d in plan.deletions}
    after = [r for r in records if r.digest not in doomed]
    again = plan_repository("r", after, MESSY_RULES, now=NOW)
    assert again.images_deleted == 0


def test_duplicate_listings_are_merged_towards_keeping() -> None:
    first = rec("x", "a", age=100)
    second = rec("x", "b", age=2, pulled=1)
    rules = RetentionRules(delete=(DeleteOlderThan(timedelta(days=30)),), guard=NO_GUARD)
    plan = plan_repository("r", [first, second], rules, now=NOW)
    assert len(plan.decisions) == 1
    only = plan.decisions[0]
    assert only.tags == ("a", "b") and only.action == "keep"
    assert "1 duplicate listings merged (same digest listed again)" in plan.warnings


@pytest.mark.parametrize("now", [datetime(2026, 11, 27), "2026-11-27"])
def test_now_must_be_an_aware_datetime(now: object) -> None:
    with pytest.raises(UsageError, match="now"):
        plan_repository("r", [], MESSY_RULES, now=now)  # type: ignore[arg-type]


def test_an_empty_repository_plans_nothing() -> None:
    plan = plan_repository("r", [], CONTRACT, now=NOW)
    assert plan.decisions == () and not plan.tripped and plan.images_deleted == 0


# -- rendering -------------------------------------------------------------------------------


def test_plan_to_dict_is_json_and_complete() -> None:
    plan = plan_repository("r", _messy_repository(), MESSY_RULES, now=NOW)
    data = json.loads(json.dumps(plan_to_dict(plan)))
    assert data["repository"] == "r" and data["tripped"] is False
    assert data["totals"]["images_deleted"] == plan.images_deleted
    assert len(data["decisions"]) == len(plan.decisions)
    first = data["decisions"][0]
    assert set(first) == {"digest", "action", "rule", "reason", "tags", "size", "pushed", "role"}
    assert datetime.fromisoformat(first["pushed"]).timestamp() == plan.decisions[0].time
    assert sum(data["by_rule"]["delete"].values()) == plan.images_deleted
    assert data["delete_order"] == list(plan.delete_order)
    only = plan_to_dict(plan, only="delete")
    assert {d["action"] for d in only["decisions"]} == {"delete"}


def test_registry_plan_to_dict_and_markdown() -> None:
    repos = {"a/one": _messy_repository(), "b/two": [rec("t", age=30)]}
    plan = plan_registry(repos, MESSY_RULES, now=NOW, max_deletes=1)
    data = json.loads(json.dumps(plan_to_dict(plan)))
    assert data["tripped"] is True and data["trip"]["scope"] == "run"
    assert [r["repository"] for r in data["repositories"]] == ["a/one", "b/two"]
    md = plan_markdown(plan)
    assert md.startswith("# Retention plan") and "## a/one" in md and "## b/two" in md
    assert "guard tripped (run maxDeletes 1)" in md


def test_markdown_escapes_table_cells() -> None:
    records = [rec("x", "release-1", age=400), rec("y", "v", age=400)]
    rules = RetentionRules(
        keep=(KeepTagMatches("^(release|hotfix)-"),),
        delete=(DeleteOlderThan(timedelta(days=1)),),
        guard=NO_GUARD,
    )
    md = plan_markdown(plan_repository("r", records, rules, now=NOW))
    row = next(line for line in md.splitlines() if "release-1" in line)
    assert "'^(release\\|hotfix)-'" in row
    assert row.count(" | ") == 6  # seven cells, no pipe leaked from the regex
    assert "**delete**" in md and "**keep**" in md


def test_plan_table_renders_every_decision() -> None:
    plan = plan_repository("r", _messy_repository(), MESSY_RULES, now=NOW)
    out = io.StringIO()
    Console(file=out, width=250, color_system=None).print(plan_table(plan))
    text = out.getvalue()
    assert f"{plan.images_deleted} to delete" in text
    for d in plan.decisions[:5]:
        assert d.digest[:19] in text
    deletes = io.StringIO()
    Console(file=deletes, width=250, color_system=None).print(plan_table(plan, only="delete"))
    rows = [line for line in deletes.getvalue().splitlines() if line.startswith("│ sha256:")]
    assert len(rows) == plan.images_deleted
    assert all(" delete " in row for row in rows)


def test_planning_restores_the_garbage_collector_state() -> None:
    records = _messy_repository()
    assert gc.isenabled()
    plan_repository("r", records, MESSY_RULES, now=NOW)
    assert gc.isenabled()
    gc.disable()
    try:
        plan_registry({"r": records}, MESSY_RULES, now=NOW)
        assert not gc.isenabled()
    finally:
        gc.enable()
