"""The per-repository sections: quarantine, signatures, vulnerabilities, tags, retention.

Each section is replaced as a whole when a repository entry sets it (no deep merge), so
every section is complete on its own: its defaults are documented here and in
docs/policy.md.
"""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from ._base import Loc, PolicyModel, rule_error
from ._location import (
    DIRECTORY_SCHEMES,
    DOCUMENT_SCHEMES,
    KEY_SCHEMES,
    Location,
    Schemes,
)
from ._values import Duration, PolicyDate, PolicySeverity, PositiveDuration, Regex, TagPattern

__all__ = [
    "Allowance",
    "CosignVerifier",
    "DeleteOlderThan",
    "DeleteRule",
    "DeleteUntagged",
    "Guard",
    "KeepMostRecent",
    "KeepPulledWithin",
    "KeepRule",
    "KeepSemver",
    "KeepTagMatches",
    "Mode",
    "NotationVerifier",
    "Quarantine",
    "QuarantineStrategy",
    "Retention",
    "SemverKeep",
    "Signatures",
    "Tags",
    "UntaggedAge",
    "Vulnerabilities",
]

Mode = Literal["enforce", "audit"]
QuarantineStrategy = Literal["move", "retag", "lock"]

_REPO_PATH = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PLACEHOLDER = "{repository}"
_SAMPLE_REPOSITORY = "team/app"

# -- quarantine --------------------------------------------------------------------------------


class Quarantine(PolicyModel):
    """How a failed image is held (`defaults.quarantine` or per repository)."""

    strategy: QuarantineStrategy = "move"
    """`move` (any registry): copy to `repository`, delete from the source. `retag`: remove
    deployable tags, add `quarantined-<short digest>`. `lock` (ACR only): disable reads."""

    repository: str = "quarantine/{repository}"
    """Where `move` puts images: a template with `{repository}` (the source repository
    name) or a fixed repository name. Ignored by `retag` and `lock`."""

    @model_validator(mode="after")
    def _check_template(self) -> Quarantine:
        problem = _template_problem(self.repository)
        if problem is not None:
            raise rule_error([(("repository",), problem)])
        return self

    def render(self, repository: str) -> str:
        """The quarantine repository for a source repository."""
        return self.repository.replace(_PLACEHOLDER, repository)

    def holds(self, repository: str) -> bool:
        """Whether `repository` is a quarantine repository under this template."""
        if _PLACEHOLDER not in self.repository:
            return repository == self.repository
        pattern = ".+".join(re.escape(p) for p in self.repository.split(_PLACEHOLDER))
        return re.fullmatch(pattern, repository) is not None


def _template_problem(template: str) -> str | None:
    """What is wrong with a quarantine repository template, if anything."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"got {template!r}: {exc}"
    unknown = [f for f in fields if f != "repository"]
    if unknown:
        return f"unknown placeholder {{{unknown[0]}}} in {template!r}; valid: {_PLACEHOLDER}"
    if template.strip() == _PLACEHOLDER:
        return (
            f"got {template!r}: images would be quarantined into their own repository; "
            "expected e.g. 'quarantine/{repository}'"
        )
    rendered = template.replace(_PLACEHOLDER, _SAMPLE_REPOSITORY)
    if not _REPO_PATH.fullmatch(rendered):
        return (
            f"got {template!r}, which renders to {rendered!r} for {_SAMPLE_REPOSITORY!r}: not a "
            "valid repository name (lower-case components separated by '/')"
        )
    return None


# -- signatures --------------------------------------------------------------------------------


class CosignVerifier(PolicyModel):
    """Cosign signatures checked against public keys."""

    keys: tuple[Annotated[Location, Schemes(KEY_SCHEMES, "a cosign public key")], ...] = Field(
        min_length=1
    )
    """Public keys: file://, s3://, gs://, https://, awskms://, gcpkms://, azurekms://,
    secret:// or inline PEM."""


class NotationVerifier(PolicyModel):
    """Notary Project signatures checked with a trust policy and a trust store."""

    trust_policy: Annotated[Location, Schemes(DOCUMENT_SCHEMES, "a notation trust policy")]
    """The trust policy JSON document (notation's `trustpolicy.json` format)."""

    trust_store: Annotated[Location, Schemes(DIRECTORY_SCHEMES, "a notation trust store")]
    """The trust store directory: `x509/{ca,signingAuthority,tsa}/<name>/*.pem|crt|cer`."""


class Signatures(PolicyModel):
    """Which signatures an image needs before it may pass."""

    required: bool = True
    """Fail images without a valid signature. `false` records signatures but never fails."""

    cosign: CosignVerifier | None = None
    notation: NotationVerifier | None = None

    grace_period: Duration = Field(
        default=timedelta(minutes=5), json_schema_extra={"default": "5m"}
    )
    """How long after the push a missing signature leaves the image PENDING (the signer
    usually pushes it moments later); after that it fails. `0s` fails at once."""

    @model_validator(mode="after")
    def _check_verifier(self) -> Signatures:
        if self.required and self.cosign is None and self.notation is None:
            raise rule_error(
                [
                    (
                        (),
                        "signatures are required but no verifier is configured; expected "
                        "'cosign' and/or 'notation' (or 'required: false')",
                    )
                ]
            )
        return self


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


class Vulnerabilities(PolicyModel):
    """The vulnerability gate."""

    max_severity: PolicySeverity
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


class SemverKeep(PolicyModel):
    """Keep the newest versions by semver precedence; an omitted count means "all"."""

    majors: int | None = Field(default=None, ge=1)
    """How many of the highest major versions to keep."""

    minors_per_major: int | None = Field(default=None, ge=1)
    """How many of the highest minor versions to keep within each kept major."""

    patches_per_minor: int | None = Field(default=None, ge=1)
    """How many of the highest patch versions to keep within each kept minor."""


class KeepMostRecent(PolicyModel):
    most_recent: int = Field(ge=1)
    """Keep the N most recently pushed images."""


class KeepSemver(PolicyModel):
    semver: SemverKeep


class KeepPulledWithin(PolicyModel):
    pulled_within: PositiveDuration
    """Keep images pulled within this duration."""


class KeepTagMatches(PolicyModel):
    tag_matches: Regex
    """Keep images with any tag matching this regex (searched; anchor it)."""


class UntaggedAge(PolicyModel):
    older_than: PositiveDuration


class DeleteUntagged(PolicyModel):
    untagged: UntaggedAge
    """Delete untagged images older than `olderThan`."""


class DeleteOlderThan(PolicyModel):
    older_than: PositiveDuration
    """Delete images (tagged or not) older than this duration."""


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
}
_DELETE_KEYS = {"untagged": "DeleteUntagged", "olderThan": "DeleteOlderThan"}

KeepRule = Annotated[
    Union[  # noqa: UP007  # Annotated members need the Union spelling
        Annotated[KeepMostRecent, Tag("KeepMostRecent")],
        Annotated[KeepSemver, Tag("KeepSemver")],
        Annotated[KeepPulledWithin, Tag("KeepPulledWithin")],
        Annotated[KeepTagMatches, Tag("KeepTagMatches")],
    ],
    Discriminator(
        _single_key(_KEEP_KEYS),
        custom_error_type="rule_kind",
        custom_error_message="expected a keep rule with exactly one of: {valid}",
        custom_error_context={"valid": ", ".join(_KEEP_KEYS), "rule": "keep"},
    ),
]
"""One keep rule: `mostRecent`, `semver`, `pulledWithin` or `tagMatches`."""

DeleteRule = Annotated[
    Union[  # noqa: UP007
        Annotated[DeleteUntagged, Tag("DeleteUntagged")],
        Annotated[DeleteOlderThan, Tag("DeleteOlderThan")],
    ],
    Discriminator(
        _single_key(_DELETE_KEYS),
        custom_error_type="rule_kind",
        custom_error_message="expected a delete rule with exactly one of: {valid}",
        custom_error_context={"valid": ", ".join(_DELETE_KEYS), "rule": "delete"},
    ),
]
"""One delete rule: `untagged: {olderThan}` or `olderThan`."""


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
