"""The report's pure aggregation: unique blobs, ages, stale and orphaned images, signature
coverage, maxScanAge, hygiene and the trend, from an `Inventory` and `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from regwarden.report import ImageFact, Inventory, QuarantineRow, summarise, unique_bytes

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _image(n: int, **kw: object) -> ImageFact:
    fields: dict[str, object] = {
        "repository": "team/app",
        "digest": f"sha256:{n:064x}",
        "blobs": {f"sha256:{n:064x}-own": 10},
        "created": NOW - DAY,
    }
    fields.update(kw)
    return ImageFact.model_validate(fields)


def test_shared_blobs_count_once_in_totals_teams_and_repositories() -> None:
    shared = {"sha256:base": 1000}
    a = _image(1, team="a", blobs={**shared, "sha256:a": 10})
    b = _image(2, team="a", repository="team/web", blobs={**shared, "sha256:b": 20})
    c = _image(3, team=None, blobs={**shared, "sha256:c": 30})
    assert unique_bytes([a, b, c]) == (1060, 4)
    report = summarise(Inventory(registry="r", images=(a, b, c)), now=NOW)
    assert (report.storage.unique_bytes, report.storage.naive_bytes) == (1060, 3060)
    teams = {g.name: (g.bytes, g.images) for g in report.storage.by_team}
    assert teams == {"a": (1030, 2), "-": (1030, 1)}  # no team: "-"
    repos = {g.name: g.bytes for g in report.storage.by_repository}
    assert repos == {"team/app": 1040, "team/web": 1020}


def test_ages_stale_untagged_and_orphaned() -> None:
    old = _image(1, tags=("1.0.0",), created=NOW - 400 * DAY, last_pulled=NOW - 200 * DAY)
    fresh = _image(2, tags=(), created=NOW - 2 * DAY, last_pulled=NOW - DAY)
    unknown = _image(3, tags=("x",), created=None)
    orphan = _image(4, kind="artifact", tags=("sha256-ff.sig",), subject="sha256:" + "f" * 64)
    sig = _image(5, kind="artifact", subject=old.digest)
    inv = Inventory(
        registry="r",
        images=(old, fresh, unknown, orphan, sig),
        pull_times_known=True,
        pull_tracking={"team/app": NOW - 365 * DAY},  # tracking covers the 90 days
    )
    age = summarise(inv, now=NOW, stale_days=90).age
    counts = {b.label: b.count for b in age.ages}
    assert counts["> 1 year"] == 1 and counts["1–7 days"] == 1 and counts["unknown"] == 1
    # `unknown` (no age) was never pulled in the year tracking covers: stale too
    assert [r.digest for r in age.stale] == [old.digest, unknown.digest]
    # without tracking, neither can be called stale (issue #16): their pulls are unknown
    untracked = inv.model_copy(update={"pull_tracking": {}})
    assert summarise(untracked, now=NOW, stale_days=90).age.stale == ()
    assert [r.digest for r in age.untagged] == [fresh.digest]
    assert [r.digest for r in age.orphaned] == [orphan.digest]  # sig's subject is present
    assert summarise(inv.model_copy(update={"pull_times_known": False}), now=NOW).age.stale == ()


def test_signatures_verdicts_scan_age_and_hygiene() -> None:
    images = (
        _image(
            1,
            tags=("latest", "1.2.3"),
            signed=True,
            verdict="PASSED",
            verdict_at=NOW - DAY,
            max_scan_age_s=7 * 86400.0,
            base_name="debian:12",
        ),
        _image(
            2,
            tags=("main",),
            signed=True,
            verdict="FAILED",
            verdict_at=NOW - 10 * DAY,
            max_scan_age_s=7 * 86400.0,
            base_name="debian:12",
        ),
        _image(3, tags=("v2",), signed=False, verdict=None),
        _image(4, tags=("2.0.0",), signed=None),
    )
    q = QuarantineRow(
        repository="team/app", digest=images[1].digest, team="t", strategy="move",
        reason="image is not signed", quarantined_at=NOW - DAY,
    )  # fmt: skip
    report = summarise(Inventory(registry="r", images=images, quarantines=(q,)), now=NOW)
    sec = report.security
    assert (sec.signed, sec.verified, sec.unsigned, sec.unknown) == (2, 1, 1, 1)
    assert sec.verdicts == {"FAILED": 1, "PASSED": 1, "none": 2}
    assert [r.digest for r in sec.past_max_scan_age] == [images[1].digest]
    assert sec.findings_by_severity is None
    assert sec.quarantines == (q,)
    h = report.hygiene
    assert [r.digest for r in h.latest_in_use] == [images[0].digest]
    assert h.non_semver_examples == ("main", "v2")
    assert h.base_images == {"debian:12": 2}


def test_the_trend_reads_earlier_summaries_of_the_same_registry() -> None:
    first = summarise(Inventory(registry="r", images=(_image(1),)), now=NOW - 7 * DAY)
    other = {**first.summary(), "registry": "elsewhere"}
    report = summarise(
        Inventory(registry="r", images=(_image(1), _image(2)), previous=(first.summary(), other)),
        now=NOW,
    )
    assert [(p.at, p.bytes, p.images) for p in report.storage.trend] == [
        (NOW - 7 * DAY, 10, 1),
        (NOW, 20, 2),
    ]


def test_findings_by_severity_per_team_and_repository_from_the_last_verdicts() -> None:
    images = (
        _image(1, team="pay", findings={"critical": 1, "high": 2}),
        _image(2, team="pay", repository="pay/web", findings={"high": 1, "low": 4}),
        _image(3, team="pay", repository="pay/web", findings={}),  # scanned, clean
        _image(4, team="ops", repository="ops/tool", findings={"medium": 3}),
        _image(5, team="ops", repository="ops/tool", findings=None),  # no scan report
        _image(6, repository="misc/x"),  # never judged
        _image(7, kind="artifact", findings={"critical": 9}),  # artifacts are not images
    )
    sec = summarise(Inventory(registry="r", images=images), now=NOW, top=2).security
    assert sec.findings_by_severity == {
        "critical": 1, "high": 3, "medium": 3, "low": 4, "negligible": 0, "unknown": 0,
    }  # fmt: skip
    assert list(sec.findings_by_severity) == ["critical", "high", "medium", "low",
                                              "negligible", "unknown"]  # fmt: skip
    assert sec.findings_images == 4
    teams = {t.name: (t.images, t.total, t.counts["high"]) for t in sec.findings_by_team}
    assert teams == {"ops": (1, 3, 0), "pay": (3, 8, 3)}  # the team-less image has none
    # worst first (the critical one, then the most high), cut at `top`
    assert [(r.name, r.total) for r in sec.findings_by_repository] == [
        ("team/app", 3),
        ("pay/web", 5),
    ]


def test_no_findings_kept_is_none_not_zero() -> None:
    sec = summarise(Inventory(registry="r", images=(_image(1, verdict="PASSED"),)), now=NOW)
    assert sec.security.findings_by_severity is None
    assert (sec.security.findings_by_team, sec.security.findings_by_repository) == ((), ())
