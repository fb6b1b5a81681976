"""What a rule sees of one repository while it is planned, and small text helpers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from ._records import ImageRecord

NEG_INF = float("-inf")

AgeFrom = Literal["pushed", "created"]
"""Where an image's age counts from. `pushed`: the registry's push time, else the ledger's
first-seen time (both facts), else unknown. `created`: the image config's `created` where
the listing carries it, else as `pushed`; a claim inside the image, not a fact about the
push (a reproducible build says 1970, a copied image keeps its original date)."""


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

    def time(self, r: ImageRecord) -> float | None:
        """The age anchor of `r` under `age_from` (epoch seconds), None when unknown."""
        return record_time(r, self.age_from)

    def word(self, r: ImageRecord) -> str:
        """How the age anchor of `r` is named in reasons: `pushed` or `created`."""
        return age_word(r, self.age_from)

    def has_pull_times(self) -> bool:
        return any(r.last_pulled is not None for r in self.images)

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
