"""Retention rules one at a time, table-driven, with a fixed `now`: what each keeps or
selects, the reason it gives, and the errors invalid rules raise."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
import semver

from regwarden.errors import PolicyError, RegistryError, UsageError
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
    Protections,
    RetentionRules,
    cosign_subject,
    from_ecr_image,
    parse_semver,
    plan_repository,
    to_epoch,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = 86400.0
NO_GUARD = Guard(max_deletes=None, max_share=None)


_NAMES: dict[str, str] = {}


def dg(name: str) -> str:
    """A stable digest for a readable name (and remember the name for assertions)."""
    digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    _NAMES[digest] = name
    return digest


def nm(digest: str) -> str:
    return _NAMES[digest]


def rec(
    name: str,
    *tags: str,
    age: float | None = 1,
    pulled: float | None = None,
    created: float | None = None,
    pulls: int | None = None,
    size: int = 1000,
    children: tuple[str, ...] = (),
    subject: str | None = None,
) -> ImageRecord:
    """A record named `name`, pushed `age` days before NOW (None: no push time)."""
    now = NOW.timestamp()
    return ImageRecord(
        digest=dg(name),
        tags=tags,
        pushed=None if age is None else now - age * DAY,
        last_pulled=None if pulled is None else now - pulled * DAY,
        size=size,
        media_type="application/vnd.oci.image.manifest.v1+json",
        children=tuple(dg(c) for c in children),
        subject=None if subject is None else dg(subject),
        created=None if created is None else now - created * DAY,
        pulls=pulls,
    )


def kept_by(records: list[ImageRecord], *keep: object) -> dict[str, str]:
    """Plan with the keep rules and a delete-everything rule: name → reason for each image
    a keep rule covers (protections aside, nothing else keeps an image here)."""
    rules = RetentionRules(
        keep=keep,  # type: ignore[arg-type]
        delete=(DeleteOlderThan(timedelta(0), tagged_only=False),),
        guard=NO_GUARD,
    )
    plan = plan_repository("team/app", records, rules, now=NOW)
    return {nm(d.digest): d.reason for d in plan.decisions if d.action == "keep"}


# -- semver parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("1.2.3", (1, 2, 3, 1, ())),
        ("v1.2.3", (1, 2, 3, 1, ())),
        ("V10.0.0", (10, 0, 0, 1, ())),
        ("0.0.0", (0, 0, 0, 1, ())),
        ("1.2.3-rc.1", (1, 2, 3, 0, ((1, "rc"), (0, 1)))),
        ("1.2.3-alpha", (1, 2, 3, 0, ((1, "alpha"),))),
        ("1.2.3-0.3.7", (1, 2, 3, 0, ((0, 0), (0, 3), (0, 7)))),
        ("1.2.3-x-y-z.-", (1, 2, 3, 0, ((1, "x-y-z"), (1, "-")))),
        ("1.2.3+build.5", (1, 2, 3, 1, ())),
        ("1.2.3-rc.1+build", (1, 2, 3, 0, ((1, "rc"), (0, 1)))),
        ("1.2", None),
        ("1", None),
        ("1.2.3.4", None),
        ("01.2.3", None),
        ("1.02.3", None),
        ("1.2.03", None),
        ("1.2.3-01", None),
        ("1.2.3-", None),
        ("1.2.3-rc..1", None),
        ("latest", None),
        ("release-1.2.3", None),
        ("vv1.2.3", None),
        ("1.2.3_build", None),
        ("1.².3", None),
        ("", None),
    ],
)
def test_parse_semver(tag: str, expected: tuple[object, ...] | None) -> None:
    key = parse_semver(tag)
    assert (None if key is None else tuple(key)) == expected
    if key is not None:
        # the same verdict as the reference implementation
        assert semver.Version.is_valid(tag[1:] if tag[0] in "vV" else tag)


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
        ("1.0.0-alpha.beta", "1.0.0-beta"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.9.9", "1.10.0"),
        ("2.0.0", "10.0.0"),
    ],
)
def test_semver_precedence_examples_from_the_spec(lower: str, higher: str) -> None:
    lo, hi = parse_semver(lower), parse_semver(higher)
    assert lo is not None and hi is not None
    assert lo < hi
    assert semver.Version.parse(lower) < semver.Version.parse(higher)


def test_semver_key_text() -> None:
    key = parse_semver("v1.2.3-rc.1")
    assert key is not None and key.text() == "1.2.3-rc.1" and key.is_prerelease
    release = parse_semver("1.2.3+meta")
    assert release is not None and release.text() == "1.2.3" and not release.is_prerelease


# -- keep rules ------------------------------------------------------------------------------


MOST_RECENT_REPO = [
    rec("a1", "t1", age=1, pulled=50),
    rec("a2", "t2", age=2, pulled=2),
    rec("a3", age=3, pulled=1),  # untagged
    rec("a4", "t4", age=4),
    rec("a5", "t5", age=5, pulled=3),
    rec("a6", "sha256-" + dg("a1")[7:] + ".sig", age=0.5),  # a signature of a1
]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            KeepMostRecent(3),
            {
                "a1": "kept: 3 most recent (rank 1)",
                "a2": "kept: 3 most recent (rank 2)",
                "a4": "kept: 3 most recent (rank 3)",
            },
        ),
        (
            KeepMostRecent(3, tagged_only=False),
            {
                "a1": "kept: 3 most recent (rank 1)",
                "a2": "kept: 3 most recent (rank 2)",
                "a3": "kept: 3 most recent (rank 3)",
            },
        ),
        (
            KeepMostRecent(2, by="pull"),
            {
                "a2": "kept: 2 most recently pulled (rank 1)",
                "a5": "kept: 2 most recently pulled (rank 2)",
            },
        ),
        (
            KeepMostRecent(4, by="pull"),  # never pulled ranks last
            {
                "a2": "kept: 4 most recently pulled (rank 1)",
                "a5": "kept: 4 most recently pulled (rank 2)",
                "a1": "kept: 4 most recently pulled (rank 3)",
                "a4": "kept: 4 most recently pulled (rank 4)",
            },
        ),
        (
            KeepMostRecent(50),
            {f"a{i}": f"kept: 50 most recent (rank {r})" for r, i in enumerate((1, 2, 4, 5), 1)},
        ),
    ],
    ids=["push", "push-untagged-too", "pull", "pull-never-pulled-last", "more-than-there-are"],
)
def test_keep_most_recent(rule: KeepMostRecent, expected: dict[str, str]) -> None:
    kept = kept_by(MOST_RECENT_REPO, rule)
    signature = kept.pop("a6", None)  # the signature of a1 follows a1
    assert (signature is not None) == ("a1" in kept)
    if signature is not None:
        assert signature == f"kept: referrer of kept {dg('a1')}"
    assert kept == expected


def test_keep_most_recent_by_pull_without_pull_times_ranks_by_push_and_warns() -> None:
    records = [rec("a1", "x", age=1), rec("a2", "y", age=2), rec("a3", "z", age=3)]
    rules = RetentionRules(keep=(KeepMostRecent(2, by="pull"),), guard=NO_GUARD)
    plan = plan_repository("r", records, rules, now=NOW)
    assert [d.rule for d in plan.decisions] == ["mostRecent", "mostRecent", "default"]
    assert any("no pull times" in w and "ranked by push time" in w for w in plan.warnings)


SEMVER_REPO = [
    rec("a1", "v3.1.0", age=1),
    rec("a2", "3.0.2", age=2),
    rec("a3", "v3.0.1", age=3),
    rec("a4", "2.5.0", "latest", age=4),
    rec("a5", "2.4.9", age=5),
    rec("a6", "1.0.0", age=6),
    rec("a7", "0.9.0", age=7),
    rec("a8", "4.0.0-rc.2", age=0.5),
    rec("a9", "4.0.0-rc.1", age=0.6),
    rec("a10", "4.0.0-beta", age=0.7),
    rec("a11", "latest-build", "main", "1.2", "v1", age=0.1),  # no semver tag
    rec("a12", "3.1.0-rc.1", age=8),
]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            KeepSemver(majors=2, minors_per_major=1, patches_per_minor=1),
            {
                "a1": "kept: semver v3.1.0 (major 1 of 2, minor 1 of 1, patch 1 of 1)",
                "a4": "kept: semver 2.5.0 (major 2 of 2, minor 1 of 1, patch 1 of 1)",
            },
        ),
        (
            KeepSemver(majors=1, minors_per_major=2, patches_per_minor=2),
            {
                "a1": "kept: semver v3.1.0 (major 1 of 1, minor 1 of 2, patch 1 of 2)",
                "a2": "kept: semver 3.0.2 (major 1 of 1, minor 2 of 2, patch 1 of 2)",
                "a3": "kept: semver v3.0.1 (major 1 of 1, minor 2 of 2, patch 2 of 2)",
            },
        ),
        (
            KeepSemver(majors=3, minors_per_major=2, patches_per_minor=1, prereleases=2),
            {
                "a1": "kept: semver v3.1.0 (major 1 of 3, minor 1 of 2, patch 1 of 1)",
                "a2": "kept: semver 3.0.2 (major 1 of 3, minor 2 of 2, patch 1 of 1)",
                "a4": "kept: semver 2.5.0 (major 2 of 3, minor 1 of 2, patch 1 of 1)",
                "a5": "kept: semver 2.4.9 (major 2 of 3, minor 2 of 2, patch 1 of 1)",
                "a6": "kept: semver 1.0.0 (major 3 of 3, minor 1 of 2, patch 1 of 1)",
                "a8": "kept: semver pre-release 4.0.0-rc.2 (rank 1 of 2)",
                "a9": "kept: semver pre-release 4.0.0-rc.1 (rank 2 of 2)",
            },
        ),
        (
            KeepSemver(),  # no counts: every release, no pre-release
            {
                f"a{i}": f"kept: semver {tag} (major {m} of all, minor {n} of all, "
                f"patch {p} of all)"
                for i, tag, m, n, p in (
                    (1, "v3.1.0", 1, 1, 1),
                    (2, "3.0.2", 1, 2, 1),
                    (3, "v3.0.1", 1, 2, 2),
                    (4, "2.5.0", 2, 1, 1),
                    (5, "2.4.9", 2, 2, 1),
                    (6, "1.0.0", 3, 1, 1),
                    (7, "0.9.0", 4, 1, 1),
                )
            },
        ),
        (
            KeepSemver(majors=1, prereleases=10),
            {
                "a1": "kept: semver v3.1.0 (major 1 of 1, minor 1 of all, patch 1 of all)",
                "a2": "kept: semver 3.0.2 (major 1 of 1, minor 2 of all, patch 1 of all)",
                "a3": "kept: semver v3.0.1 (major 1 of 1, minor 2 of all, patch 2 of all)",
                "a8": "kept: semver pre-release 4.0.0-rc.2 (rank 1 of 10)",
                "a9": "kept: semver pre-release 4.0.0-rc.1 (rank 2 of 10)",
                "a10": "kept: semver pre-release 4.0.0-beta (rank 3 of 10)",
                "a12": "kept: semver pre-release 3.1.0-rc.1 (rank 4 of 10)",
            },
        ),
    ],
    ids=["2-majors", "patches", "contract-with-prereleases", "all-releases", "all-prereleases"],
)
def test_keep_semver(rule: KeepSemver, expected: dict[str, str]) -> None:
    assert kept_by(SEMVER_REPO, rule) == expected


def test_semver_same_version_with_and_without_v_keeps_both_images() -> None:
    records = [rec("a1", "1.0.0", age=1), rec("a2", "v1.0.0", age=2), rec("a3", "0.1.0", age=3)]
    kept = kept_by(records, KeepSemver(majors=1, patches_per_minor=1))
    assert set(kept) == {"a1", "a2"}


TAG_REPO = [
    rec("a1", "release-1", age=1),
    rec("a2", "release-2-rc", "nightly", age=2),
    rec("a3", "pr-17", age=3),
    rec("a4", "main", "pr-18", age=4),
    rec("a5", age=5),
]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            KeepTagMatches("^release-"),
            {
                "a1": "kept: tag 'release-1' matches '^release-'",
                "a2": "kept: tag 'release-2-rc' matches '^release-'",
            },
        ),
        (
            KeepTagMatches("^release-", exclude="-rc$"),
            {"a1": "kept: tag 'release-1' matches '^release-' and not '-rc$'"},
        ),
        (
            KeepTagMatches(exclude="^pr-"),
            {
                "a1": "kept: tag 'release-1' does not match excluded '^pr-'",
                "a2": "kept: tag 'release-2-rc' does not match excluded '^pr-'",
                "a4": "kept: tag 'main' does not match excluded '^pr-'",
            },
        ),
        (KeepTagMatches("night"), {"a2": "kept: tag 'nightly' matches 'night'"}),
        (KeepTagMatches("^nomatch$"), {}),
    ],
    ids=["include", "include-exclude", "exclude-only", "searched-not-anchored", "none"],
)
def test_keep_tag_matches(rule: KeepTagMatches, expected: dict[str, str]) -> None:
    assert kept_by(TAG_REPO, rule) == expected


PULL_REPO = [
    rec("a1", "x", age=100, pulled=1, pulls=500),
    rec("a2", "y", age=100, pulled=29.9, pulls=10),
    rec("a3", "z", age=100, pulled=31, pulls=0),
    rec("a4", age=100),
]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            KeepPulledWithin(timedelta(days=30)),
            {
                "a1": "kept: pulled within 30d (pulled 1d ago)",
                "a2": "kept: pulled within 30d (pulled 29d ago)",
            },
        ),
        (
            KeepPullCount(10),
            {
                "a1": "kept: pulled 500 times (at least 10)",
                "a2": "kept: pulled 10 times (at least 10)",
            },
        ),
        (KeepPushedWithin(timedelta(days=99)), {}),
        (
            KeepPushedWithin(timedelta(days=100)),
            {f"a{i}": "kept: pushed within 100d (pushed 100d ago)" for i in (1, 2, 3, 4)},
        ),
    ],
    ids=["pulled-within", "pull-count", "pushed-within-none", "pushed-within-boundary"],
)
def test_keep_by_pull_and_push(rule: object, expected: dict[str, str]) -> None:
    assert kept_by(PULL_REPO, rule) == expected


@pytest.mark.parametrize(
    ("rule", "what"),
    [
        (KeepPulledWithin(timedelta(days=30)), "pull times"),
        (KeepPullCount(5), "pull counts"),
    ],
)
def test_pull_rules_without_any_pull_data_keep_everything_by_default(
    rule: object, what: str
) -> None:
    records = [rec("a1", "x", age=300), rec("a2", age=300)]
    rules = RetentionRules(keep=(rule,), delete=(DeleteOlderThan(timedelta(0), tagged_only=False),))  # type: ignore[arg-type]
    plan = plan_repository("r", records, rules, now=NOW)
    assert plan.images_deleted == 0
    assert all(f"no {what} recorded" in d.reason for d in plan.decisions)
    assert any("keeping every image" in w for w in plan.warnings)


@pytest.mark.parametrize(
    "rule",
    [KeepPulledWithin(timedelta(days=30), unknown="ignore"), KeepPullCount(5, unknown="ignore")],
)
def test_pull_rules_with_unknown_ignore_keep_nothing_and_warn(rule: object) -> None:
    records = [rec("a1", "x", age=300), rec("a2", age=300)]
    rules = RetentionRules(
        keep=(rule,), delete=(DeleteOlderThan(timedelta(0), tagged_only=False),), guard=NO_GUARD
    )  # type: ignore[arg-type]
    plan = plan_repository("r", records, rules, now=NOW)
    assert plan.images_deleted == 2
    assert any("rule ignored (unknown: ignore)" in w for w in plan.warnings)


# -- delete rules ----------------------------------------------------------------------------


DELETE_REPO = [
    rec("a1", "v1", age=200),
    rec("a2", "v2", age=100),
    rec("a3", age=12),
    rec("a4", age=3),
    rec("a5", age=None, created=20),  # no push time: aged by its config only with ageFrom: created
    rec("a6", age=None),  # no time at all: never deleted by age
    rec("a7", "v7", age=181),
]
UNKNOWN = "kept: age unknown (no push time from the registry, and the ledger never saw it pushed)"


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            (DeleteUntagged(timedelta(days=7)),),
            {
                "a3": ("untagged", "deleted: untagged older than 7d (pushed 12d ago)"),
                "a5": ("untagged", "deleted: untagged older than 7d (created 20d ago)"),
            },
        ),
        (
            (DeleteOlderThan(timedelta(days=180)),),
            {
                "a1": ("olderThan", "deleted: tagged older than 180d (pushed 200d ago)"),
                "a7": ("olderThan", "deleted: tagged older than 180d (pushed 181d ago)"),
            },
        ),
        (
            (DeleteOlderThan(timedelta(days=15), tagged_only=False),),
            {
                "a1": ("olderThan", "deleted: older than 15d (pushed 200d ago)"),
                "a2": ("olderThan", "deleted: older than 15d (pushed 100d ago)"),
                "a5": ("olderThan", "deleted: older than 15d (created 20d ago)"),
                "a7": ("olderThan", "deleted: older than 15d (pushed 181d ago)"),
            },
        ),
        (
            # the first delete rule that selects an image explains it
            (
                DeleteUntagged(timedelta(days=1)),
                DeleteOlderThan(timedelta(days=1), tagged_only=False),
            ),
            {
                "a1": ("olderThan", "deleted: older than 1d (pushed 200d ago)"),
                "a2": ("olderThan", "deleted: older than 1d (pushed 100d ago)"),
                "a3": ("untagged", "deleted: untagged older than 1d (pushed 12d ago)"),
                "a4": ("untagged", "deleted: untagged older than 1d (pushed 3d ago)"),
                "a5": ("untagged", "deleted: untagged older than 1d (created 20d ago)"),
                "a7": ("olderThan", "deleted: older than 1d (pushed 181d ago)"),
            },
        ),
        ((), {}),
    ],
    ids=["untagged", "tagged-older-than", "older-than-any", "first-rule-explains", "no-rules"],
)
def test_delete_rules_with_age_from_created(
    rules: tuple[object, ...], expected: dict[str, tuple[str, str]]
) -> None:
    """`ageFrom: created`: an image without a push time is aged by its config's created."""
    plan = plan_repository(
        "r",
        DELETE_REPO,
        RetentionRules(delete=rules, guard=NO_GUARD, age_from="created"),  # type: ignore[arg-type]
        now=NOW,
    )
    got = {nm(d.digest): (d.rule, d.reason) for d in plan.decisions if d.action == "delete"}
    assert got == expected
    kept = {nm(d.digest): (d.rule, d.reason) for d in plan.decisions if d.action == "keep"}
    unknown = {n for n, (rule, _) in kept.items() if rule == "ageUnknown"}
    judges_untagged = any(
        isinstance(r, DeleteUntagged) or (isinstance(r, DeleteOlderThan) and not r.tagged_only)
        for r in rules
    )
    assert unknown == ({"a6"} if judges_untagged else set())  # a6 (untagged) has no time
    assert all(
        reason == "kept: no delete rule selected it"
        for n, (_, reason) in kept.items()
        if n not in unknown
    )


@pytest.mark.parametrize(
    ("rules", "expected", "unknown"),
    [
        (
            (DeleteUntagged(timedelta(days=7)),),
            {"a3": ("untagged", "deleted: untagged older than 7d (pushed 12d ago)")},
            {"a5", "a6"},
        ),
        (
            (DeleteOlderThan(timedelta(days=180)),),
            {
                "a1": ("olderThan", "deleted: tagged older than 180d (pushed 200d ago)"),
                "a7": ("olderThan", "deleted: tagged older than 180d (pushed 181d ago)"),
            },
            set(),  # a5 and a6 are untagged: this rule would not judge them anyway
        ),
        (
            (DeleteOlderThan(timedelta(days=15), tagged_only=False),),
            {
                "a1": ("olderThan", "deleted: older than 15d (pushed 200d ago)"),
                "a2": ("olderThan", "deleted: older than 15d (pushed 100d ago)"),
                "a7": ("olderThan", "deleted: older than 15d (pushed 181d ago)"),
            },
            {"a5", "a6"},
        ),
        ((), {}, set()),
    ],
    ids=["untagged", "tagged-older-than", "older-than-any", "no-rules"],
)
def test_delete_rules_never_guess_an_age(
    rules: tuple[object, ...], expected: dict[str, tuple[str, str]], unknown: set[str]
) -> None:
    """The default (`ageFrom: pushed`): the config's created date is no age; an image
    without a push time is not selected, and its decision says why."""
    plan = plan_repository(
        "r",
        DELETE_REPO,
        RetentionRules(delete=rules, guard=NO_GUARD),  # type: ignore[arg-type]
        now=NOW,
    )
    got = {nm(d.digest): (d.rule, d.reason) for d in plan.decisions if d.action == "delete"}
    assert got == expected
    kept = {nm(d.digest): (d.rule, d.reason) for d in plan.decisions if d.action == "keep"}
    assert {n for n, (rule, _) in kept.items() if rule == "ageUnknown"} == unknown
    if "a5" in unknown:
        assert kept["a5"][1] == (
            f"{UNKNOWN}; its config says created 2026-11-07, used only with ageFrom: created"
        )
        assert kept["a6"][1] == UNKNOWN
    assert all(
        reason == "kept: no delete rule selected it"
        for n, (_, reason) in kept.items()
        if n not in unknown
    )
    a5 = plan.decision(dg("a5"))
    assert a5.time is None  # the plan shows no push time rather than the config's date


def test_age_boundary_is_strictly_older() -> None:
    records = [rec("a1", age=7), rec("a2", age=7.0001)]
    plan = plan_repository(
        "r",
        records,
        RetentionRules(delete=(DeleteUntagged(timedelta(days=7)),), guard=NO_GUARD),
        now=NOW,
    )
    assert [d.action for d in plan.decisions] == ["keep", "delete"]


def test_time_warnings() -> None:
    plan = plan_repository(
        "r",
        DELETE_REPO,
        RetentionRules(delete=(DeleteUntagged(timedelta(days=7)),), guard=NO_GUARD),
        now=NOW,
    )
    assert not any("ageFrom: created" in w for w in plan.warnings)
    assert any(w.startswith("no push time for 2 of 7 manifests") for w in plan.warnings)
    created = plan_repository(
        "r",
        DELETE_REPO,
        RetentionRules(
            delete=(DeleteUntagged(timedelta(days=7)),), guard=NO_GUARD, age_from="created"
        ),
        now=NOW,
    )
    assert any(
        w.startswith("ageFrom: created: aged 1 of 7 manifests by their config's created time")
        and "reproducible build says 1970" in w
        for w in created.warnings
    )
    assert any(w.startswith("no push or created time for 1 of 7") for w in created.warnings)


def test_a_fresh_push_with_a_1970_config_date_is_not_old() -> None:
    """Pushed a minute ago (ledger first-seen), config `created` 1970: `olderThan: 30d`
    leaves it unless the policy opts into `ageFrom: created`."""
    now = NOW.timestamp()
    fresh = ImageRecord(dg("fresh"), ("1.0",), now - 60, None, 10, "", (), None, 0.0, None)
    older = DeleteOlderThan(timedelta(days=30))
    plan = plan_repository("r", [fresh], RetentionRules(delete=(older,), guard=NO_GUARD), now=NOW)
    d = plan.decision(fresh.digest)
    assert (d.action, d.rule, d.time) == ("keep", "default", now - 60)
    by_config = plan_repository(
        "r", [fresh], RetentionRules(delete=(older,), guard=NO_GUARD, age_from="created"), now=NOW
    )
    d = by_config.decision(fresh.digest)
    assert (d.action, d.rule, d.time) == ("delete", "olderThan", 0.0)
    assert d.reason.startswith("deleted: tagged older than 30d (created 20")  # 20xxxd ago


def test_keep_pushed_within_and_mostrecent_rank_by_the_age_anchor() -> None:
    """`pushedWithin` keeps by the same anchor; unknown ages rank last in `mostRecent`."""
    records = [
        rec("known", "a", age=40),
        rec("configonly", "b", age=None, created=1),  # fresh by its config, no push time
    ]
    rules = RetentionRules(
        keep=(KeepPushedWithin(timedelta(days=7)),),
        delete=(DeleteOlderThan(timedelta(days=30)),),
        guard=NO_GUARD,
    )
    plan = plan_repository("r", records, rules, now=NOW)
    assert [nm(d.digest) for d in plan.decisions] == ["known", "configonly"]
    assert plan.decision(dg("known")).action == "delete"
    assert plan.decision(dg("configonly")).rule == "ageUnknown"
    created = plan_repository(
        "r",
        records,
        RetentionRules(keep=rules.keep, delete=rules.delete, guard=NO_GUARD, age_from="created"),
        now=NOW,
    )
    assert [nm(d.digest) for d in created.decisions] == ["configonly", "known"]
    assert created.decision(dg("configonly")).reason == ("kept: pushed within 7d (created 1d ago)")
    top = plan_repository(
        "r", records, RetentionRules(keep=(KeepMostRecent(1),), guard=NO_GUARD), now=NOW
    )
    assert top.decision(dg("known")).rule == "mostRecent"


def test_age_from_is_checked() -> None:
    with pytest.raises(
        PolicyError, match=r"retention ageFrom: got 'built'; valid: pushed, created"
    ):
        RetentionRules(age_from="built")  # type: ignore[arg-type]


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: KeepMostRecent(0), r"mostRecent\.count: got 0, expected an integer >= 1"),
        (lambda: KeepMostRecent(True), r"mostRecent\.count: got True"),
        (lambda: KeepMostRecent(3, by="pulls"), r"mostRecent\.by: got 'pulls'; valid: push, pull"),
        (
            lambda: KeepSemver(majors=0),
            r"semver\.majors: got 0, expected an integer >= 1 or null for all",
        ),
        (lambda: KeepSemver(prereleases=-1), r"semver\.prereleases: got -1"),
        (lambda: KeepTagMatches(), r"tagMatches: got neither include nor exclude"),
        (
            lambda: KeepTagMatches("release-("),
            r"tagMatches\.include: got 'release-\(', expected a valid regular expression",
        ),
        (lambda: KeepTagMatches("^r", exclude="[a"), r"tagMatches\.exclude"),
        (lambda: KeepPulledWithin(timedelta(0)), r"pulledWithin\.within: got 0s, expected > 0"),
        (lambda: KeepPulledWithin(30), r"pulledWithin\.within: got 30, expected a duration"),  # type: ignore[arg-type]
        (
            lambda: KeepPulledWithin(timedelta(days=1), unknown="maybe"),
            r"unknown: got 'maybe'; valid: keep, ignore",
        ),  # type: ignore[arg-type]
        (lambda: KeepPullCount(0), r"pullCount\.minPulls: got 0"),
        (lambda: DeleteUntagged(timedelta(days=-1)), r"untagged\.olderThan: got .*expected >= 0"),
        (
            lambda: DeleteQuarantineExpired(timedelta(0)),
            r"quarantineExpired\.after: got 0s, expected > 0",
        ),
        (
            lambda: Guard(max_share=0),
            r"guard\.maxShare: got 0, expected a number with 0 < share <= 1",
        ),
        (lambda: Guard(max_share=1.5), r"guard\.maxShare: got 1\.5"),
        (lambda: Guard(max_deletes=-1), r"guard\.maxDeletes: got -1"),
        (
            lambda: RetentionRules(keep=(DeleteUntagged(timedelta(1)),)),
            r"keep\[0\]: got DeleteUntagged.*valid: KeepMostRecent",
        ),  # type: ignore[arg-type]
        (
            lambda: RetentionRules(delete=(KeepMostRecent(1),)),
            r"delete\[0\]: got KeepMostRecent.*valid: DeleteUntagged",
        ),  # type: ignore[arg-type]
        (
            lambda: RetentionRules(delete=(DeleteOrphans(), DeleteOrphans())),
            r"delete\[1\]: got a second orphans rule",
        ),
        (
            lambda: RetentionRules(guard={"maxDeletes": 1}),
            r"guard: got \{'maxDeletes': 1\}, expected Guard",
        ),  # type: ignore[arg-type]
    ],
)
def test_invalid_rules_raise_policy_errors(build: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        build()  # type: ignore[operator]


def test_rules_accept_lists_and_are_frozen_values() -> None:
    rules = RetentionRules(keep=[KeepMostRecent(3)], delete=[DeleteUntagged(timedelta(days=7))])  # type: ignore[arg-type]
    assert rules.keep == (KeepMostRecent(3),) and isinstance(rules.delete, tuple)
    assert KeepTagMatches("^a") == KeepTagMatches("^a") and hash(KeepTagMatches("^a"))
    with pytest.raises(AttributeError):
        rules.guard = Guard()  # type: ignore[misc]


# -- records ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (5, 5.0),
        (1.5, 1.5),
        (datetime(2026, 1, 1, tzinfo=UTC), 1767225600.0),
        (datetime(2026, 1, 1), 1767225600.0),  # naive means UTC
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01T01:00:00+01:00", 1767225600.0),
    ],
)
def test_to_epoch(value: object, expected: float | None) -> None:
    assert to_epoch(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["yesterday", [1], True])
def test_to_epoch_rejects_garbage(value: object) -> None:
    with pytest.raises(UsageError, match="got time"):
        to_epoch(value)  # type: ignore[arg-type]


def test_from_ecr_image_reads_a_describe_images_entry() -> None:
    pushed = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    detail = {
        "registryId": "123456789012",
        "repositoryName": "team/api",
        "imageDigest": dg("x1"),
        "imageTags": ["1.2.3", "latest"],
        "imageSizeInBytes": 123456,
        "imagePushedAt": pushed,
        "imageManifestMediaType": "application/vnd.oci.image.index.v1+json",
        "lastRecordedPullTime": pushed + timedelta(days=3),
    }
    record = from_ecr_image(detail, children=(dg("c1"),))
    assert record == ImageRecord(
        dg("x1"),
        ("1.2.3", "latest"),
        pushed.timestamp(),
        (pushed + timedelta(days=3)).timestamp(),
        123456,
        "application/vnd.oci.image.index.v1+json",
        (dg("c1"),),
        None,
        None,
        None,
    )
    untagged = from_ecr_image({"imageDigest": dg("x2"), "imagePushedAt": pushed})
    assert untagged.tags == () and untagged.last_pulled is None and untagged.size == 0
    assert json.dumps(untagged._asdict())


def test_from_ecr_image_without_digest_is_a_registry_error() -> None:
    with pytest.raises(RegistryError, match=r"without imageDigest.*keys: imageTags"):
        from_ecr_image({"imageTags": ["x"]})


def test_record_of_converts_friendly_types() -> None:
    r = ImageRecord.of(dg("x"), tags=["a"], pushed="2026-01-01T00:00:00Z", children=[dg("c")])
    assert r.tags == ("a",) and r.pushed == 1767225600.0 and r.children == (dg("c"),)
    assert r.time == r.pushed
    # the config's created is no age by default (see `ageFrom`)
    assert ImageRecord.of(dg("y"), created=10).time is None


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (("sha256-" + "a" * 64 + ".sig",), "sha256:" + "a" * 64),
        (("sha256-" + "a" * 64 + ".att", "sha256-" + "a" * 64 + ".sbom"), "sha256:" + "a" * 64),
        (("sha512-" + "b" * 128 + ".sig",), "sha512:" + "b" * 128),
        (("sha256-" + "a" * 64 + ".sig", "latest"), None),  # an ordinary tag: an image
        (("sha256-" + "a" * 63 + ".sig",), None),
        (("sha256-" + "A" * 64 + ".sig",), None),
        (("sha256-" + "a" * 64 + ".sig2",), None),
        (("sha-abc1234",), None),
        ((), None),
    ],
)
def test_cosign_subject(tags: tuple[str, ...], expected: str | None) -> None:
    assert cosign_subject(tags) == expected


def test_protections_normalise_and_merge() -> None:
    a = Protections(in_use={"d1"}, quarantined={"q1": datetime(2026, 1, 1, tzinfo=UTC), "q2": None})  # type: ignore[arg-type]
    b = Protections(
        locked=frozenset({"l1"}), quarantined={"q1": 1767225600.0 + 10, "q2": 5.0, "q3": 1.0}
    )
    merged = a.merge(b)
    assert merged.in_use == {"d1"} and merged.locked == {"l1"}
    assert dict(merged.quarantined) == {"q1": 1767225610.0, "q2": None, "q3": 1.0}
    assert not Protections() and merged
