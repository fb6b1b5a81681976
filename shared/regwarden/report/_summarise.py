"""Pure aggregation: an `Inventory` and `now` in, a `Report` out. No I/O, no clock."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime

from ..model import Severity
from ..policy import is_semver_tag
from ._model import (
    AgeSection,
    Bucket,
    GroupBytes,
    HygieneSection,
    ImageFact,
    ImageRow,
    Inventory,
    Report,
    SecuritySection,
    SeverityCounts,
    StorageSection,
    TeamSummary,
    TrendPoint,
)
from ._pulls import last_pulled, pull_state, pulls_section, tally_times

__all__ = ["AGE_BUCKETS", "GC_NOTE", "NO_TEAM", "SEVERITIES", "summarise", "unique_bytes"]

NO_TEAM = "-"
"""The team of an image no policy entry names (or when no policy was given)."""

GC_NOTE = (
    "Figures count unique blobs: a layer shared between images is counted once. Deleting "
    "an image frees nothing on a registry like distribution until its garbage collection "
    "runs; until then the blobs stay on disk."
)

AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 1 day", 1),
    ("1–7 days", 7),
    ("7–30 days", 30),
    ("30–90 days", 90),
    ("90–365 days", 365),
    ("> 1 year", float("inf")),
)


def unique_bytes(images: Iterable[ImageFact]) -> tuple[int, int]:
    """(bytes, blobs) of the union of the images' blobs: each blob counted once."""
    seen: dict[str, int] = {}
    for image in images:
        seen.update(image.blobs)
    return sum(seen.values()), len(seen)


def _own_bytes(image: ImageFact) -> int:
    return sum(image.blobs.values())


def _team(image: ImageFact) -> str:
    return image.team or NO_TEAM


def _age_days(image: ImageFact, now: datetime) -> float | None:
    born = image.created or image.first_seen
    return None if born is None else max(0.0, (now - born).total_seconds() / 86400)


def _row(image: ImageFact, now: datetime, detail: str = "") -> ImageRow:
    return ImageRow(
        repository=image.repository,
        digest=image.digest,
        team=image.team,
        tags=image.tags,
        bytes=_own_bytes(image),
        layers=image.layers,
        age_days=_age_days(image, now),
        detail=detail,
    )


def _groups(images: list[ImageFact], key: str) -> list[GroupBytes]:
    by: dict[str, list[ImageFact]] = defaultdict(list)
    for image in images:
        by[_team(image) if key == "team" else image.repository].append(image)
    out = [GroupBytes(name=k, bytes=unique_bytes(v)[0], images=len(v)) for k, v in by.items()]
    return sorted(out, key=lambda g: (-g.bytes, g.name))


def _storage(inv: Inventory, images: list[ImageFact], now: datetime, top: int) -> StorageSection:
    # artifacts (signatures, SBOMs) take storage too: count every manifest's blobs
    everything = list(inv.images)
    total, blobs = unique_bytes(everything)
    trend = [
        TrendPoint(
            at=datetime.fromisoformat(p["at"]), bytes=int(p["bytes"]), images=int(p["images"])
        )
        for p in inv.previous
        if p.get("registry") == inv.registry
    ]
    trend.append(TrendPoint(at=now, bytes=total, images=len(images)))
    return StorageSection(
        unique_bytes=total,
        naive_bytes=sum(_own_bytes(i) for i in everything),
        unique_blobs=blobs,
        by_team=tuple(_groups(everything, "team")),
        by_repository=tuple(_groups(everything, "repository")[:top]),
        trend=tuple(trend),
        note=GC_NOTE,
    )


def _age(
    inv: Inventory, images: list[ImageFact], now: datetime, stale_days: int, top: int
) -> AgeSection:
    counts = Counter[str]()
    for image in images:
        days = _age_days(image, now)
        if days is None:
            counts["unknown"] += 1
            continue
        counts[next(label for label, upper in AGE_BUCKETS if days < upper)] += 1
    buckets = [Bucket(label=label, count=counts[label]) for label, _ in AGE_BUCKETS]
    if counts["unknown"]:
        buckets.append(Bucket(label="unknown", count=counts["unknown"]))
    stale: list[ImageRow] = []
    if inv.pull_times_known:
        # only where the pull record covers the whole window (`_pulls.pull_state`): an
        # image pushed before tracking began is unknown, not stale
        tallied = tally_times(inv)
        for image in images:
            when = tallied.get((image.repository, image.digest))
            if pull_state(inv, image, now=now, days=stale_days, tallied=when) == "not-pulled":
                last = max((t for t in (last_pulled(image), when) if t is not None), default=None)
                pulled = last.date().isoformat() if last else "never"
                stale.append(_row(image, now, f"last pulled: {pulled}"))
    present = {(i.repository, i.digest) for i in inv.images}
    orphaned = [
        _row(a, now, f"subject {a.subject} is gone")
        for a in inv.images
        if a.kind == "artifact" and a.subject and (a.repository, a.subject) not in present
    ]
    untagged = [_row(i, now, "no tag") for i in images if not i.tags]
    return AgeSection(
        ages=tuple(buckets),
        stale_days=stale_days,
        pull_times_known=inv.pull_times_known,
        stale=tuple(sorted(stale, key=lambda r: -(r.age_days or 0))[:top]),
        untagged=tuple(untagged[:top]),
        orphaned=tuple(orphaned[:top]),
        retention_plan=inv.retention_plan,
    )


SEVERITIES: tuple[str, ...] = tuple(str(s) for s in sorted(Severity, reverse=True))
"""Severity names, worst first: the order of every findings table and plot."""


def _severity_counts(name: str, images: Iterable[ImageFact]) -> SeverityCounts | None:
    """The findings of `images`' last verdicts that have them; None: none has."""
    counts = dict.fromkeys(SEVERITIES, 0)
    scanned = 0
    for image in images:
        if image.findings is None:
            continue
        scanned += 1
        for severity, n in image.findings.items():
            if severity in counts:
                counts[severity] += n
    if not scanned:
        return None
    return SeverityCounts(name=name, images=scanned, counts=counts, total=sum(counts.values()))


def _worst_first(row: SeverityCounts) -> tuple[object, ...]:
    return (*(-row.counts[s] for s in SEVERITIES), row.name)


def _findings(
    images: list[ImageFact], top: int
) -> tuple[SeverityCounts | None, list[SeverityCounts], list[SeverityCounts]]:
    """(all images, per team, the top `top` repositories worst first)."""
    teams: dict[str, list[ImageFact]] = defaultdict(list)
    repos: dict[str, list[ImageFact]] = defaultdict(list)
    for image in images:
        teams[_team(image)].append(image)
        repos[image.repository].append(image)
    by_team = [c for t, m in sorted(teams.items()) if (c := _severity_counts(t, m)) is not None]
    by_repo = [c for r, m in repos.items() if (c := _severity_counts(r, m)) is not None]
    return _severity_counts("all", images), by_team, sorted(by_repo, key=_worst_first)[:top]


def _security(
    inv: Inventory, images: list[ImageFact], now: datetime, top: int = 10
) -> SecuritySection:
    signed = sum(1 for i in images if i.signed)
    verified = sum(1 for i in images if i.signed and i.verdict in ("PASSED", "WARN"))
    unsigned = sum(1 for i in images if i.signed is False)
    verdicts = Counter(i.verdict or "none" for i in images)
    past: list[ImageRow] = []
    for image in images:
        if image.max_scan_age_s is None:
            continue
        if image.verdict_at is None or (now - image.verdict_at).total_seconds() > (
            image.max_scan_age_s
        ):
            when = image.verdict_at.date().isoformat() if image.verdict_at else "never"
            past.append(_row(image, now, f"last judged: {when}"))
    quarantines = sorted(inv.quarantines, key=lambda q: q.quarantined_at, reverse=True)
    overall, by_team, by_repository = _findings(images, top)
    return SecuritySection(
        signed=signed,
        verified=verified,
        unsigned=unsigned,
        unknown=len(images) - signed - unsigned,
        verdicts=dict(sorted(verdicts.items())),
        findings_by_severity=None if overall is None else overall.counts,
        findings_images=0 if overall is None else overall.images,
        findings_by_team=tuple(by_team),
        findings_by_repository=tuple(by_repository),
        past_max_scan_age=tuple(past),
        quarantines=tuple(quarantines),
    )


def _hygiene(images: list[ImageFact], now: datetime, top: int) -> HygieneSection:
    latest = [_row(i, now) for i in images if "latest" in i.tags]
    odd = sorted({t for i in images for t in i.tags if t != "latest" and not is_semver_tag(t)})
    largest = sorted(images, key=lambda i: (-_own_bytes(i), i.repository, i.digest))[:top]
    bases = Counter(i.base_name for i in images if i.base_name)
    return HygieneSection(
        latest_in_use=tuple(latest),
        non_semver_tags=len(odd),
        non_semver_examples=tuple(odd[:top]),
        largest=tuple(_row(i, now) for i in largest),
        base_images=dict(bases.most_common()),
    )


def _teams(inv: Inventory, images: list[ImageFact]) -> list[TeamSummary]:
    by: dict[str, list[ImageFact]] = defaultdict(list)
    for image in images:
        by[_team(image)].append(image)
    standing = Counter(q.team or NO_TEAM for q in inv.quarantines if q.released_at is None)
    return [
        TeamSummary(
            team=team,
            images=len(members),
            bytes=unique_bytes(members)[0],
            repositories=len({m.repository for m in members}),
            quarantined=standing[team],
            unsigned=sum(1 for m in members if m.signed is False),
        )
        for team, members in sorted(by.items())
    ]


def summarise(inv: Inventory, *, now: datetime, top: int = 10, stale_days: int = 90) -> Report:
    """The whole report. `top` bounds every list of images; `stale_days`: an image not
    pulled for longer is stale (only where the registry or ledger knows pull times)."""
    images = [i for i in inv.images if i.kind != "artifact"]
    return Report(
        registry=inv.registry,
        generated_at=now,
        images=len(images),
        repositories=len({i.repository for i in images}),
        teams=tuple(_teams(inv, images)),
        storage=_storage(inv, images, now, top),
        age=_age(inv, images, now, stale_days, top),
        security=_security(inv, images, now, top),
        hygiene=_hygiene(images, now, top),
        pulls=pulls_section(inv, images, now=now, stale_days=stale_days, top=top),
        retention_history=tuple(sorted(inv.retention_runs, key=lambda r: r.at)),
        notes=inv.notes,
    )
