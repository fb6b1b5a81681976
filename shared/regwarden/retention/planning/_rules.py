"""Retention rules as plain frozen values, independent of the policy file's YAML shapes.

Keep rules name the images they keep; delete rules say whether one image is selected.
KEEP always wins, rules act on images (digests), and a tag match protects the whole
image. Referrers (signatures, attestations, SBOMs) and the untagged children of an index
are not judged by rules at all: they follow their subject or index (see the planner).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from operator import itemgetter
from typing import ClassVar, Literal

from ...errors import PolicyError
from ._records import ImageRecord, cosign_subject
from ._semver import PreId, semver_tuple
from ._view import NEG_INF, AgeFrom, RepoView, human_duration, human_seconds, human_time

__all__ = [
    "AgeFrom",
    "DeleteOlderThan",
    "DeleteOrphans",
    "DeleteQuarantineExpired",
    "DeleteRule",
    "DeleteUntagged",
    "Guard",
    "KeepMostRecent",
    "KeepPullCount",
    "KeepPulledWithin",
    "KeepPushedWithin",
    "KeepRule",
    "KeepSemver",
    "KeepTagMatches",
    "RetentionRules",
]

Unknown = Literal["keep", "ignore"]
"""What a pull-based keep rule does in a repository with no pull data at all: `keep`
every image (nothing is deleted on a guess) or `ignore` the rule."""


def _count(rule: str, key: str, value: object, *, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if type(value) is not int or value < minimum:
        extra = " or null for all" if optional else ""
        raise PolicyError(
            f"retention {rule}.{key}: got {value!r}, expected an integer >= {minimum}{extra}"
        )


def _duration(rule: str, key: str, value: object, *, positive: bool) -> float:
    if not isinstance(value, timedelta):
        raise PolicyError(
            f"retention {rule}.{key}: got {value!r}, expected a duration (datetime.timedelta)"
        )
    seconds = value.total_seconds()
    if seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise PolicyError(f"retention {rule}.{key}: got {human_duration(value)}, expected {bound}")
    return seconds


def _choice(rule: str, key: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise PolicyError(f"retention {rule}.{key}: got {value!r}; valid: {', '.join(valid)}")


def _regex(rule: str, key: str, value: str | None) -> re.Pattern[str] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PolicyError(f"retention {rule}.{key}: got {value!r}, expected a regex string")
    try:
        return re.compile(value)
    except re.error as exc:
        raise PolicyError(
            f"retention {rule}.{key}: got {value!r}, expected a valid regular expression ({exc})"
        ) from None


_SEMVER_STARTS = frozenset("0123456789vV")
_VERSION = itemgetter(0, 1, 2)
_FIRST = itemgetter(0)


def _limit(n: int | None) -> str:
    return "all" if n is None else str(n)


# -- keep rules ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepMostRecent:
    """Keep the `count` most recent images, by push time or by last pull.

    Only tagged images are ranked unless `tagged_only` is False, so untagged leftovers,
    signatures and index children never use up the count (containers-roadmap#2613).
    By pull, never-pulled images rank after pulled ones, in push order.
    """

    name: ClassVar[str] = "mostRecent"

    count: int
    by: Literal["push", "pull"] = "push"
    tagged_only: bool = True

    def __post_init__(self) -> None:
        _count(self.name, "count", self.count, minimum=1)
        _choice(self.name, "by", self.by, ("push", "pull"))

    def keeps(self, view: RepoView) -> Iterator[tuple[str, str]]:
        pool = view.images
        if self.by == "pull":
            if self.tagged_only:
                pool = [r for r in pool if r.tags]
            if not view.has_pull_times():
                view.warnings.append(
                    f"mostRecent {self.count} by pull: no pull times recorded in this "
                    "repository; ranked by push time"
                )
            else:
                pool = sorted(
                    pool,
                    key=lambda r: NEG_INF if r.last_pulled is None else r.last_pulled,
                    reverse=True,  # stable: equal pull times keep push order
                )
            label = f"kept: {self.count} most recently pulled (rank "
        else:
            label = f"kept: {self.count} most recent (rank "
        rank = 0
        tagged_only = self.tagged_only
        for r in pool:
            if tagged_only and not r.tags:
                continue
            rank += 1
            if rank > self.count:
                return
            yield r.digest, f"{label}{rank})"


@dataclass(frozen=True, slots=True)
class KeepSemver:
    """Keep the highest semver versions: `majors` latest majors, `minors_per_major` latest
    minors in each, `patches_per_minor` latest patches in each (None = all). Pre-releases
    have their own count: the `prereleases` highest pre-release versions in the repository.
    Tags that are not semver are ignored by this rule; a `v` prefix is accepted."""

    name: ClassVar[str] = "semver"

    majors: int | None = None
    minors_per_major: int | None = None
    patches_per_minor: int | None = None
    prereleases: int = 0

    def __post_init__(self) -> None:
        _count(self.name, "majors", self.majors, minimum=1, optional=True)
        _count(self.name, "minorsPerMajor", self.minors_per_major, minimum=1, optional=True)
        _count(self.name, "patchesPerMinor", self.patches_per_minor, minimum=1, optional=True)
        _count(self.name, "prereleases", self.prereleases, minimum=0)

    def keeps(self, view: RepoView) -> Iterator[tuple[str, str]]:
        releases: list[tuple[int, int, int, str, str]] = []
        pres: list[tuple[tuple[int, int, int, int, tuple[PreId, ...]], str, str]] = []
        starts = _SEMVER_STARTS
        for r in view.images:
            for tag in r.tags:
                if tag[:1] not in starts:
                    continue
                key = semver_tuple(tag)
                if key is None:
                    continue
                if key[3]:
                    releases.append((key[0], key[1], key[2], tag, r.digest))
                else:
                    pres.append((key, tag, r.digest))
        # highest first; equal versions (`1.2.3` and `v1.2.3`) keep image order (stable)
        releases.sort(key=_VERSION, reverse=True)
        big = len(releases) + 1
        max_major = self.majors or big
        max_minor = self.minors_per_major or big
        max_patch = self.patches_per_minor or big
        lim = (_limit(self.majors), _limit(self.minors_per_major), _limit(self.patches_per_minor))
        cur_major = cur_minor = cur_patch = -1
        mi = ni = pi = 0
        for major, minor, patch, tag, digest in releases:
            if major != cur_major:
                cur_major, cur_minor, mi, ni = major, -1, mi + 1, 0
                if mi > max_major:
                    break
            if minor != cur_minor:
                cur_minor, cur_patch, ni, pi = minor, -1, ni + 1, 0
            if ni > max_minor:
                continue
            if patch != cur_patch:
                cur_patch, pi = patch, pi + 1
            if pi > max_patch:
                continue
            yield (
                digest,
                f"kept: semver {tag} (major {mi} of {lim[0]}, "
                f"minor {ni} of {lim[1]}, patch {pi} of {lim[2]})",
            )
        if self.prereleases:
            pres.sort(key=_FIRST, reverse=True)
            rank = 0
            current: object = None
            for key, tag, digest in pres:
                if key != current:
                    current, rank = key, rank + 1
                    if rank > self.prereleases:
                        break
                yield (
                    digest,
                    f"kept: semver pre-release {tag} (rank {rank} of {self.prereleases})",
                )


@dataclass(frozen=True, slots=True)
class KeepTagMatches:
    """Keep images with a tag that matches `include` and does not match `exclude`
    (`re.search`; anchor with `^…$`). Either may be omitted, not both: `exclude` alone
    keeps every tagged image except those whose tags all match it."""

    name: ClassVar[str] = "tagMatches"

    include: str | None = None
    exclude: str | None = None
    _include: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _exclude: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.include is None and self.exclude is None:
            raise PolicyError(
                "retention tagMatches: got neither include nor exclude, expected at least one"
            )
        object.__setattr__(self, "_include", _regex(self.name, "include", self.include))
        object.__setattr__(self, "_exclude", _regex(self.name, "exclude", self.exclude))

    def _why(self, tag: str) -> str:
        if self.exclude is None:
            return f"kept: tag {tag!r} matches {self.include!r}"
        if self.include is None:
            return f"kept: tag {tag!r} does not match excluded {self.exclude!r}"
        return f"kept: tag {tag!r} matches {self.include!r} and not {self.exclude!r}"

    def keeps(self, view: RepoView) -> Iterator[tuple[str, str]]:
        inc, exc = self._include, self._exclude
        if exc is None and inc is not None:  # the common case, kept tight
            search = inc.search
            for r in view.images:
                for tag in r.tags:
                    if search(tag):
                        yield r.digest, self._why(tag)
                        break
            return
        for r in view.images:
            for tag in r.tags:
                if (inc is None or inc.search(tag)) and (exc is None or not exc.search(tag)):
                    yield r.digest, self._why(tag)
                    break


@dataclass(frozen=True, slots=True)
class KeepPulledWithin:
    """Keep images pulled within `within`. See `Unknown` for repositories with no pull
    times at all (distribution keeps none; ECR records them about daily)."""

    name: ClassVar[str] = "pulledWithin"

    within: timedelta
    unknown: Unknown = "keep"
    _seconds: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_seconds", _duration(self.name, "within", self.within, positive=True)
        )
        _choice(self.name, "unknown", self.unknown, ("keep", "ignore"))

    def keeps(self, view: RepoView) -> Iterator[tuple[str, str]]:
        label = human_duration(self.within)
        if not view.has_pull_times():
            yield from _no_pull_data(view, f"pulledWithin {label}", "pull times", self.unknown)
            return
        now = view.now
        since = now - self._seconds
        began = view.pull_tracking.times_since
        # every image's pulls are on record when tracking began by the window's start
        # (always, for complete data): the loop then has one test per image
        partial = began is None or began > since
        unknown = 0
        for r in view.images:
            pulled = r.last_pulled
            if pulled is not None and pulled >= since:
                yield (
                    r.digest,
                    f"kept: pulled within {label} (pulled {human_seconds(now - pulled)} ago)",
                )
            elif partial and not view.pull_tracking.times_cover(since, r.pushed):
                unknown += 1
                yield r.digest, self._unknown(view, label)
        if unknown:
            view.warnings.append(
                f"pulledWithin {label}: {unknown} images with no pull on record kept, their "
                f"pull state unknown ({self._untracked(view, label)})"
            )

    @staticmethod
    def _untracked(view: RepoView, label: str) -> str:
        began = view.pull_tracking.times_since
        if began is None:
            return "pulls of this repository are not tracked: no pull-tracking record"
        return (
            f"pull tracking began {human_time(began)}, less than {label} ago "
            f"({human_seconds(view.now - began)})"
        )

    def _unknown(self, view: RepoView, label: str) -> str:
        return f"kept: pulledWithin {label} cannot be judged: {self._untracked(view, label)}"


@dataclass(frozen=True, slots=True)
class KeepPullCount:
    """Keep images pulled at least `min_pulls` times (where the registry or the ledger
    counts pulls). See `Unknown` for repositories with no pull counts at all."""

    name: ClassVar[str] = "pullCount"

    min_pulls: int
    unknown: Unknown = "keep"

    def __post_init__(self) -> None:
        _count(self.name, "minPulls", self.min_pulls, minimum=1)
        _choice(self.name, "unknown", self.unknown, ("keep", "ignore"))

    def keeps(self, view: RepoView) -> Iterator[tuple[str, str]]:
        if not view.has_pull_counts():
            yield from _no_pull_data(
                view, f"pullCount {self.min_pulls}", "pull counts", self.unknown
            )
            return
        least = self.min_pulls
        tracking = view.pull_tracking
        partial = tracking.since != NEG_INF
        unknown = 0
        for r in view.images:
            if r.pulls is not None and r.pulls >= least:
                yield r.digest, f"kept: pulled {r.pulls} times (at least {least})"
            elif partial and not tracking.counts_cover(r.pushed):
                # pulls before tracking began are not counted: fewer is no evidence
                unknown += 1
                counted = r.pulls or 0
                began = tracking.since
                why = (
                    "pulls of this repository are not tracked"
                    if began is None
                    else f"pushed before pull tracking began {human_time(began)}"
                )
                yield (
                    r.digest,
                    f"kept: pullCount {least} cannot be judged: {counted} pulls counted, {why}",
                )
        if unknown:
            view.warnings.append(
                f"pullCount {least}: {unknown} images with fewer pulls on record kept, their "
                "pulls before tracking began unknown"
            )


def _no_pull_data(
    view: RepoView, rule: str, what: str, unknown: Unknown
) -> Iterator[tuple[str, str]]:
    if unknown == "ignore":
        view.warnings.append(
            f"{rule}: no {what} recorded in this repository; rule ignored (unknown: ignore)"
        )
        return
    view.warnings.append(
        f"{rule}: no {what} recorded in this repository; keeping every image "
        "(unknown: keep; set unknown: ignore if the registry records them)"
    )
    reason = f"kept: {rule} cannot be judged: no {what} recorded in this repository"
    for r in view.images:
        yield r.digest, reason


@dataclass(frozen=True, slots=True)
class KeepPushedWithin:
    """Keep images whose age (see `AgeFrom`) is within `within`; unknown ages are not
    kept by this rule (and no age rule deletes them either)."""

    name: ClassVar[str] = "pushedWithin"

    within: timedelta
    _seconds: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_seconds", _duration(self.name, "within", self.within, positive=True)
        )

    def keeps(self, view: RepoView) -> Iterator[tuple[str, str]]:
        label = human_duration(self.within)
        now = view.now
        since = now - self._seconds
        for r in view.images:
            t = view.time(r)
            if t is not None and t >= since:
                yield (
                    r.digest,
                    f"kept: pushed within {label} ({view.word(r)} {human_seconds(now - t)} ago)",
                )


KeepRule = (
    KeepMostRecent
    | KeepSemver
    | KeepTagMatches
    | KeepPulledWithin
    | KeepPullCount
    | KeepPushedWithin
)
_KEEP_TYPES = (
    KeepMostRecent,
    KeepSemver,
    KeepTagMatches,
    KeepPulledWithin,
    KeepPullCount,
    KeepPushedWithin,
)

# -- delete rules ----------------------------------------------------------------------------


def _older(r: ImageRecord, view: RepoView, seconds: float, label: str) -> str | None:
    """`label` completed with the age when `r` (its age anchor, see `AgeFrom`) is older
    than `seconds`; None when it is not, or its age is unknown (never a guess)."""
    t = view.time(r)
    if t is None:
        return None
    age = view.now - t
    if age <= seconds:
        return None
    return f"{label}{view.word(r)} {human_seconds(age)} ago)"


@dataclass(frozen=True, slots=True)
class DeleteUntagged:
    """Select untagged images older than `older_than` (unknown age: never)."""

    name: ClassVar[str] = "untagged"
    scope: ClassVar[str] = "image"

    older_than: timedelta
    _seconds: float = field(init=False, repr=False, compare=False)
    _label: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_seconds", _duration(self.name, "olderThan", self.older_than, positive=False)
        )
        object.__setattr__(
            self, "_label", f"deleted: untagged older than {human_duration(self.older_than)} ("
        )

    def selects(self, r: ImageRecord, view: RepoView) -> str | None:
        if r.tags:
            return None
        return _older(r, view, self._seconds, self._label)

    def needs_age(self, r: ImageRecord) -> bool:
        """Whether this rule would judge `r` by its age (so an unknown age is worth saying)."""
        return not r.tags


@dataclass(frozen=True, slots=True)
class DeleteOlderThan:
    """Select tagged images older than `older_than` (with `tagged_only=False`, untagged
    ones too). Age counts from push; re-tagging does not reset it."""

    name: ClassVar[str] = "olderThan"
    scope: ClassVar[str] = "image"

    older_than: timedelta
    tagged_only: bool = True
    _seconds: float = field(init=False, repr=False, compare=False)
    _label: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_seconds", _duration(self.name, "olderThan", self.older_than, positive=False)
        )
        what = "tagged older than" if self.tagged_only else "older than"
        object.__setattr__(self, "_label", f"deleted: {what} {human_duration(self.older_than)} (")

    def selects(self, r: ImageRecord, view: RepoView) -> str | None:
        if self.tagged_only and not r.tags:
            return None
        return _older(r, view, self._seconds, self._label)

    def needs_age(self, r: ImageRecord) -> bool:
        return bool(r.tags) or not self.tagged_only


@dataclass(frozen=True, slots=True)
class DeleteOrphans:
    """Select referrers (signatures, attestations, SBOMs, cosign `sha256-….sig` tags)
    whose subject is not in the repository, once older than `older_than`. A repository
    that holds no images at all (a `COSIGN_REPOSITORY` for signatures kept elsewhere) is
    left alone with a warning."""

    name: ClassVar[str] = "orphans"
    scope: ClassVar[str] = "orphan"

    older_than: timedelta = timedelta(0)
    _seconds: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_seconds", _duration(self.name, "olderThan", self.older_than, positive=False)
        )

    def selects(self, r: ImageRecord, view: RepoView) -> str | None:
        """With `olderThan: 0s` any orphan is selected, whatever its age; otherwise one of
        unknown age never is."""
        subject = r.subject or cosign_subject(r.tags)
        t = view.time(r)
        if self._seconds > 0 and (t is None or view.now - t <= self._seconds):
            return None
        age = "" if t is None else f", {view.word(r)} {human_seconds(view.now - t)} ago"
        return f"deleted: orphaned referrer (subject {subject} is not in the repository{age})"

    def needs_age(self, r: ImageRecord) -> bool:
        return self._seconds > 0


@dataclass(frozen=True, slots=True)
class DeleteQuarantineExpired:
    """Lift the quarantine protection `after` the image was quarantined, and select the
    image for deletion. An unknown quarantine time never expires."""

    name: ClassVar[str] = "quarantineExpired"
    scope: ClassVar[str] = "image"

    after: timedelta
    _seconds: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_seconds", _duration(self.name, "after", self.after, positive=True)
        )

    def expired(self, since: float | None, now: float) -> bool:
        return since is not None and now - since > self._seconds

    def needs_age(self, r: ImageRecord) -> bool:
        return False  # counts from the quarantine time, not the image's age

    def selects(self, r: ImageRecord, view: RepoView) -> str | None:
        if r.digest not in view.quarantined:
            return None
        since = view.quarantined[r.digest]
        if since is None or not self.expired(since, view.now):
            return None
        return (
            f"deleted: quarantined longer than {human_duration(self.after)} "
            f"(since {human_seconds(view.now - since)} ago)"
        )


DeleteRule = DeleteUntagged | DeleteOlderThan | DeleteOrphans | DeleteQuarantineExpired
_DELETE_TYPES = (DeleteUntagged, DeleteOlderThan, DeleteOrphans, DeleteQuarantineExpired)

# -- the rule set ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Guard:
    """Blast-radius limits for one repository: a plan selecting more than `max_deletes`
    images, or more than `max_share` of the repository's manifests, deletes nothing.
    None switches a limit off."""

    max_deletes: int | None = 100
    max_share: float | None = 0.5

    def __post_init__(self) -> None:
        _count("guard", "maxDeletes", self.max_deletes, minimum=0, optional=True)
        share = self.max_share
        if share is not None and (
            isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1
        ):
            raise PolicyError(
                f"retention guard.maxShare: got {share!r}, expected a number with 0 < share <= 1"
            )


@dataclass(frozen=True, slots=True)
class RetentionRules:
    """Keep rules (in order; the first that keeps an image explains it), delete rules
    (in order; the first that selects an image explains it), the guard, and where ages
    count from (`age_from`, see `AgeFrom`)."""

    keep: tuple[KeepRule, ...] = ()
    delete: tuple[DeleteRule, ...] = ()
    guard: Guard = Guard()
    age_from: AgeFrom = "pushed"

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep", tuple(self.keep))
        object.__setattr__(self, "delete", tuple(self.delete))
        if self.age_from not in ("pushed", "created"):
            raise PolicyError(f"retention ageFrom: got {self.age_from!r}; valid: pushed, created")
        for i, rule in enumerate(self.keep):
            if not isinstance(rule, _KEEP_TYPES):
                valid = ", ".join(t.__name__ for t in _KEEP_TYPES)
                raise PolicyError(f"retention keep[{i}]: got {rule!r}; valid: {valid}")
        seen: set[str] = set()
        for i, drule in enumerate(self.delete):
            if not isinstance(drule, _DELETE_TYPES):
                valid = ", ".join(t.__name__ for t in _DELETE_TYPES)
                raise PolicyError(f"retention delete[{i}]: got {drule!r}; valid: {valid}")
            if isinstance(drule, DeleteOrphans | DeleteQuarantineExpired):
                if drule.name in seen:
                    raise PolicyError(
                        f"retention delete[{i}]: got a second {drule.name} rule, expected one"
                    )
                seen.add(drule.name)
        if not isinstance(self.guard, Guard):
            raise PolicyError(f"retention guard: got {self.guard!r}, expected Guard")

    @property
    def orphans(self) -> DeleteOrphans | None:
        for rule in self.delete:
            if isinstance(rule, DeleteOrphans):
                return rule
        return None

    @property
    def quarantine_expiry(self) -> DeleteQuarantineExpired | None:
        for rule in self.delete:
            if isinstance(rule, DeleteQuarantineExpired):
                return rule
        return None
