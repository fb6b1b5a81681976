"""The report's pulls (issue #16): most pulled, not pulled in N days, who pulls what. Pure:
the inventory's pull tallies, tracking starts and images, and `now`, in; a `PullsSection`
out.

"Not pulled within N days" is answered only where the pull record covers the whole of it,
as retention's `pulledWithin` judges (`retention.planning.PullTracking.times_cover`): the
registry keeps pull times itself (ECR), or the ledger began tracking the repository's
pulls at least N days ago, or before the image was first seen. Elsewhere the image's pull
state is unknown ("unknown since tracking began <date>"), never "not pulled"."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from ._model import (
    ImageFact,
    ImageRow,
    Inventory,
    PrincipalPulls,
    PulledImage,
    PullFact,
    PullGroup,
    PullsSection,
    UnknownPulls,
)

__all__ = ["UNNAMED", "last_pulled", "pull_state", "pulls_section", "tally_times"]

UNNAMED = "(unnamed)"
"""How a principal the events did not name ("") is shown."""


def last_pulled(image: ImageFact) -> datetime | None:
    """The later of the ledger's and the registry's last-pulled times."""
    times = [t for t in (image.last_pulled, image.registry_last_pulled) if t is not None]
    return max(times) if times else None


def tally_times(inv: Inventory) -> dict[tuple[str, str], datetime]:
    """(repository, digest) → the last pull in the ledger's tallies."""
    out: dict[tuple[str, str], datetime] = {}
    for t in inv.pulls:
        key = (t.repository, t.digest)
        if key not in out or out[key] < t.last_pulled:
            out[key] = t.last_pulled
    return out


def pull_state(
    inv: Inventory,
    image: ImageFact,
    *,
    now: datetime,
    days: int,
    tallied: datetime | None = None,
) -> str:
    """`recent` (pulled within `days`, or younger than that), `not-pulled` (the record
    covers the whole window and holds no pull in it) or `unknown` (it does not).
    `tallied`: the image's last pull in the ledger's tallies (`tally_times`)."""
    start = now - timedelta(days=days)
    last = _latest([last_pulled(image), tallied])
    if last is not None and last >= start:
        return "recent"  # a recorded pull answers, whatever the coverage
    born = image.first_seen or image.created
    if born is not None and born >= start:
        return "recent"  # younger than the window: not stale, pulled or not
    if not inv.registry_pull_times:
        since = inv.pull_tracking.get(image.repository)
        seen = image.first_seen
        if since is None or not (since <= start or (seen is not None and since <= seen)):
            return "unknown"
    return "not-pulled"


def _row(image: ImageFact, now: datetime, detail: str) -> ImageRow:
    born = image.created or image.first_seen
    return ImageRow(
        repository=image.repository,
        digest=image.digest,
        team=image.team,
        tags=image.tags,
        bytes=sum(image.blobs.values()),
        layers=image.layers,
        age_days=None if born is None else max(0.0, (now - born).total_seconds() / 86400),
        detail=detail,
    )


def _latest(times: Iterable[datetime | None]) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _group(name: str, tallies: Sequence[PullFact]) -> PullGroup:
    return PullGroup(
        name=name,
        pulls=sum(t.count for t in tallies),
        images=len({(t.repository, t.digest) for t in tallies}),
        last_pulled=_latest(t.last_pulled for t in tallies),
    )


def _by_pulls(group: PullGroup) -> tuple[object, ...]:
    return (-group.pulls, group.name)


def pulls_section(
    inv: Inventory, images: Sequence[ImageFact], *, now: datetime, stale_days: int, top: int
) -> PullsSection:
    """`images`: the report's images (artifacts left out). Tallies of digests the registry
    no longer holds still count toward who pulls what, not toward most pulled."""
    present = {(i.repository, i.digest): i for i in images}
    artifacts = {(i.repository, i.digest) for i in inv.images if i.kind == "artifact"}
    tallies = [t for t in inv.pulls if (t.repository, t.digest) not in artifacts]
    per_image: dict[tuple[str, str], list[PullFact]] = defaultdict(list)
    for t in tallies:
        per_image[(t.repository, t.digest)].append(t)

    most: list[PulledImage] = []
    for key, rows in per_image.items():
        image = present.get(key)
        if image is None:
            continue
        most.append(
            PulledImage(
                repository=image.repository,
                digest=image.digest,
                team=image.team,
                tags=image.tags,
                pulls=sum(t.count for t in rows),
                last_pulled=_latest([*(t.last_pulled for t in rows), last_pulled(image)]),
                principals=len({t.principal for t in rows}),
            )
        )
    most.sort(key=lambda p: (-p.pulls, p.repository, p.digest))

    team_of = {i.repository: i.team for i in images}
    by_team: dict[str, list[PullFact]] = defaultdict(list)
    by_repo: dict[str, list[PullFact]] = defaultdict(list)
    by_principal: dict[str, list[PullFact]] = defaultdict(list)
    for t in tallies:
        by_team[team_of.get(t.repository) or "-"].append(t)
        by_repo[t.repository].append(t)
        by_principal[t.principal].append(t)
    principals = []
    for principal, rows in by_principal.items():
        repos: dict[str, list[PullFact]] = defaultdict(list)
        for t in rows:
            repos[t.repository].append(t)
        principals.append(
            PrincipalPulls(
                principal=principal or UNNAMED,
                pulls=sum(t.count for t in rows),
                images=len({(t.repository, t.digest) for t in rows}),
                last_pulled=max(t.last_pulled for t in rows),
                repositories=tuple(
                    sorted((_group(r, g) for r, g in repos.items()), key=_by_pulls)[:top]
                ),
            )
        )
    principals.sort(key=lambda p: (-p.pulls, p.principal))

    stale: list[tuple[ImageFact, str]] = []
    unknown: dict[str, list[ImageFact]] = defaultdict(list)
    tallied = tally_times(inv)
    for image in images:
        when = tallied.get((image.repository, image.digest))
        state = pull_state(inv, image, now=now, days=stale_days, tallied=when)
        if state == "unknown":
            unknown[image.repository].append(image)
        elif state == "not-pulled":
            last = _latest([last_pulled(image), when])
            stale.append((image, f"last pulled: {last.date().isoformat() if last else 'never'}"))
    stale.sort(key=lambda s: (last_pulled(s[0]) or datetime.min.replace(tzinfo=now.tzinfo),))
    return PullsSection(
        stale_days=stale_days,
        registry_pull_times=inv.registry_pull_times,
        tracked_repositories=sum(1 for s in inv.pull_tracking.values() if s is not None),
        total_pulls=sum(t.count for t in tallies),
        most_pulled=tuple(most[:top]),
        by_team=tuple(sorted((_group(k, v) for k, v in by_team.items()), key=_by_pulls)),
        by_repository=tuple(
            sorted((_group(k, v) for k, v in by_repo.items()), key=_by_pulls)[:top]
        ),
        not_pulled=tuple(_row(i, now, d) for i, d in stale[:top]),
        not_pulled_count=len(stale),
        unknown=tuple(
            UnknownPulls(
                repository=repo,
                team=members[0].team,
                images=len(members),
                tracking_since=inv.pull_tracking.get(repo),
            )
            for repo, members in sorted(unknown.items(), key=lambda u: (-len(u[1]), u[0]))[:top]
        ),
        unknown_count=sum(len(m) for m in unknown.values()),
        principals=tuple(principals[:top]),
    )
