"""The per-repository sections: quarantine, vulnerabilities, tags, retention.

`signatures` and `attestations` are in `_signing.py`; `hygiene`, `provenance` and
`promotion` in `_push.py`.

Each section is replaced as a whole when a repository entry sets it (no deep merge), so
every section is complete on its own: its defaults are documented here and in
docs/policy.md.
"""

from __future__ import annotations

import re
import typing
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationInfo,
    model_validator,
)

from .. import quarantine_names
from ..model import Severity
from ._base import Loc, PolicyModel, from_yaml, rule_error
from ._values import Duration, PolicyDate, PolicySeverity, PositiveDuration, Regex, TagPattern

__all__ = [
    "SCAN_SOURCES",
    "Allowance",
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
    "Mode",
    "MostRecent",
    "OrphanAge",
    "PullCount",
    "PulledWithin",
    "Quarantine",
    "QuarantineAge",
    "QuarantineStrategy",
    "Retention",
    "ScanSource",
    "SemverKeep",
    "SeverityCounts",
    "TagFilter",
    "Tags",
    "Unknown",
    "UntaggedAge",
    "Vulnerabilities",
]

Mode = Literal["enforce", "audit"]
QuarantineStrategy = Literal["move", "retag", "lock"]

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# -- quarantine --------------------------------------------------------------------------------


class Quarantine(PolicyModel):
    """How a failed image is held (`defaults.quarantine` or per repository)."""

    strategy: QuarantineStrategy = "move"
    """`move` (any registry): copy to `repository`, delete from the source. `retag`: remove
    deployable tags, add `quarantined-<short digest>`. `lock` (ACR only): disable reads."""

    repository: str = quarantine_names.DEFAULT_TEMPLATE
    """Where `move` puts images: a template with `{repository}` (the source repository
    name) or a fixed repository name. Ignored by `retag` and `lock`."""

    @model_validator(mode="after")
    def _check_template(self) -> Quarantine:
        problem = quarantine_names.quarantine_template_problem(self.repository)
        if problem is not None:
            raise rule_error([(("repository",), problem)])
        return self

    def render(self, repository: str) -> str:
        """The quarantine repository for a source repository."""
        return quarantine_names.render(self.repository, repository)

    def holds(self, repository: str) -> bool:
        """Whether `repository` is a quarantine repository under this template."""
        return quarantine_names.is_quarantine_repo(repository, self.repository)


# -- vulnerabilities ---------------------------------------------------------------------------


class Allowance(PolicyModel):
    """An accepted vulnerability, valid through the end of `until` (UTC)."""

    id: str = Field(min_length=1)
    """The vulnerability id as the scanner reports it (CVE-…, GHSA-…)."""

    until: PolicyDate
    """Last day the exception holds, inclusive through 23:59:59.999999 UTC."""

    reason: str = Field(min_length=1)
    """Why this is accepted; shown in verdicts and alerts."""

    @property
    def expires_at(self) -> datetime:
        """The first instant the exception no longer applies: midnight UTC after `until`."""
        return datetime.combine(self.until + timedelta(days=1), time(0), tzinfo=UTC)

    def active(self, now: datetime) -> bool:
        """Whether the exception applies at `now` (timezone-aware)."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"got naive datetime {now.isoformat()}, expected a timezone-aware now")
        return now < self.expires_at


ScanSource = Literal[
    "cosign-vuln",
    "harbor",
    "trivy-referrer",
    "grype-referrer",
    "ecr",
    "inspector",
    "artifact-analysis",
    "defender",
    "clair",
]
#: Where scan results may come from, in the order the docs list them.
SCAN_SOURCES: tuple[str, ...] = typing.get_args(ScanSource)


#: Scan sources that were removed, and what to use instead: the policy refuses them.
REMOVED_SOURCES: dict[str, str] = {
    "trivy-file": "removed; attach the report with `regwarden attach` and use trivy-referrer",
}


class ReferrerReports(PolicyModel):
    """Scan reports attached to the image as OCI referrers (`trivy-referrer`,
    `grype-referrer`)."""

    require_signed: bool = True
    """A report referrer counts only when it carries a valid signature under the
    repository's `signatures` policy (its keys, identities, trust policy and formats), as
    the image itself would: anyone who may push may attach a report. An unsigned report is
    ignored, and with no signed one the image stays PENDING until `scanTimeout`."""


class SeverityCounts(PolicyModel):
    """At most this many findings of exactly each listed severity (unlisted: no limit)."""

    unknown: StrictInt | None = Field(default=None, ge=0)
    negligible: StrictInt | None = Field(default=None, ge=0)
    low: StrictInt | None = Field(default=None, ge=0)
    medium: StrictInt | None = Field(default=None, ge=0)
    high: StrictInt | None = Field(default=None, ge=0)
    critical: StrictInt | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _not_empty(self) -> SeverityCounts:
        if not self.limits():
            raise rule_error(
                [((), f"no severity given; expected at least one of: {', '.join(_SEVERITIES)}")]
            )
        return self

    def limits(self) -> dict[Severity, int]:
        """The listed severities and their limits."""
        out: dict[Severity, int] = {}
        for name in _SEVERITIES:
            value = getattr(self, name)
            if value is not None:
                out[Severity[name.upper()]] = value
        return out


_SEVERITIES = tuple(str(s) for s in Severity)
_LIMIT_KEYS = ("maxSeverity", "maxCounts", "maxCvss")
_LIMIT_NAMES = ("max_severity", "max_counts", "max_cvss")


class _NoLimit:
    """Stands in for `maxSeverity` when no limit is given, so the problem is reported
    together with every other problem in the section."""

    def __repr__(self) -> str:
        return "no limit"


_NO_LIMIT = _NoLimit()


def _reject_no_limit(value: object) -> object:
    if value is _NO_LIMIT:
        raise ValueError("missing a limit: expected at least one of " + ", ".join(_LIMIT_KEYS))
    return value


class Vulnerabilities(PolicyModel):
    """The vulnerability gate. At least one limit is required: `maxSeverity`, `maxCounts` or
    `maxCvss`; a finding fails the image if it breaks any of them."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": [key]} for key in _LIMIT_KEYS]}
    )

    max_severity: Annotated[PolicySeverity | None, BeforeValidator(_reject_no_limit)] = None
    """The highest severity that may pass; any finding above it fails (`critical` lets
    everything through)."""

    fixable_only: bool = False
    """Count only findings that have a fixed version."""

    scan_timeout: PositiveDuration = Field(
        default=timedelta(minutes=30), json_schema_extra={"default": "30m"}
    )
    """How long to wait for a scan result (PENDING) before the image fails."""

    allow: tuple[Allowance, ...] = ()
    """Accepted vulnerabilities, each with an expiry date and a reason."""

    max_counts: SeverityCounts | None = None
    """At most N findings of exactly a severity: `{critical: 0, high: 5}`."""

    max_cvss: StrictFloat | None = Field(default=None, ge=0, le=10)
    """The highest CVSS score that may pass (0–10); findings without a score are not
    counted by this limit."""

    max_scan_age: PositiveDuration | None = None
    """A scan older than this fails the image. Unset: any age."""

    fail_open: bool = False
    """No scan within `scanTimeout` (or a failed scan) passes with a warning instead of
    failing. Default: fail closed."""

    sources: tuple[ScanSource, ...] | None = Field(default=None, min_length=1)
    """Where scan results come from; when set, exactly these are read. Unset: the
    registry's own scanner by its kind (`ecr` on ECR, `harbor` on Harbor,
    `artifact-analysis` on GAR, `defender` on ACR), plus `cosign-vuln` when attestation
    signers are configured. `trivy-referrer` and `grype-referrer` read Trivy and Grype
    JSON reports attached to the image as OCI referrers (`regwarden attach`, `oras
    attach`); `trivy-file` was removed (the policy refuses it)."""

    referrers: ReferrerReports = ReferrerReports()
    """How reports attached as OCI referrers are trusted."""

    @model_validator(mode="before")
    @classmethod
    def _removed_sources(cls, data: object) -> object:
        sources = data.get("sources") if isinstance(data, dict) else None
        if isinstance(sources, (list, tuple)):
            problems: list[tuple[Loc, str]] = [
                (("sources", i), f"scan source {s!r} was {REMOVED_SOURCES[s]}")
                for i, s in enumerate(sources)
                if isinstance(s, str) and s in REMOVED_SOURCES
            ]
            if problems:
                raise rule_error(problems)
        return data

    @model_validator(mode="before")
    @classmethod
    def _need_a_limit(cls, data: object, info: ValidationInfo) -> object:
        keys = _LIMIT_KEYS if from_yaml(info) else (*_LIMIT_KEYS, *_LIMIT_NAMES)
        if isinstance(data, dict) and not any(k in data for k in keys):
            return {**data, "maxSeverity": _NO_LIMIT}
        return data

    @model_validator(mode="after")
    def _check_allow(self) -> Vulnerabilities:
        seen: dict[str, int] = {}
        problems: list[tuple[Loc, str]] = []
        for i, item in enumerate(self.allow):
            if item.id in seen:
                problems.append(
                    (
                        ("allow", i, "id"),
                        f"duplicate id {item.id!r} (first at allow[{seen[item.id]}])",
                    )
                )
            seen.setdefault(item.id, i)
        first: dict[str, int] = {}
        for i, source in enumerate(self.sources or ()):
            if source in first:
                problems.append(
                    (
                        ("sources", i),
                        f"duplicate source {source!r} (first at sources[{first[source]}])",
                    )
                )
            first.setdefault(source, i)
        if problems:
            raise rule_error(problems)
        return self

    def allowance(self, vulnerability_id: str, now: datetime) -> Allowance | None:
        """The active exception for `vulnerability_id` at `now`, if any."""
        for item in self.allow:
            if item.id == vulnerability_id and item.active(now):
                return item
        return None


# -- tags --------------------------------------------------------------------------------------


class Tags(PolicyModel):
    """Rules for tag names and tag movement."""

    pattern: TagPattern | None = None
    """Every tag must match: `semver` or a regex (searched; anchor it). Unset: any tag."""

    forbidden: tuple[str, ...] = ()
    """Tag names that may not be pushed (exact names, e.g. `latest`)."""

    immutable: bool = False
    """Forbid moving an existing tag to another digest. Retention may still delete old
    images."""

    @model_validator(mode="after")
    def _check_forbidden(self) -> Tags:
        problems: list[tuple[Loc, str]] = []
        for i, tag in enumerate(self.forbidden):
            if not _TAG.fullmatch(tag):
                problems.append(
                    (
                        ("forbidden", i),
                        f"got {tag!r}, which is not a valid tag and can never "
                        "match; expected [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
                    )
                )
        if problems:
            raise rule_error(problems)
        return self


# -- retention ---------------------------------------------------------------------------------
#
# Each rule is a one-key mapping (`{mostRecent: 10}`); several keys accept a shorthand (an
# integer, a duration, a regex) or a mapping with more options. The policy models only check
# the YAML; `regwarden.retention.retention_rules` turns them into the planner's rule types.

Unknown = Literal["keep", "ignore"]
"""What a pull-based keep rule does in a repository where no pull data is recorded at all:
`keep` every image (nothing is deleted on a guess) or `ignore` the rule."""


def _shorthand(mapping_class: str, short: str) -> Any:
    """A discriminator for a key that takes a scalar shorthand or a mapping."""

    def discriminate(value: Any) -> str:
        if isinstance(value, dict) or type(value).__name__ == mapping_class:
            return mapping_class
        return short

    return discriminate


class SemverKeep(PolicyModel):
    """Keep the newest versions by semver precedence; an omitted count means "all"."""

    majors: int | None = Field(default=None, ge=1)
    """How many of the highest major versions to keep."""

    minors_per_major: int | None = Field(default=None, ge=1)
    """How many of the highest minor versions to keep within each kept major."""

    patches_per_minor: int | None = Field(default=None, ge=1)
    """How many of the highest patch versions to keep within each kept minor."""

    prereleases: StrictInt = Field(default=0, ge=0)
    """How many of the highest pre-release versions (`1.3.0-rc.1`) to keep, counted on
    their own across the repository. Default 0: pre-releases are kept only by other rules."""


class MostRecent(PolicyModel):
    """`mostRecent` in full: `{count: 10, by: pull, taggedOnly: true}`."""

    count: StrictInt = Field(ge=1)
    """How many images to keep."""

    by: Literal["push", "pull"] = "push"
    """Rank by push time (`push`) or by last pull (`pull`; never-pulled images rank last)."""

    tagged_only: bool = True
    """Rank only tagged images, so untagged leftovers never use up the count."""


class KeepMostRecent(PolicyModel):
    most_recent: Annotated[
        Union[  # noqa: UP007  # Annotated members need the Union spelling
            Annotated[StrictInt, Field(ge=1), Tag("int")],
            Annotated[MostRecent, Tag("MostRecent")],
        ],
        Discriminator(_shorthand("MostRecent", "int")),
    ]
    """Keep the N most recently pushed images: `mostRecent: 10`, or
    `mostRecent: {count: 10, by: pull, taggedOnly: true}`."""

    @property
    def spec(self) -> MostRecent:
        """The rule in full, whichever form was written."""
        value = self.most_recent
        return value if isinstance(value, MostRecent) else MostRecent(count=value)


class KeepSemver(PolicyModel):
    semver: SemverKeep


class PulledWithin(PolicyModel):
    """`pulledWithin` in full: `{within: 30d, unknown: keep}`."""

    within: PositiveDuration
    """Keep images pulled within this duration."""

    unknown: Unknown = "keep"
    """With no pull times recorded in the repository at all: `keep` every image, or
    `ignore` this rule."""


class KeepPulledWithin(PolicyModel):
    pulled_within: Annotated[
        Union[  # noqa: UP007
            Annotated[PositiveDuration, Tag("duration")],
            Annotated[PulledWithin, Tag("PulledWithin")],
        ],
        Discriminator(_shorthand("PulledWithin", "duration")),
    ]
    """Keep images pulled within this duration: `pulledWithin: 30d`, or
    `pulledWithin: {within: 30d, unknown: ignore}`."""

    @property
    def spec(self) -> PulledWithin:
        value = self.pulled_within
        return value if isinstance(value, PulledWithin) else PulledWithin(within=value)


class KeepPushedWithin(PolicyModel):
    pushed_within: PositiveDuration
    """Keep images pushed within this duration (age as `ageFrom` says: the push time, else
    the ledger's first-seen time; unknown ages are not kept by this rule)."""


class PullCount(PolicyModel):
    """`pullCount: {min: 5, unknown: keep}`."""

    min: StrictInt = Field(ge=1)
    """Keep images pulled at least this many times."""

    unknown: Unknown = "keep"
    """With no pull counts recorded in the repository at all: `keep` every image, or
    `ignore` this rule."""


class KeepPullCount(PolicyModel):
    pull_count: PullCount
    """Keep images pulled at least `min` times (where the registry counts pulls)."""


class TagFilter(PolicyModel):
    """`tagMatches` in full: `{include: "^release-", exclude: "-debug$"}`."""

    include: Regex | None = None
    """Keep images with a tag matching this regex (searched; anchor it)."""

    exclude: Regex | None = None
    """…unless the matching tag also matches this one. Alone: keep every tagged image
    except those whose tags all match it. At least one of the two is required (checked by
    `KeepTagMatches`, so the problem points at `tagMatches`)."""


class KeepTagMatches(PolicyModel):
    tag_matches: Annotated[
        Union[  # noqa: UP007
            Annotated[Regex, Tag("regex")],
            Annotated[TagFilter, Tag("TagFilter")],
        ],
        Discriminator(_shorthand("TagFilter", "regex")),
    ]
    """Keep images with any tag matching this regex (searched; anchor it), or
    `{include, exclude}`."""

    @model_validator(mode="after")
    def _include_or_exclude(self) -> KeepTagMatches:
        value = self.tag_matches
        if isinstance(value, TagFilter) and value.include is None and value.exclude is None:
            raise rule_error(
                [(("tagMatches",), "got neither include nor exclude, expected at least one")]
            )
        return self

    @property
    def spec(self) -> TagFilter:
        value = self.tag_matches
        return value if isinstance(value, TagFilter) else TagFilter(include=value)


class UntaggedAge(PolicyModel):
    older_than: PositiveDuration


class DeleteUntagged(PolicyModel):
    untagged: UntaggedAge
    """Delete untagged images older than `olderThan`."""


class DeleteOlderThan(PolicyModel):
    older_than: PositiveDuration
    """Delete tagged images older than this duration (untagged ones: the `untagged` rule)."""


class OrphanAge(PolicyModel):
    older_than: Duration = Field(default=timedelta(0), json_schema_extra={"default": "0s"})
    """Grace period: only orphans older than this are deleted (`0s`: any age)."""


class DeleteOrphans(PolicyModel):
    orphans: OrphanAge
    """Delete signatures, attestations and SBOMs whose subject is gone: `orphans: {}` or
    `orphans: {olderThan: 1d}`."""


class QuarantineAge(PolicyModel):
    after: PositiveDuration
    """How long an image may stay quarantined before retention may delete it."""


class DeleteQuarantineExpired(PolicyModel):
    quarantine_expired: QuarantineAge
    """Delete quarantined images once quarantined longer than `after`."""


def _single_key(tags: dict[str, str]) -> Any:
    """A discriminator for rules written as a one-key mapping: `{mostRecent: 10}`."""

    def discriminate(value: Any) -> str | None:
        if isinstance(value, dict):
            present = [tags[k] for k in value if k in tags]
            return present[0] if len(present) == 1 else None
        for tag in tags.values():
            if type(value).__name__ == tag:
                return tag
        return None

    return discriminate


_KEEP_KEYS = {
    "mostRecent": "KeepMostRecent",
    "semver": "KeepSemver",
    "pulledWithin": "KeepPulledWithin",
    "tagMatches": "KeepTagMatches",
    "pushedWithin": "KeepPushedWithin",
    "pullCount": "KeepPullCount",
}
_DELETE_KEYS = {
    "untagged": "DeleteUntagged",
    "olderThan": "DeleteOlderThan",
    "orphans": "DeleteOrphans",
    "quarantineExpired": "DeleteQuarantineExpired",
}

KeepRule = Annotated[
    Union[  # noqa: UP007  # Annotated members need the Union spelling
        Annotated[KeepMostRecent, Tag("KeepMostRecent")],
        Annotated[KeepSemver, Tag("KeepSemver")],
        Annotated[KeepPulledWithin, Tag("KeepPulledWithin")],
        Annotated[KeepTagMatches, Tag("KeepTagMatches")],
        Annotated[KeepPushedWithin, Tag("KeepPushedWithin")],
        Annotated[KeepPullCount, Tag("KeepPullCount")],
    ],
    Discriminator(
        _single_key(_KEEP_KEYS),
        custom_error_type="rule_kind",
        custom_error_message="expected a keep rule with exactly one of: {valid}",
        custom_error_context={"valid": ", ".join(_KEEP_KEYS), "rule": "keep"},
    ),
]
"""One keep rule: `mostRecent`, `semver`, `pulledWithin`, `tagMatches`, `pushedWithin` or
`pullCount`."""

DeleteRule = Annotated[
    Union[  # noqa: UP007
        Annotated[DeleteUntagged, Tag("DeleteUntagged")],
        Annotated[DeleteOlderThan, Tag("DeleteOlderThan")],
        Annotated[DeleteOrphans, Tag("DeleteOrphans")],
        Annotated[DeleteQuarantineExpired, Tag("DeleteQuarantineExpired")],
    ],
    Discriminator(
        _single_key(_DELETE_KEYS),
        custom_error_type="rule_kind",
        custom_error_message="expected a delete rule with exactly one of: {valid}",
        custom_error_context={"valid": ", ".join(_DELETE_KEYS), "rule": "delete"},
    ),
]
"""One delete rule: `untagged: {olderThan}`, `olderThan`, `orphans: {olderThan}` or
`quarantineExpired: {after}`."""


class Guard(PolicyModel):
    """Blast-radius limits for one retention run in one repository."""

    max_deletes: int = Field(default=100, ge=1)
    """At most this many deletions; a plan over the limit deletes nothing."""

    max_share: float = Field(default=0.5, gt=0, le=1)
    """At most this share (0 < share <= 1) of the repository's images."""


class Retention(PolicyModel):
    """What scheduled retention keeps and deletes. Keep beats delete; images in use (see
    `inventory`) are never deleted."""

    keep: tuple[KeepRule, ...] = ()
    delete: tuple[DeleteRule, ...] = ()
    guard: Guard = Guard()
    age_from: Literal["pushed", "created"] = "pushed"
    """Where an image's age counts from. `pushed` (default): the registry's push time, else
    the ledger's first-seen time; an image with neither has no age, and no age rule selects
    it. `created`: the image config's `created` where known, else as `pushed`. Risky: a
    reproducible build says 1970 and a copied image keeps its original date, so a fresh push
    can be older than any `olderThan` at once."""

    @model_validator(mode="after")
    def _one_of_each(self) -> Retention:
        problems: list[tuple[Loc, str]] = []
        first: dict[str, int] = {}
        for i, rule in enumerate(self.delete):
            if isinstance(rule, DeleteOrphans | DeleteQuarantineExpired):
                key = "orphans" if isinstance(rule, DeleteOrphans) else "quarantineExpired"
                if key in first:
                    problems.append(
                        (
                            ("delete", i),
                            f"a second {key} rule (first at delete[{first[key]}]); "
                            "expected at most one",
                        )
                    )
                first.setdefault(key, i)
        if problems:
            raise rule_error(problems)
        return self
