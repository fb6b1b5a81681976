"""Quarantine takes the tags the registry holds now, records them before the first write,
and rolls a tag back to the newest earlier digest that PASSED and still exists."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.memory_registry import MemoryRegistry

from regwarden.actions import QuarantineOutcome, describe_state, quarantine, release
from regwarden.devtools import make_image
from regwarden.errors import RegistryError
from regwarden.quarantine_names import quarantine_tag
from regwarden.reference import ImageRef
from regwarden.store import SqliteLedger

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REPO = "team/app"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    led = SqliteLedger(tmp_path / "ledger.db")
    yield led
    led.close()


@pytest.fixture
def reg() -> MemoryRegistry:
    return MemoryRegistry()


def ref(reg: MemoryRegistry, digest: str) -> ImageRef:
    return ImageRef(registry=reg.host, repository=REPO, tag=None, digest=digest)


def retag(
    reg: MemoryRegistry, ledger: SqliteLedger, digest: str, tags: tuple[str, ...] = ()
) -> QuarantineOutcome:
    return quarantine(
        reg,
        ledger,
        image=ref(reg, digest),
        tags=tags,
        strategy="retag",
        repository_template="quarantine/{repository}",
        reason="critical CVE",
        now=T0,
    )


def test_retag_removes_every_tag_the_registry_holds_though_the_ledger_saw_none(
    reg: MemoryRegistry, ledger: SqliteLedger
) -> None:
    digest = reg.push(REPO, make_image(seed=1), "1.0.1")
    reg.add_tag(REPO, digest, "stable")
    out = retag(reg, ledger, digest)  # the ledger never saw the push: no tags from the caller

    assert reg.tags_of(REPO, digest) == (quarantine_tag(digest),)
    assert out.removed_tags == ("1.0.1", "stable")
    held = ledger.quarantined(reg.host, REPO, digest)
    assert held is not None and held.tags == ("1.0.1", "stable")

    back = release(reg, ledger, image=ref(reg, digest), reason="false positive", now=T0)
    assert back.restored_tags == ("1.0.1", "stable")
    assert reg.tags_of(REPO, digest) == ("1.0.1", "stable")


def test_a_caller_tag_now_naming_another_digest_is_left_alone(
    reg: MemoryRegistry, ledger: SqliteLedger
) -> None:
    digest = reg.push(REPO, make_image(seed=1), "v1")
    other = reg.push(REPO, make_image(seed=2), "latest")  # moved on since the push event
    out = retag(reg, ledger, digest, tags=("v1", "latest", "gone"))

    assert out.removed_tags == ("gone", "v1")  # absent "gone" is kept for release to restore
    assert reg.resolve(REPO, "latest") == other
    assert any("'latest' now points at" in n for n in out.notes)


def test_the_tag_list_is_written_before_the_first_write_and_survives_a_resume(
    reg: MemoryRegistry, ledger: SqliteLedger
) -> None:
    digest = reg.push(REPO, make_image(seed=1), "a")
    for tag in ("b", "c"):
        reg.add_tag(REPO, digest, tag)
    reg.calls.clear()
    reg.fail("add_tag")  # the very first write fails
    with pytest.raises(RegistryError):
        retag(reg, ledger, digest)
    action = ledger.action(f"quarantine:{reg.host}/{REPO}@{digest}")
    assert action is not None and action.state["tags"] == ["a", "b", "c"]
    assert [c[0] for c in reg.writes()] == ["add_tag"]

    reg.fail("remove_tag", ref="b")  # tag "a" goes, then "b" fails
    with pytest.raises(RegistryError):
        retag(reg, ledger, digest)
    assert reg.tags_of(REPO, digest) == ("b", "c", quarantine_tag(digest))
    assert describe_state(ledger, ref(reg, digest)).endswith("deployable tags still present: b, c")

    out = retag(reg, ledger, digest)  # resumes with the recorded list: "a" is not lost
    assert out.removed_tags == ("a", "b", "c") and not out.already_done
    assert reg.tags_of(REPO, digest) == (quarantine_tag(digest),)
    assert describe_state(ledger, ref(reg, digest)) == "deployable tags removed"
    held = ledger.quarantined(reg.host, REPO, digest)
    assert held is not None and held.tags == ("a", "b", "c")

    release(reg, ledger, image=ref(reg, digest), reason="fixed", now=T0)
    assert reg.tags_of(REPO, digest) == ("a", "b", "c")


def test_a_finished_quarantine_repeats_without_reading_the_registry(
    reg: MemoryRegistry, ledger: SqliteLedger
) -> None:
    digest = reg.push(REPO, make_image(seed=1), "v1")
    retag(reg, ledger, digest)
    reg.calls.clear()
    again = retag(reg, ledger, digest, tags=("v1",))
    assert again.already_done and again.removed_tags == ("v1",)
    assert reg.calls == []


def _history(
    ledger: SqliteLedger, reg: MemoryRegistry, tag: str, pushes: list[tuple[str, str | None]]
) -> None:
    for n, (digest, verdict) in enumerate(pushes):
        at = T0 - timedelta(hours=len(pushes) - n)
        ledger.record_push(reg.host, REPO, digest, (tag,), now=at)
        if verdict is not None:
            ledger.record_verdict(reg.host, REPO, digest, verdict, now=at)


def test_rollback_goes_to_the_newest_earlier_digest_that_passed_and_still_exists(
    reg: MemoryRegistry, ledger: SqliteLedger
) -> None:
    oldest = reg.push(REPO, make_image(seed=1))  # PASSED, present: the target
    gone = make_image(seed=2).digest  # PASSED, deleted since
    failed = reg.push(REPO, make_image(seed=3))  # the immediately previous one: FAILED
    unverified = reg.push(REPO, make_image(seed=4))  # never judged
    bad = reg.push(REPO, make_image(seed=5), "latest")
    _history(
        ledger,
        reg,
        "latest",
        [(oldest, "PASSED"), (gone, "PASSED"), (unverified, None), (failed, "FAILED"), (bad, None)],
    )
    out = retag(reg, ledger, bad, tags=("latest",))

    assert out.rolled_back == {"latest": oldest}
    assert reg.resolve(REPO, "latest") == oldest
    notes = "\n".join(out.notes)
    assert f"skipped {failed}: it is FAILED" in notes
    assert f"skipped {unverified}: it is unverified" in notes
    assert f"skipped {gone}: PASSED but gone from the registry" in notes
    assert reg.tags_of(REPO, bad) == (quarantine_tag(bad),)

    # release moves the tag back only because nobody moved it since the roll-back
    back = release(reg, ledger, image=ref(reg, bad), reason="accepted risk", now=T0)
    assert back.restored_tags == ("latest",) and reg.resolve(REPO, "latest") == bad


def test_no_passed_digest_left_means_no_rollback_and_says_so(
    reg: MemoryRegistry, ledger: SqliteLedger
) -> None:
    failed = reg.push(REPO, make_image(seed=3))
    bad = reg.push(REPO, make_image(seed=5), "latest")
    _history(ledger, reg, "latest", [(failed, "FAILED"), (bad, None)])
    out = retag(reg, ledger, bad, tags=("latest",))
    assert out.rolled_back == {}
    assert reg.resolve(REPO, "latest") is None
    assert any("no earlier PASSED digest still exists" in n for n in out.notes)

    fresh = reg.push(REPO, make_image(seed=6), "solo")
    solo = retag(reg, ledger, fresh)
    assert solo.notes == ("tag 'solo': no earlier digest known; not rolled back",)


def test_release_leaves_a_tag_someone_moved_during_the_quarantine(
    reg: MemoryRegistry, ledger: SqliteLedger
) -> None:
    digest = reg.push(REPO, make_image(seed=1), "v1")
    reg.add_tag(REPO, digest, "v1.0")
    retag(reg, ledger, digest)
    newer = reg.push(REPO, make_image(seed=9), "v1")  # a fix pushed while held
    back = release(reg, ledger, image=ref(reg, digest), reason="ok", now=T0)
    assert back.restored_tags == ("v1.0",)
    assert back.skipped == (f"v1 (now points at {newer})",)
    assert reg.resolve(REPO, "v1") == newer
