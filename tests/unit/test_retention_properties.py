"""Property tests: for any repository state, rules and protections, the plan never deletes
what must stay, every deletion has a reason, and planning again after applying the plan
deletes nothing more. What "must stay" is computed here independently of the planner
(with the `semver` package for versions and `re` for tags)."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import semver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    RepositoryPlan,
    RetentionRules,
    parse_semver,
    plan_repository,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
NOW_S = NOW.timestamp()
DAY = 86400.0
TAGS = [
    "1.0.0", "v1.0.1", "1.1.0", "v2.0.0", "2.0.0", "2.1.3", "3.0.0-rc.1", "3.0.0-rc.2",
    "3.0.0-beta", "v3.0.0", "0.9.9", "latest", "main", "release-1", "release-2", "pr-7",
    "1.2", "v1", "build-42", "nightly",
]  # fmt: skip
PATTERNS = ["^release-", "^v", "^pr-", "\\.", "^(main|latest)$", "rc"]


def digest_of(i: int) -> str:
    return "sha256:" + hashlib.sha256(f"m{i}".encode()).hexdigest()


ABSENT = [digest_of(1000 + i) for i in range(3)]  # subjects that are not in the repository

days = st.floats(min_value=0, max_value=800, allow_nan=False)
maybe_days = st.one_of(st.none(), days)


@st.composite
def repositories(draw: st.DrawFn) -> list[ImageRecord]:
    n = draw(st.integers(min_value=0, max_value=16))
    records: list[ImageRecord] = []
    for i in range(n):
        kind = draw(st.sampled_from(["image", "image", "index", "referrer", "cosign"]))
        tags: tuple[str, ...] = ()
        children: tuple[str, ...] = ()
        subject: str | None = None
        if kind in ("image", "index"):
            tags = tuple(draw(st.lists(st.sampled_from(TAGS), max_size=3, unique=True)))
        if kind == "index" and i + 1 < n:  # children come later: a DAG, as digests force
            kids = draw(st.lists(st.integers(i + 1, n - 1), min_size=1, max_size=3, unique=True))
            children = tuple(digest_of(k) for k in kids)
        if kind in ("referrer", "cosign"):
            # a subject is hashed into its referrer, so it points "later" too (no cycles)
            later = st.integers(i + 1, n - 1) if i + 1 < n else st.nothing()
            target = draw(st.one_of(later, st.sampled_from(ABSENT)))
            subject = digest_of(target) if isinstance(target, int) else target
            if kind == "cosign":
                tags = (f"sha256-{subject[7:]}.{draw(st.sampled_from(['sig', 'att', 'sbom']))}",)
                subject = None
        # both may be known (a ledger first-seen and a config date), either, or neither
        pushed = draw(maybe_days)
        created = draw(maybe_days)
        pulled = draw(st.one_of(st.none(), st.floats(0, 120)))
        records.append(
            ImageRecord(
                digest=digest_of(i),
                tags=tags,
                pushed=None if pushed is None else NOW_S - pushed * DAY,
                last_pulled=None if pulled is None else NOW_S - pulled * DAY,
                size=draw(st.integers(0, 10_000)),
                media_type="",
                children=children,
                subject=subject,
                created=None if created is None else NOW_S - created * DAY,
                pulls=draw(st.one_of(st.none(), st.integers(0, 50))),
            )
        )
    return records


durations = st.integers(min_value=1, max_value=400).map(lambda d: timedelta(days=d))
counts = st.one_of(st.none(), st.integers(1, 3))

keep_rules = st.one_of(
    st.builds(
        KeepMostRecent,
        st.integers(1, 5),
        by=st.sampled_from(["push", "pull"]),
        tagged_only=st.booleans(),
    ),
    st.builds(
        KeepSemver,
        majors=counts,
        minors_per_major=counts,
        patches_per_minor=counts,
        prereleases=st.integers(0, 2),
    ),
    st.builds(KeepTagMatches, st.sampled_from(PATTERNS)),
    st.builds(KeepTagMatches, st.sampled_from(PATTERNS), exclude=st.sampled_from(PATTERNS)),
    st.builds(KeepTagMatches, exclude=st.sampled_from(PATTERNS)),
    st.builds(KeepPulledWithin, durations, unknown=st.sampled_from(["keep", "ignore"])),
    st.builds(KeepPullCount, st.integers(1, 40), unknown=st.sampled_from(["keep", "ignore"])),
    st.builds(KeepPushedWithin, durations),
)
delete_rules = st.one_of(
    st.builds(DeleteUntagged, st.integers(0, 400).map(lambda d: timedelta(days=d))),
    st.builds(DeleteOlderThan, durations, tagged_only=st.booleans()),
)
guards = st.one_of(
    st.just(Guard(max_deletes=None, max_share=None)),
    st.just(Guard(max_deletes=None, max_share=None)),
    st.builds(
        Guard,
        max_deletes=st.one_of(st.none(), st.integers(0, 10)),
        max_share=st.one_of(st.none(), st.floats(0.05, 1.0)),
    ),
)


@st.composite
def rule_sets(draw: st.DrawFn) -> RetentionRules:
    delete = list(draw(st.lists(delete_rules, min_size=1, max_size=3)))
    if draw(st.booleans()):
        delete.append(DeleteOrphans(draw(st.integers(0, 30).map(lambda d: timedelta(days=d)))))
    if draw(st.booleans()):
        delete.append(DeleteQuarantineExpired(draw(durations)))
    return RetentionRules(
        keep=tuple(draw(st.lists(keep_rules, max_size=3))),
        delete=tuple(draw(st.permutations(delete))),
        guard=draw(guards),
        age_from=draw(st.sampled_from(["pushed", "created"])),
    )


@st.composite
def protections_for(draw: st.DrawFn, records: list[ImageRecord]) -> Protections:
    if not records or draw(st.booleans()):
        return Protections()
    digests = [r.digest for r in records] + ABSENT[:1]
    subset = st.lists(st.sampled_from(digests), max_size=2, unique=True)
    quarantined = draw(subset)
    return Protections(
        in_use=frozenset(draw(subset)),
        in_use_tags=frozenset(draw(st.lists(st.sampled_from(TAGS), max_size=1))),
        locked=frozenset(draw(subset)),
        quarantined={
            d: draw(st.one_of(st.none(), days.map(lambda x: NOW_S - x * DAY))) for d in quarantined
        },
    )


# -- an independent model of what the rules mean ------------------------------------------------


@dataclass
class Model:
    records: dict[str, ImageRecord]
    subject: dict[str, str]  # referrer → subject (present or not)
    parents: dict[str, set[str]]  # child present here → indexes listing it
    images: list[ImageRecord]  # judged by rules, newest first, ties by digest
    age_from: str

    def time(self, r: ImageRecord) -> float | None:
        """The age by the policy's definition: the push time; the config's created only
        when the policy says `ageFrom: created` (then it wins where known)."""
        if self.age_from == "created" and r.created is not None:
            return r.created
        return r.pushed


def _cosign(tags: tuple[str, ...]) -> str | None:
    subjects = [re.fullmatch(r"sha256-([0-9a-f]{64})\.(sig|att|sbom)", t) for t in tags]
    if tags and all(subjects):
        return "sha256:" + subjects[0].group(1)  # type: ignore[union-attr]
    return None


def model_of(records: list[ImageRecord], age_from: str) -> Model:
    by = {r.digest: r for r in records}
    subject: dict[str, str] = {}
    for r in records:
        s = r.subject or _cosign(r.tags)
        if s is not None:
            subject[r.digest] = s
    parents: dict[str, set[str]] = {}
    for r in records:
        for c in r.children:
            if c in by and c != r.digest:
                parents.setdefault(c, set()).add(r.digest)
    images = [
        r for r in records if r.digest not in subject and not (not r.tags and r.digest in parents)
    ]
    m = Model(by, subject, parents, [], age_from)
    images.sort(key=lambda r: r.digest)
    images.sort(key=lambda r: float("-inf") if m.time(r) is None else m.time(r), reverse=True)  # type: ignore[arg-type,return-value]
    m.images = images
    return m


def _semver_kept(rule: KeepSemver, images: list[ImageRecord]) -> set[str]:
    versions: list[tuple[semver.Version, str]] = []
    for r in images:
        for tag in r.tags:
            text = tag[1:] if tag[:1] in ("v", "V") else tag
            if semver.Version.is_valid(text):
                versions.append((semver.Version.parse(text), r.digest))
    kept: set[str] = set()
    releases = [(v, d) for v, d in versions if v.prerelease is None]
    majors = sorted({v.major for v, _ in releases}, reverse=True)[: rule.majors]
    for major in majors:
        minors = sorted({v.minor for v, _ in releases if v.major == major}, reverse=True)
        for minor in minors[: rule.minors_per_major]:
            patches = sorted(
                {v.patch for v, _ in releases if (v.major, v.minor) == (major, minor)}, reverse=True
            )
            chosen = set(patches[: rule.patches_per_minor])
            kept |= {
                d for v, d in releases if (v.major, v.minor) == (major, minor) and v.patch in chosen
            }
    pres = sorted({v for v, _ in versions if v.prerelease is not None}, reverse=True)
    top = set(pres[: rule.prereleases])
    kept |= {d for v, d in versions if v in top}
    return kept


def must_keep(rule: object, m: Model) -> set[str]:
    """The images a keep rule must protect, by the rule's definition."""
    images = m.images
    if isinstance(rule, KeepTagMatches):
        inc = re.compile(rule.include) if rule.include else None
        exc = re.compile(rule.exclude) if rule.exclude else None
        return {
            r.digest
            for r in images
            if any((inc is None or inc.search(t)) and not (exc and exc.search(t)) for t in r.tags)
        }
    if isinstance(rule, KeepPushedWithin):
        since = NOW_S - rule.within.total_seconds()
        return {r.digest for r in images if m.time(r) is not None and m.time(r) >= since}  # type: ignore[operator]
    if isinstance(rule, KeepPulledWithin):
        if not any(r.last_pulled is not None for r in images):
            return {r.digest for r in images} if rule.unknown == "keep" else set()
        since = NOW_S - rule.within.total_seconds()
        return {r.digest for r in images if r.last_pulled is not None and r.last_pulled >= since}
    if isinstance(rule, KeepPullCount):
        if not any(r.pulls is not None for r in images):
            return {r.digest for r in images} if rule.unknown == "keep" else set()
        return {r.digest for r in images if r.pulls is not None and r.pulls >= rule.min_pulls}
    if isinstance(rule, KeepMostRecent):
        pool = [r for r in images if r.tags or not rule.tagged_only]
        if rule.by == "pull" and any(r.last_pulled is not None for r in pool):
            pool = sorted(
                pool,
                key=lambda r: float("-inf") if r.last_pulled is None else r.last_pulled,
                reverse=True,
            )
        return {r.digest for r in pool[: rule.count]}
    if isinstance(rule, KeepSemver):
        return _semver_kept(rule, images)
    raise AssertionError(rule)


def protected(m: Model, rules: RetentionRules, prot: Protections) -> set[str]:
    expiry = rules.quarantine_expiry
    out = set()
    for d, r in m.records.items():
        since = prot.quarantined.get(d, 0.0)
        quarantined = d in prot.quarantined and not (
            expiry is not None
            and since is not None
            and NOW_S - since > expiry.after.total_seconds()
        )
        if d in prot.in_use or d in prot.locked or quarantined or set(r.tags) & prot.in_use_tags:
            out.add(d)
    return out


def selected_by_delete_rule(
    r: ImageRecord, m: Model, rules: RetentionRules, prot: Protections
) -> bool:
    d = r.digest
    role_image = any(i.digest == d for i in m.images)
    t = m.time(r)
    for rule in rules.delete:
        old = (
            t is not None and NOW_S - t > getattr(rule, "older_than", timedelta(0)).total_seconds()
        )
        if isinstance(rule, DeleteUntagged) and role_image and not r.tags and old:
            return True
        tag_ok = bool(r.tags) or (isinstance(rule, DeleteOlderThan) and not rule.tagged_only)
        if isinstance(rule, DeleteOlderThan) and role_image and old and tag_ok:
            return True
        orphan = d in m.subject and m.subject[d] not in m.records
        if isinstance(rule, DeleteOrphans) and orphan and (old or not rule.older_than):
            return True
        if isinstance(rule, DeleteQuarantineExpired) and role_image and d in prot.quarantined:
            since = prot.quarantined[d]
            if since is not None and NOW_S - since > rule.after.total_seconds():
                return True
    return False


def planned(records: list[ImageRecord], rules: RetentionRules, prot: Protections) -> RepositoryPlan:
    """The plan for one repository of a scenario, at NOW."""
    return plan_repository("team/app", records, rules, now=NOW, protections=prot)


def apply(records: list[ImageRecord], plan: RepositoryPlan) -> list[ImageRecord]:
    doomed = {d.digest for d in plan.deletions}
    return [r for r in records if r.digest not in doomed]


# -- properties ------------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[ImageRecord], RetentionRules, Protections]:
    records = draw(repositories())
    return records, draw(rule_sets()), draw(protections_for(records))


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(scenarios())
def test_the_plan_never_deletes_what_must_stay(
    scenario: tuple[list[ImageRecord], RetentionRules, Protections],
) -> None:
    records, rules, prot = scenario
    plan = planned(records, rules, prot)
    m = model_of(records, rules.age_from)
    deleted = {d.digest for d in plan.deletions}
    kept = set(m.records) - deleted

    # in use (by digest or tag), locked, quarantined and not expired
    assert not deleted & protected(m, rules, prot)
    # covered by a KEEP rule
    for rule in rules.keep:
        assert not deleted & must_keep(rule, m), rule
    # children of a kept index, referrers of a kept manifest, subjects of kept referrers
    for d in kept:
        assert not deleted & set(m.records[d].children)
        subject = m.subject.get(d)
        assert subject is None or subject not in deleted
    for d in deleted:
        subject = m.subject.get(d)
        assert subject is None or subject not in kept

    # every deletion is explained: a delete rule chose it, or it depends on a deleted one
    for d in deleted:
        r = m.records[d]
        follows_deleted = (d in m.subject and m.subject[d] in deleted) or (
            not r.tags and d in m.parents and m.parents[d] <= deleted
        )
        assert follows_deleted or selected_by_delete_rule(r, m, rules, prot), plan.decision(d)

    # the guard, the totals and the delete order agree with the decisions
    if plan.tripped:
        assert not deleted and plan.trip is not None and plan.trip.selected > plan.trip.limit
    else:
        if rules.guard.max_deletes is not None:
            assert len(deleted) <= rules.guard.max_deletes
        if rules.guard.max_share is not None and records:
            assert len(deleted) <= rules.guard.max_share * len(records) + 1e-9
    assert plan.images_deleted == len(deleted)
    assert plan.images_kept + plan.images_deleted == len(m.records) == len(plan.decisions)
    assert plan.bytes_freed == sum(m.records[d].size for d in deleted)
    position = {d: i for i, d in enumerate(plan.delete_order)}
    assert set(position) == deleted
    for d in deleted:
        for target in (*m.records[d].children, m.subject.get(d)):
            if target in position and target != d:
                assert position[d] < position[target]


def _judged_by_age(r: ImageRecord, m: Model, rules: RetentionRules) -> bool:
    """Whether some age rule of `rules` would judge `r`, had it an age."""
    d = r.digest
    if d in m.subject:
        orphan = m.subject[d] not in m.records
        rule = rules.orphans
        return orphan and rule is not None and rule.older_than > timedelta(0) and bool(m.images)
    if not any(i.digest == d for i in m.images):
        return False
    return any(
        (isinstance(x, DeleteUntagged) and not r.tags)
        or (isinstance(x, DeleteOlderThan) and (bool(r.tags) or not x.tagged_only))
        for x in rules.delete
    )


@PROPERTY
@given(scenarios())
def test_an_unknown_age_never_deletes_and_the_plan_says_so(
    scenario: tuple[list[ImageRecord], RetentionRules, Protections],
) -> None:
    records, rules, prot = scenario
    plan = planned(records, rules, prot)
    m = model_of(records, rules.age_from)
    for d in plan.decisions:
        r = m.records[d.digest]
        unknown = m.time(r) is None
        assert d.time == m.time(r)  # the plan shows the age it used, never a guessed one
        if d.rule in ("untagged", "olderThan") or (
            d.rule == "orphans" and rules.orphans and rules.orphans.older_than > timedelta(0)
        ):
            assert not unknown, d
        if d.rule == "ageUnknown":
            assert unknown and d.action == "keep" and d.reason.startswith("kept: age unknown")
            assert _judged_by_age(r, m, rules)
        if unknown and d.rule == "default":
            # an image no rule kept and no age rule could judge: nothing to explain
            assert not _judged_by_age(r, m, rules), d


@PROPERTY
@given(scenarios())
def test_planning_after_applying_deletes_nothing_more(
    scenario: tuple[list[ImageRecord], RetentionRules, Protections],
) -> None:
    records, rules, prot = scenario
    plan = planned(records, rules, prot)
    again = planned(apply(records, plan), rules, prot)
    assert again.images_deleted == 0
    assert again.tripped == plan.tripped  # a tripped plan changed nothing, so trips again
    kept_before = {d.digest: d.action for d in plan.decisions if d.action == "keep"}
    assert {d.digest for d in again.decisions} == set(kept_before)


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_plans_are_deterministic(
    scenario: tuple[list[ImageRecord], RetentionRules, Protections], rnd: random.Random
) -> None:
    records, rules, prot = scenario
    shuffled = records[:]
    rnd.shuffle(shuffled)
    first = planned(records, rules, prot)
    assert planned(shuffled, rules, prot) == first


# -- the semver parser against the reference implementation ------------------------------------

numbers = st.one_of(st.integers(0, 20).map(str), st.sampled_from(["00", "01", "007", "123"]))
identifiers = st.one_of(
    numbers, st.sampled_from(["rc", "alpha", "beta", "x-y", "-", "0a", "a0", "RC", ""])
)
version_texts = st.builds(
    lambda prefix, core, pre: prefix + ".".join(core) + (("-" + ".".join(pre)) if pre else ""),
    st.sampled_from(["", "", "v", "V", "vv"]),
    st.lists(numbers, min_size=2, max_size=4),
    st.lists(identifiers, max_size=3),
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(version_texts, st.text(alphabet="0123456789.-+vrc", max_size=12)))
def test_semver_parser_agrees_with_the_semver_package(text: str) -> None:
    bare = text[1:] if text[:1] in ("v", "V") else text
    ours = parse_semver(text)
    assert (ours is not None) == semver.Version.is_valid(bare)
    if ours is not None:
        assert ours.text() == str(semver.Version.parse(bare).replace(build=None))


valid_versions = st.builds(
    lambda prefix, core, pre: prefix + ".".join(core) + (("-" + ".".join(pre)) if pre else ""),
    st.sampled_from(["", "v"]),
    st.lists(st.integers(0, 3).map(str), min_size=3, max_size=3),
    st.lists(
        st.one_of(st.integers(0, 3).map(str), st.sampled_from(["rc", "alpha", "beta", "a-b"])),
        max_size=3,
    ),
)


@settings(max_examples=500, deadline=None)
@given(valid_versions, valid_versions)
def test_semver_order_agrees_with_the_semver_package(a: str, b: str) -> None:
    ka, kb = parse_semver(a), parse_semver(b)
    assert ka is not None and kb is not None
    va = semver.Version.parse(a.lstrip("vV"))
    vb = semver.Version.parse(b.lstrip("vV"))
    assert (ka > kb) - (ka < kb) == va.compare(vb)
