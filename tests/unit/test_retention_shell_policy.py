"""The policy's `retention` section: the new keys, their errors, and the adapter to the
planner's rule types (checked by planning with the adapted rules, not by field copies)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from regwarden.policy import load_policy_text, validate_text
from regwarden.retention import (
    DeleteOlderThan,
    DeleteOrphans,
    DeleteQuarantineExpired,
    DeleteUntagged,
    Guard,
    ImageRecord,
    KeepMostRecent,
    KeepPullCount,
    KeepPulledWithin,
    KeepPushedWithin,
    KeepSemver,
    KeepTagMatches,
    plan_repository,
    retention_rules,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HEAD = "apiVersion: regwarden/v1\nkind: Policy\n"


def policy(retention: str) -> str:
    body = "\n".join("    " + line for line in retention.strip().splitlines())
    return HEAD + "defaults:\n  retention:\n" + body + "\n"


def rules(retention: str):  # type: ignore[no-untyped-def]
    effective = load_policy_text(
        policy(retention), source="test.yaml", base_dir="/tmp"
    ).for_repository("team/api")
    return retention_rules(effective)


def dg(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def rec(name: str, *tags: str, days: float, pulled: float | None = None) -> ImageRecord:
    return ImageRecord.of(
        dg(name),
        tags=tags,
        pushed=NOW - timedelta(days=days),
        last_pulled=None if pulled is None else NOW - timedelta(days=pulled),
    )


def test_every_key_in_both_forms_becomes_the_planner_rule() -> None:
    got = rules(
        """
keep:
  - mostRecent: 10
  - mostRecent: {count: 3, by: pull, taggedOnly: false}
  - semver: {majors: 2, minorsPerMajor: 1, prereleases: 2}
  - pulledWithin: 30d
  - pulledWithin: {within: 7d, unknown: ignore}
  - tagMatches: "^release-"
  - tagMatches: {include: "^v", exclude: "-debug$"}
  - pushedWithin: 3d
  - pullCount: {min: 5}
  - pullCount: {min: 2, unknown: ignore}
delete:
  - untagged: {olderThan: 7d}
  - olderThan: 180d
  - orphans: {}
  - quarantineExpired: {after: 90d}
guard: {maxDeletes: 500, maxShare: 0.25}
"""
    )
    assert got is not None
    assert got.keep == (
        KeepMostRecent(10),
        KeepMostRecent(3, by="pull", tagged_only=False),
        KeepSemver(majors=2, minors_per_major=1, prereleases=2),
        KeepPulledWithin(timedelta(days=30)),
        KeepPulledWithin(timedelta(days=7), unknown="ignore"),
        KeepTagMatches(include="^release-"),
        KeepTagMatches(include="^v", exclude="-debug$"),
        KeepPushedWithin(timedelta(days=3)),
        KeepPullCount(5),
        KeepPullCount(2, unknown="ignore"),
    )
    assert got.delete == (
        DeleteUntagged(timedelta(days=7)),
        DeleteOlderThan(timedelta(days=180), tagged_only=True),
        DeleteOrphans(timedelta(0)),
        DeleteQuarantineExpired(timedelta(days=90)),
    )
    assert got.guard == Guard(max_deletes=500, max_share=0.25)


def test_no_retention_section_means_no_rules_and_default_guard_when_omitted() -> None:
    none = load_policy_text(HEAD, source="test.yaml", base_dir="/tmp").for_repository("team/api")
    assert retention_rules(none) is None
    got = rules("delete: [{untagged: {olderThan: 7d}}]")
    assert got is not None and got.guard == Guard(max_deletes=100, max_share=0.5)


def test_older_than_deletes_tagged_images_only() -> None:
    """The contract's comment: `olderThan` is "delete tagged older than"; untagged images
    are the `untagged` rule's business."""
    adapted = rules("delete: [{olderThan: 30d}]\nguard: {maxShare: 1}")
    assert adapted is not None
    records = [rec("old-tagged", "1.0", days=90), rec("old-untagged", days=90)]
    plan = plan_repository("team/api", records, adapted, now=NOW)
    assert plan.decision(dg("old-tagged")).action == "delete"
    assert plan.decision(dg("old-tagged")).rule == "olderThan"
    assert plan.decision(dg("old-untagged")).action == "keep"


def test_age_from_defaults_to_pushed_and_created_is_opt_in() -> None:
    """`ageFrom` reaches the planner: by default a config `created` is no age; with
    `ageFrom: created` it is."""
    default = rules("delete: [{olderThan: 30d}]\nguard: {maxShare: 1}")
    opted = rules("ageFrom: created\ndelete: [{olderThan: 30d}]\nguard: {maxShare: 1}")
    assert default is not None and opted is not None
    assert (default.age_from, opted.age_from) == ("pushed", "created")
    reproducible = ImageRecord.of(
        dg("repro"), tags=["1.0"], pushed=NOW - timedelta(minutes=1), created=0.0
    )
    assert plan_repository("team/api", [reproducible], default, now=NOW).images_deleted == 0
    deleted = plan_repository("team/api", [reproducible], opted, now=NOW)
    assert deleted.decision(reproducible.digest).rule == "olderThan"


def test_adapted_rules_plan_as_written() -> None:
    """pulledWithin with `unknown: ignore` lets olderThan act in a repository with no
    pull data; tagMatches' exclude lets a `-debug` release go; mostRecent by pull."""
    adapted = rules(
        """
keep:
  - tagMatches: {include: "^release-", exclude: "-debug$"}
  - pulledWithin: {within: 7d, unknown: ignore}
delete:
  - olderThan: 30d
guard: {maxShare: 1}
"""
    )
    assert adapted is not None
    records = [
        rec("release", "release-1", days=90),
        rec("debug", "release-1-debug", days=90),
        rec("other", "x", days=90),
    ]
    plan = plan_repository("team/api", records, adapted, now=NOW)
    assert [(d.digest, d.action) for d in plan.decisions if d.action == "keep"] == [
        (dg("release"), "keep")
    ]
    assert any("rule ignored" in w for w in plan.warnings)

    by_pull = rules("keep: [{mostRecent: {count: 1, by: pull}}]\ndelete: [{olderThan: 1d}]")
    assert by_pull is not None
    pulled = [rec("a", "a", days=10, pulled=5), rec("b", "b", days=9, pulled=1)]
    plan = plan_repository("team/api", pulled, by_pull, now=NOW)
    assert plan.decision(dg("b")).rule == "mostRecent"
    assert plan.decision(dg("a")).action == "delete"


@pytest.mark.parametrize(
    ("retention", "path", "message"),
    [
        ("keep: [{mostRecent: 0}]", "keep[0].mostRecent", "greater than or equal to 1"),
        ("keep: [{mostRecent: {count: 2, by: pulls}}]", "keep[0].mostRecent.by", "'push' or"),
        ("keep: [{mostRecent: {count: 2, top: 1}}]", "keep[0].mostRecent.top", "valid keys: count"),
        ("keep: [{tagMatches: {}}]", "keep[0].tagMatches", "neither include nor exclude"),
        ("keep: [{tagMatches: {include: '(x'}}]", "keep[0].tagMatches.include", "invalid"),
        ("keep: [{pulledWithin: {within: 0s}}]", "keep[0].pulledWithin.within", "than 0s"),
        ("keep: [{pullCount: {min: 1, unknown: maybe}}]", "pullCount.unknown", "'keep' or"),
        ("keep: [{pushedWithin: 7}]", "keep[0].pushedWithin", "add a unit"),
        ("keep: [{semver: {prereleases: -1}}]", "semver.prereleases", "greater than or equal"),
        ("delete: [{orphans: {olderThan: 1x}}]", "delete[0].orphans.olderThan", "duration"),
        ("delete: [{quarantineExpired: {}}]", "quarantineExpired.after", "missing required"),
        ("ageFrom: built\ndelete: [{olderThan: 1d}]", "ageFrom", "'pushed' or 'created'"),
        (
            "delete: [{orphans: {}}, {orphans: {olderThan: 1d}}]",
            "delete[1]",
            "a second orphans rule (first at delete[0])",
        ),
        (
            "delete: [{purge: 1d}]",
            "delete[0]",
            "exactly one of: untagged, olderThan, orphans, quarantineExpired",
        ),
    ],
)
def test_invalid_rules_name_the_key(retention: str, path: str, message: str) -> None:
    problems = validate_text(policy(retention))
    assert problems, retention
    assert any(path in p.path and message in p.message for p in problems), [
        str(p) for p in problems
    ]


def test_the_docs_examples_of_retention_and_inventory_validate() -> None:
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text("utf-8")
    blocks = {
        block.split(":", 1)[0]: block
        for block in re.findall(r"```yaml\n(.*?)```", docs, re.DOTALL)
        if block.startswith(("retention:", "inventory:"))
    }
    assert set(blocks) == {"retention", "inventory"}
    retention = "".join(f"  {line}\n" for line in blocks["retention"].splitlines())
    text = HEAD + "defaults:\n" + retention + blocks["inventory"]
    assert validate_text(text) == []
    adapted = retention_rules(
        load_policy_text(text, source="docs.yaml", base_dir="/tmp").for_repository("a/b")
    )
    assert adapted is not None and len(adapted.keep) == 6 and len(adapted.delete) == 4
