"""The report's pulls (issue #16): most pulled, not pulled in N days only where pull
tracking covers the whole N days (else unknown since tracking began), the registry's own
pull times (ECR) combined, and who pulls what — from an `Inventory` and `now`, purely."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from regwarden.providers import CAP_PULL_TIMES, ListedImage
from regwarden.report import (
    ImageFact,
    Inventory,
    PullFact,
    registry_pull_times,
    render_html,
    summarise,
)
from regwarden.report._pulls import pull_state

NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAY = timedelta(days=1)
REPO, WEB = "team/app", "team/web"


def _image(n: int, repo: str = REPO, **kw: object) -> ImageFact:
    fields: dict[str, object] = {
        "repository": repo,
        "digest": f"sha256:{n:064x}",
        "team": "payments" if repo == REPO else "web",
        "tags": (f"v{n}",),
        "blobs": {f"sha256:{n:064x}-own": 10},
        "first_seen": NOW - 400 * DAY,
    }
    fields.update(kw)
    return ImageFact.model_validate(fields)


def _tally(image: ImageFact, who: str, count: int, ago: timedelta) -> PullFact:
    return PullFact(
        repository=image.repository,
        digest=image.digest,
        principal=who,
        count=count,
        last_pulled=NOW - ago,
    )


def test_not_pulled_is_unknown_until_tracking_covers_the_whole_window() -> None:
    old = _image(1)  # pushed 400 days ago, no pull recorded
    young = _image(2, first_seen=NOW - 10 * DAY)  # pushed after tracking began
    pulled = _image(3, last_pulled=NOW - 2 * DAY)
    images = (old, young, pulled)
    partial = Inventory(
        registry="r", images=images, pull_tracking={REPO: NOW - 30 * DAY}, pull_times_known=True
    )
    states = [pull_state(partial, i, now=NOW, days=90) for i in images]
    # tracking is 30 days old: the 400-day-old image may have been pulled 31-90 days ago
    assert states == ["unknown", "recent", "recent"]
    pulls = summarise(partial, now=NOW, stale_days=90).pulls
    assert pulls is not None and pulls.not_pulled == () and pulls.not_pulled_count == 0
    assert [(u.repository, u.images, u.tracking_since) for u in pulls.unknown] == [
        (REPO, 1, NOW - 30 * DAY)
    ]
    assert summarise(partial, now=NOW, stale_days=90).age.stale == ()  # nor stale in Age
    # the same 30 days of tracking do cover a 20-day question
    short = summarise(partial, now=NOW, stale_days=20).pulls
    assert short is not None and [r.digest for r in short.not_pulled] == [old.digest]
    assert short.unknown == ()

    complete = partial.model_copy(update={"pull_tracking": {REPO: NOW - 100 * DAY}})
    report = summarise(complete, now=NOW, stale_days=90)
    assert report.pulls is not None
    assert [r.digest for r in report.pulls.not_pulled] == [old.digest]
    assert report.pulls.not_pulled[0].detail == "last pulled: never"
    assert report.pulls.unknown == () and report.pulls.unknown_count == 0
    assert [r.digest for r in report.age.stale] == [old.digest]

    never = partial.model_copy(update={"pull_tracking": {}})
    state = summarise(never, now=NOW, stale_days=90).pulls
    assert state is not None and [(u.images, u.tracking_since) for u in state.unknown] == [
        (1, None)
    ]


def test_the_registrys_own_pull_times_cover_without_tracking() -> None:
    # ECR keeps lastRecordedPullTime itself: no ledger tracking needed to answer
    stale = _image(1, registry_last_pulled=NOW - 200 * DAY)
    recent = _image(2, registry_last_pulled=NOW - 200 * DAY, last_pulled=NOW - DAY)
    ecr = Inventory(registry="r", images=(stale, recent), registry_pull_times=True)
    pulls = summarise(ecr, now=NOW, stale_days=90).pulls
    assert pulls is not None and pulls.registry_pull_times
    assert [(r.digest, r.detail) for r in pulls.not_pulled] == [
        (stale.digest, f"last pulled: {(NOW - 200 * DAY).date().isoformat()}")
    ]  # the ledger's later pull of `recent` wins over the registry's older time
    assert pulls.unknown == ()


def test_most_pulled_per_team_and_repository_and_who_pulls_what() -> None:
    a, b, c = _image(1), _image(2), _image(3, repo=WEB)
    sig = _image(4, kind="artifact", subject=a.digest, tags=())
    gone = "sha256:" + "e" * 64  # pulled, since deleted from the registry
    tallies = (
        _tally(a, "ci", 5, DAY),
        _tally(a, "deployer", 20, 2 * DAY),
        _tally(b, "deployer", 3, 3 * DAY),
        _tally(c, "", 7, 4 * DAY),
        _tally(sig, "deployer", 50, DAY),  # signature fetches are not image pulls
        PullFact(repository=WEB, digest=gone, principal="ci", count=3, last_pulled=NOW - DAY),
    )
    inv = Inventory(
        registry="r",
        images=(a, b, c, sig),
        pulls=tallies,
        pull_tracking={REPO: NOW - 5 * DAY, WEB: NOW - 5 * DAY},
        pull_times_known=True,
    )
    pulls = summarise(inv, now=NOW, top=2).pulls
    assert pulls is not None
    assert pulls.total_pulls == 5 + 20 + 3 + 7 + 3 and pulls.tracked_repositories == 2
    assert [(i.digest, i.pulls, i.principals, i.team) for i in pulls.most_pulled] == [
        (a.digest, 25, 2, "payments"),
        (c.digest, 7, 1, "web"),
    ]  # top 2; the gone image is not listed
    assert pulls.most_pulled[0].last_pulled == NOW - DAY
    assert [(g.name, g.pulls, g.images) for g in pulls.by_team] == [
        ("payments", 28, 2),
        ("web", 10, 2),
    ]
    assert [(g.name, g.pulls) for g in pulls.by_repository] == [(REPO, 28), (WEB, 10)]
    who = {p.principal: p for p in pulls.principals}
    assert list(who) == ["deployer", "ci"]  # top 2 of deployer 23, ci 8, (unnamed) 7
    assert [(g.name, g.pulls, g.images) for g in who["deployer"].repositories] == [(REPO, 23, 2)]
    assert [(g.name, g.pulls) for g in who["ci"].repositories] == [(REPO, 5), (WEB, 3)]
    everyone = summarise(inv, now=NOW, top=10).pulls
    assert everyone is not None and "(unnamed)" in {p.principal for p in everyone.principals}


def test_the_html_and_json_carry_the_pulls() -> None:
    a = _image(1)
    inv = Inventory(
        registry="r",
        images=(a, _image(2, first_seen=NOW - 400 * DAY)),
        pulls=(_tally(a, "system:serviceaccount:prod:deployer", 12, DAY),),
        pull_tracking={REPO: NOW - 10 * DAY},
        pull_times_known=True,
    )
    report = summarise(inv, now=NOW, stale_days=90)
    page = render_html(report)
    assert "Most pulled images" in page and "system:serviceaccount:prod:deployer" in page
    assert "unknown since tracking began " + (NOW - 10 * DAY).date().isoformat() in page
    data = json.loads(report.model_dump_json())
    assert data["pulls"]["most_pulled"][0]["pulls"] == 12
    assert data["pulls"]["unknown"][0]["images"] == 1
    assert data["pulls"]["principals"][0]["repositories"][0]["name"] == REPO


class _Listing:
    """A registry's image listing, as a provider returns it (ECR keeps pull times)."""

    def __init__(self, capabilities: frozenset[str], images: list[ListedImage]) -> None:
        self.capabilities = capabilities
        self.images = images
        self.calls: list[str] = []

    def list_images(self, repository: str) -> list[ListedImage]:
        self.calls.append(repository)
        return [i for i in self.images if i.repository == repository]


def test_registry_pull_times_only_for_a_registry_that_keeps_them() -> None:
    a = ListedImage(REPO, "sha256:" + "a" * 64, "m", last_pulled=NOW - DAY)
    b = ListedImage(REPO, "sha256:" + "b" * 64, "m")
    ecr = _Listing(frozenset({CAP_PULL_TIMES}), [a, b])
    times = registry_pull_times(ecr)
    assert times is not None
    assert times(REPO) == {a.digest: NOW - DAY, b.digest: None}
    assert ecr.calls == [REPO]  # one listing per repository
    assert registry_pull_times(_Listing(frozenset(), [a, b])) is None  # distribution


def test_unknown_pull_state_lists_the_top_repositories_and_counts_them_all() -> None:
    images = tuple(_image(n, repo=f"team/r{n % 3}") for n in range(1, 8))  # r1: 3, r0/r2: 2
    inv = Inventory(registry="r", images=images, pull_times_known=True)
    pulls = summarise(inv, now=NOW, top=2).pulls
    assert pulls is not None and pulls.unknown_count == 7
    assert [(u.repository, u.images) for u in pulls.unknown] == [("team/r1", 3), ("team/r0", 2)]
