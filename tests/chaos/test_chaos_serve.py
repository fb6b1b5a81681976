"""`regwarden serve` SIGKILLed at the steps of a `move` and in the middle of a burst, then
restarted on the same ledger and port (issue #11, "Done when"; harness: `support.chaos`).

Kill points come from the proxy between serve and the registry: it holds one of
regwarden's writes and the test kills serve either before the write is forwarded (it never
lands) or once the registry has answered it (it landed, serve never knew). After the
restart, every acknowledged push must end in exactly one verdict, every image must be
whole — all of it in quarantine and gone from its repository, or untouched when it passed
— with no unfinished intent, and every quarantine must have its alert. Repeated alert
deliveries are reported, not failed (at-least-once, de-duplicated on the CloudEvents id).

The alert sink can hold an alert the same way (kill before it is taken in, or after it was
and before serve hears back), and so can the tap between the registry's notifications and
serve (kill before serve stores the push's event, or after it did and before the registry
hears back: the registry delivers it again). CI runs a few kill points and a 20-image burst;
`bench/chaos.py` runs every kill point and the 500-image burst. Each test prints one JSON
line with its figures (and appends it to $REGWARDEN_CHAOS_REPORT when set).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.chaos import (
    ChaosRig,
    Expect,
    KillPoint,
    TrialResult,
    chaos_rig,
    product_from_env,
)

from regwarden.devtools import make_image

RECOVERY = 60.0
"""Seconds a restarted serve gets to reach every invariant (it takes one or two; a stale
lease or the periodic sweep would take 30)."""
BURST = 20
REPORT_ENV = "REGWARDEN_CHAOS_REPORT"
"""A file each test appends its JSON line to (besides printing it)."""

IMAGE_POINTS = [
    KillPoint(1, "before", "POST", label="first blob mount"),
    KillPoint(1, "after", "POST", label="first blob mounted"),
    KillPoint(1, "after", "PUT", label="manifest copied"),
    KillPoint(1, "before", "DELETE", label="source delete"),
    KillPoint(1, "after", "DELETE", label="source deleted"),
]
"""A single image's move: mount the blobs, put the manifest in quarantine, delete it from
the source. Before the first write nothing has happened; after a mount, the copy or the
delete, the write landed and serve never recorded it."""
INDEX_POINTS = [
    KillPoint(3, "after", "PUT", label="index copied"),
    KillPoint(1, "after", "DELETE", label="index deleted"),
    KillPoint(3, "before", "DELETE", label="last child delete"),
]
"""A two-platform index pushed with `skopeo copy --all`: children are copied, then the index;
the index is deleted from the source, then each child."""

ALERT_POINTS = [
    KillPoint(1, "before", label="alert"),
    KillPoint(1, "after", label="alert delivered"),
]
"""The sink holds the move's alert: not taken in yet, or taken in and never answered (the
outbox sends it again after the restart: a duplicate delivery, reported, not failed)."""

DELIVERY_POINTS = [
    KillPoint(1, "before", label="notification"),
    KillPoint(1, "after", label="notification stored"),
]
"""The tap holds the push's notification: not relayed yet, or stored and answered by serve
with the answer kept from the registry (which then delivers the same event again)."""


@pytest.fixture(scope="module")
def rig(chaos_root: Path) -> Iterator[ChaosRig]:
    with chaos_rig(chaos_root, product=product_from_env()) as r:
        yield r


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[TrialResult], None]:
    def emit(result: TrialResult) -> None:
        line = result.json_line()
        with capsys.disabled():
            print(f"\nchaos: {line}")
        target = os.environ.get(REPORT_ENV)
        if target:
            with open(target, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    return emit


def explain(rig: ChaosRig, result: TrialResult) -> str:
    return "\n".join([result.json_line(), *result.problems, rig.serve.logs()])


@pytest.mark.parametrize("point", IMAGE_POINTS, ids=lambda p: p.name)
def test_move_of_an_image_survives_a_kill(
    rig: ChaosRig, point: KillPoint, report: Callable[[TrialResult], None]
) -> None:
    result = rig.move_trial("image", point, deadline=RECOVERY)
    report(result)
    assert result.held, f"the proxy never held {point.name}"
    if point.when == "after":
        assert result.held_status is not None and result.held_status < 300, result.held
    assert result.ok, explain(rig, result)


@pytest.mark.parametrize("point", INDEX_POINTS, ids=lambda p: p.name)
def test_move_of_an_index_survives_a_kill(
    rig: ChaosRig, point: KillPoint, report: Callable[[TrialResult], None]
) -> None:
    result = rig.move_trial("index", point, deadline=RECOVERY)
    report(result)
    assert result.held, f"the proxy never held {point.name}"
    assert result.ok, explain(rig, result)


def test_a_resumed_move_survives_a_second_kill(
    rig: ChaosRig, report: Callable[[TrialResult], None]
) -> None:
    """Killed once the index is copied, then again while the restarted serve resumes the
    move: at the delete of the source index, after the registry answered it."""
    points = [
        KillPoint(3, "after", "PUT", label="index copied"),
        KillPoint(1, "after", "DELETE", label="index deleted on resume"),
    ]
    result = rig.move_trial("index", points, deadline=RECOVERY)
    report(result)
    assert result.held.count("DELETE") == 1, result.held
    assert result.ok, explain(rig, result)


@pytest.mark.parametrize("point", DELIVERY_POINTS, ids=lambda p: p.name)
def test_a_delivery_survives_a_kill(
    rig: ChaosRig, point: KillPoint, report: Callable[[TrialResult], None]
) -> None:
    result = rig.delivery_trial(point, deadline=RECOVERY)
    report(result)
    assert result.held.startswith("notify ")
    if point.when == "after":
        assert result.held_status == 202, "serve did not store the held notification"
    assert result.ok, explain(rig, result)


@pytest.mark.parametrize("point", ALERT_POINTS, ids=lambda p: p.name)
def test_the_alert_of_a_move_survives_a_kill(
    rig: ChaosRig, point: KillPoint, report: Callable[[TrialResult], None]
) -> None:
    result = rig.alert_trial(point, deadline=RECOVERY)
    report(result)
    assert result.held == "POST alert"
    assert result.ok, explain(rig, result)


def test_a_burst_survives_a_kill_at_a_random_write(
    rig: ChaosRig, report: Callable[[TrialResult], None]
) -> None:
    """The kill point is drawn from a fresh seed each run; its JSON line names the seed, and
    REGWARDEN_CHAOS_SEED=<seed> replays that run's kill point."""
    seed = int(os.environ.get("REGWARDEN_CHAOS_SEED") or random.randrange(1 << 30))
    result = rig.burst_trial(BURST, seed=seed, deadline=RECOVERY)
    report(result)
    assert result.acknowledged >= BURST
    assert result.ok, explain(rig, result)


def test_the_checks_see_a_half_done_move_and_a_missing_alert(rig: ChaosRig) -> None:
    """The judge itself: an image that passed, then copied into quarantine behind serve's
    back (through the proxy as CI: the event is for a quarantine repository and ignored),
    is in both places — half-done — and, taken for a failing one, has no alert."""
    repo = rig.fresh_repo("pass-check")
    image = Expect(repo, "v1", make_image(seed=rig.trials, layer_size=64), fails=False)
    rig.push(image)
    passed = TrialResult("checks", "none")
    rig.recover(passed, [image], time.monotonic(), deadline=RECOVERY)
    assert passed.ok, explain(rig, passed)
    rig.pusher.copy_image(repo, image.digest, image.qrepo, "copied")
    seen = TrialResult("checks", "none")
    rig.judge(seen, [image])
    assert seen.half_done == 1 and not seen.holds, seen.json_line()
    failing = TrialResult("checks", "none")
    rig.judge(failing, [Expect(repo, "v1", image.content, fails=True)])
    assert failing.missing_alerts == 1 and failing.wrong == 1, failing.json_line()
