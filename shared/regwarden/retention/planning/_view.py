"""What a rule sees of one repository while it is planned, and small text helpers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from ._records import ImageRecord

NEG_INF = float("-inf")

AgeFrom = Literal["pushed", "created"]
"""Where an image's age counts from. `pushed`: the registry's push time, else the ledger's
first-seen time (both facts), else unknown. `created`: the image config's `created` where
the listing carries it, else as `pushed`; a claim inside the image, not a fact about the
push (a reproducible build says 1970, a copied image keeps its original date)."""


@dataclass(frozen=True, slots=True)
class PullTracking:
    """How far back a repository's pull data goes (issue #16).

    `since` (epoch seconds): when the ledger began recording this repository's pulls (its
    `pull_tracking_since`); None: it never did; -inf (the default): the records' pull data
    is complete however far back (a caller that knows no better, as before tracking
    existed). `registry_times`: the registry keeps last-pulled times itself (ECR), so the
    records' last pulls are complete whatever `since` says; pull counts still come from
    the ledger only.

    A pull-based rule judges "not pulled" only where this covers its question: an image
    whose pulls are not all on record is unknown, and kept.
    """

    since: float | None = NEG_INF
    registry_times: bool = False

    @property
    def times_since(self) -> float | None:
        """From when last-pulled times are complete (-inf: always; None: never)."""
        return NEG_INF if self.registry_times else self.since

    def times_cover(self, start: float, pushed: float | None) -> bool:
        """Whether every pull of an image pushed at `pushed` since `start` is on record:
        tracking began by `start`, or by the image's push (its whole life is on record)."""
        since = self.times_since
        if since is None:
            return False
        return since <= start or (pushed is not None and since <= pushed)

    def counts_cover(self, pushed: float | None) -> bool:
        """Whether an image's pull count is complete: tracking began by its push."""
        since = self.since
        if since is None:
            return False
        return since == NEG_INF or (pushed is not None and since <= pushed)


COMPLETE_PULLS = PullTracking()
"""Pull data taken as complete: what a plan assumes unless told how far tracking goes."""
NO_PULL_TRACKING = PullTracking(None)
"""Nothing tracks the repository's pulls: pull state is unknown wherever no pull is seen."""


@dataclass(slots=True)
class RepoView:
    """The repository under planning, prepared once for every rule.

    `images` are the records rules act on (not referrers, not untagged children of an
    index), newest first by age anchor (see `AgeFrom`; unknown ages last), ties broken by
    digest. Rules append human-readable notes to `warnings`.
    """

    now: float
    images: list[ImageRecord]
    quarantined: Mapping[str, float | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    age_from: AgeFrom = "pushed"
    pull_tracking: PullTracking = COMPLETE_PULLS

    def time(self, r: ImageRecord) -> float | None:
        """The age anchor of `r` under `age_from` (epoch seconds), None when unknown."""
        return record_time(r, self.age_from)

    def word(self, r: ImageRecord) -> str:
        """How the age anchor of `r` is named in reasons: `pushed` or `created`."""
        return age_word(r, self.age_from)

    def has_pull_times(self) -> bool:
        """Any pull data to judge by: a recorded pull, or the ledger tracking this
        repository's pulls where the registry keeps none (then "nobody pulled" is data)."""
        tracked = self.pull_tracking.times_since
        return (tracked is not None and tracked != NEG_INF) or any(
            r.last_pulled is not None for r in self.images
        )

    def has_pull_counts(self) -> bool:
        return any(r.pulls is not None for r in self.images)


def record_time(r: ImageRecord, age_from: AgeFrom = "pushed") -> float | None:
    """The age anchor: push (or ledger first-seen) time; with `created`, the config's
    `created` first. None when unknown: never a guess."""
    if age_from == "created" and r.created is not None:
        return r.created
    return r.pushed


def age_word(r: ImageRecord, age_from: AgeFrom = "pushed") -> str:
    return "created" if age_from == "created" and r.created is not None else "pushed"


def human_seconds(seconds: float) -> str:
    """A coarse age: `12d`, `5h`, `30m`, `45s` (floored to the largest unit)."""
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d"
    if s >= 3600:
        return f"{s // 3600}h"
    if s >= 60:
        return f"{s // 60}m"
    return f"{max(s, 0)}s"


def human_time(epoch: float) -> str:
    """An instant as reasons name it: `2026-12-07 16:51 UTC`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def human_duration(value: timedelta) -> str:
    """An exact duration as a policy writes it: `7d`, `36h`, `90m`, `1d2h3m4s`."""
    s = int(value.total_seconds())
    if s == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts)
