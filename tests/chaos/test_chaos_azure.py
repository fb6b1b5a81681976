"""Chaos on Azure: the function app's host SIGKILLed at every registry write of a `lock`
quarantine of an index (and of a `move`), started again and the same Event Grid event
delivered again (issue #14, "Done when").

The app runs as Azure runs it, in a Functions host process of its own (`support.
azure_host` serving `functions/azure/function_app.py`, `support.azure_world`): ACR is
FakeAcr over a real docker-registry, the alerts topic FakeEventGrid, the ledger
`azuretable://` on Azurite (which outlives the process, as Table Storage would; an SQLite
file on disk before that ledger is registered). The index's children are delivered
first (`ImagePushed` by digest), then its tag's event, as ACR emits them.

Kill points come from `FakeAcr.park`: it holds the host's Nth write to the registry — an
`/acr/v1/` PATCH of a manifest's attributes, a `/v2/` blob mount, manifest PUT or DELETE —
`before` it is served (it never lands) or `after` (it landed, the function never heard).
The test SIGKILLs the host there, starts a new one, and delivers the event again (same
id), as Event Grid does with a delivery it got no answer for, until it is accepted. Every
trial must end with:

- `lock`: the index and each child locked as the FAILED verdict says (write, delete and
  read off, list on); nothing moved; `move`: every manifest and blob in
  `quarantine/{repository}`, none left at the source, only `quarantined-…` there;
- one verdict for the event in the ledger's verdict log, one quarantine action, done, no
  intent left unfinished;
- the quarantine alert on the alerts topic (a repeat of the same alert — same id — is
  allowed: alerts are at-least-once);
- `lock` only: `actions.release` afterwards restores exactly the attributes before.

A clean run of each strategy finds its writes in order; each write and side of it is a
kill point. `CI=true` runs a reduced set (the first write before it lands, one in the
middle, the last after it landed), as the GCP chaos test does. One more trial kills a
`lock` and never delivers the event again: the `recovery` timer (the admin API's run)
finishes the intent, with its alert. Each test prints its figures as one JSON line.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from support.azure_world import HOST, World, azure_world
from support.chaos import placement
from support.fake_gar import Parked

from regwarden.actions import release
from regwarden.devtools import Content, IndexBlobs, LocalRegistry, make_multiarch
from regwarden.quarantine_names import quarantine_tag
from regwarden.reference import ImageRef

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
WRITES = frozenset({"PUT", "POST", "PATCH", "DELETE"})
DEADLINE = 120.0
"""Seconds a host gets to start, a delivery to be answered, a write to be reached."""
POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: acr}}
defaults:
  mode: enforce
  team: chaos
  signatures: {{required: true, cosign: {{keys: ["file://cosign.pub"]}}, gracePeriod: 0s}}
  quarantine: {{strategy: lock}}
repositories:
  - match: "moved/**"
    quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
"""
"""Unsigned images fail at once: `locked/` is locked, `moved/` moved."""
OPEN = {"writeEnabled": True, "deleteEnabled": True, "readEnabled": True, "listEnabled": True}
FAILED_LOCK = {**OPEN, "writeEnabled": False, "deleteEnabled": False, "readEnabled": False}
AREAS = {"lock": "locked", "move": "moved"}

When = Literal["before", "after"]
Then = Literal["redeliver", "sweep"]


def host_write(method: str, path: str, headers: Mapping[str, str]) -> bool:
    """A write to the registry (ACR's API or `/v2/`); the test writes nothing while armed."""
    return method in WRITES and path.startswith(("/v2/", "/acr/v1/"))


@dataclass
class Trial:
    """One index quarantined with one kill (or none), as one JSON line."""

    strategy: str
    kill: str
    held: str = ""
    held_status: int | None = None
    deliveries: int = 0
    statuses: list[int] = field(default_factory=list)
    state: str = ""
    """`locked` / `quarantined` when whole; else what was found."""
    verdicts: list[str] = field(default_factory=list)
    sweep_verdicts: int = 0
    quarantine_actions: list[str] = field(default_factory=list)
    unfinished: int = 0
    alerts: int = 0
    alert_keys: int = 0
    released: str = ""
    recovery_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def judge(self, *, swept: bool = False) -> None:
        whole = "locked" if self.strategy == "lock" else "quarantined"
        if self.state != whole or self.unfinished:
            self.problems.append(f"not whole: {self.state}, {self.unfinished} intent(s) left")
        if not swept and self.verdicts != ["FAILED"]:
            self.problems.append(f"verdicts for the event: {self.verdicts}, expected one")
        if swept and (self.verdicts or self.sweep_verdicts < 1):
            self.problems.append(f"verdicts: {self.verdicts}, {self.sweep_verdicts} swept")
        if self.quarantine_actions != ["done"]:
            self.problems.append(f"quarantine actions: {self.quarantine_actions}")
        if self.alert_keys != 1:
            self.problems.append(f"{self.alert_keys} distinct quarantine alerts, expected 1")
        if self.strategy == "lock" and self.released != "restored":
            self.problems.append(f"release: {self.released}")

    def line(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok}, sort_keys=True)


class Rig:
    def __init__(self, world: World) -> None:
        self.world = world
        self.trials = 0
        self.pool = ThreadPoolExecutor(2)

    def push(self, strategy: str) -> tuple[str, Content, list[dict[str, Any]]]:
        """A fresh unsigned 2-platform index (`skopeo copy --all`) as `:v1`, its children's
        events delivered already; its repository, content and its tag's event."""
        self.trials += 1
        repo = f"{AREAS[strategy]}/index-{self.trials}-{uuid.uuid4().hex[:6]}"
        content = make_multiarch(seed=9400 + self.trials, layer_size=128)
        _, events = self.world.push_content(repo, "v1", content)
        *children, tagged = events
        assert tagged["data"]["target"]["tag"] == "v1" and len(children) == 2
        self.world.deliver(children)
        return repo, content, [tagged]

    def post(self, event: dict[str, Any]) -> Future[int]:
        """Deliver `event` to the running host; its status, or 0 when the connection
        died (the host was killed)."""
        host = self.world.host
        assert host is not None

        def send() -> int:
            try:
                return host.eventgrid("on_push", [event], timeout=DEADLINE)[0]
            except OSError:
                return 0

        return self.pool.submit(send)

    def redeliver(self, trial: Trial, event: dict[str, Any]) -> None:
        """Event Grid's retries until the host accepts the event (a 2xx)."""
        for _ in range(5):
            status = self.post(event).result(DEADLINE)
            trial.deliveries += 1
            trial.statuses.append(status)
            if status == 200:
                return
        trial.problems.append(f"never accepted: {trial.statuses}")

    def kill_at(self, parked: Parked, pending: Future[int]) -> None:
        """Wait until the write is held, SIGKILL the host, drop the write, start anew."""
        deadline = time.monotonic() + DEADLINE
        while not parked.reached.wait(0.05):
            if pending.done() or time.monotonic() > deadline:
                self.world.acr.unpark()
                raise AssertionError(
                    f"write {parked.n} ({parked.when}) never reached; the host's writes: "
                    f"{parked.counted}; answer {pending.result() if pending.done() else None}"
                    f"\n{self.world.log()[-6000:]}"
                )
        self.world.kill()
        parked.release()
        pending.result(DEADLINE)
        self.world.start()

    def writes_of(self, strategy: str) -> tuple[list[str], Trial]:
        """A clean quarantine: the host's writes, in order (the kill points)."""
        repo, content, events = self.push(strategy)
        counter = self.world.acr.park(10_000, "before", host_write)  # counts, never reached
        trial = Trial(strategy, "none")
        self.redeliver(trial, events[0])
        self.world.acr.unpark()
        self.judge(trial, repo, content, events[0])
        return list(counter.counted), trial

    def trial(self, strategy: str, n: int, when: When, *, then: Then = "redeliver") -> Trial:
        repo, content, events = self.push(strategy)
        parked = self.world.acr.park(n, when, host_write)
        trial = Trial(strategy, f"{when} write {n}")
        first = self.post(events[0])
        self.kill_at(parked, first)
        trial.held, trial.held_status = parked.request, parked.status
        trial.deliveries, trial.statuses = 1, [first.result()]
        began = time.monotonic()
        if then == "redeliver":
            self.redeliver(trial, events[0])
        else:
            self.sweep(trial)
        trial.recovery_s = round(time.monotonic() - began, 2)
        self.judge(trial, repo, content, events[0], swept=then == "sweep")
        return trial

    def sweep(self, trial: Trial) -> None:
        """The recovery timer, run now through the admin API."""
        assert self.world.host is not None
        status = self.world.host.run_timer("recovery", timeout=DEADLINE)
        trial.statuses.append(status)
        if status != 202:
            trial.problems.append(f"recovery answered {status}")

    # -- the judge --------------------------------------------------------------------------

    def judge(
        self,
        trial: Trial,
        repo: str,
        content: Content,
        event: dict[str, Any],
        *,
        swept: bool = False,
    ) -> None:
        world = self.world
        digest = str(content.manifest_digest)
        children = content.children if isinstance(content, IndexBlobs) else ()
        digests = [digest, *(str(c.manifest_digest) for c in children)]
        held = f"quarantine/{repo}"
        with world.origin() as origin:
            where = placement(origin, repo, held, content)
        if trial.strategy == "lock":
            found = world.attributes(repo, digests)
            wrong = {d[:19]: a for d, a in found.items() if a != FAILED_LOCK}
            trial.state = "locked" if where == "untouched" and not wrong else f"{where} {wrong}"
        else:
            stray = []
            with closing(world.provider()) as acr:
                stray = [f"{repo}@{i.digest[:19]}: {i.tags}" for i in acr.list_images(repo)]
                for image in acr.list_images(held):
                    wanted = (quarantine_tag(digest),) if image.digest == digest else ()
                    if image.tags != wanted:
                        stray.append(f"{held}@{image.digest[:19]}: {image.tags}")
            trial.state = where if not stray else f"{where}, stray {stray}"
        with closing(world.ledger()) as ledger:
            log = ledger.verdict_log(HOST, repo, digest)  # type: ignore[attr-defined]
            mine = [(d, o) for d, o, _ in log if d is not None and d.endswith(event["id"])]
            trial.verdicts = [o for _, o in mine]
            trial.sweep_verdicts = sum(1 for d, _, _ in log if d is None)
            others = [d for d, _, _ in log if d is not None and not d.endswith(event["id"])]
            if others:
                trial.problems.append(f"verdicts of other deliveries: {others}")
            actions = [a for a in ledger.actions() if a.repository == repo]
            trial.quarantine_actions = [a.status for a in actions if a.kind == "quarantine"]
            trial.unfinished = sum(1 for a in actions if a.status == "intent")
        alerts = [
            a
            for a in world.alerts()
            if a["data"].get("repository") == repo and a["data"].get("action") == "quarantine"
        ]
        trial.alerts = len(alerts)
        trial.alert_keys = len({a["id"] for a in alerts})
        if trial.strategy == "lock" and trial.state == "locked":
            trial.released = self.release(repo, digest, digests)
        trial.judge(swept=swept)

    def release(self, repo: str, digest: str, digests: list[str]) -> str:
        """`regwarden quarantine release`'s action; what the attributes are after it."""
        image = ImageRef(registry=HOST, repository=repo, tag=None, digest=digest)
        with closing(self.world.ledger()) as ledger, closing(self.world.provider()) as acr:
            release(acr, ledger, image=image, reason="chaos", now=datetime.now(UTC))
        found = self.world.attributes(repo, digests)
        wrong = {d[:19]: a for d, a in found.items() if a != OPEN}
        return "restored" if not wrong else f"left {wrong}"


def kill_points(writes: list[str]) -> list[tuple[int, When]]:
    """Every write, before and after it; under CI: the first before it lands, one in the
    middle after it landed, and the last after it landed."""
    every: list[tuple[int, When]] = [
        (n, w) for n in range(1, len(writes) + 1) for w in ("before", "after")
    ]
    if not CI:
        return every
    chosen: list[tuple[int, When]] = [
        (1, "before"),
        ((len(writes) + 1) // 2, "after"),
        (len(writes), "after"),
    ]
    return list(dict.fromkeys(chosen))


@pytest.fixture(scope="module")
def rig(registry: LocalRegistry, chaos_root: Path) -> Iterator[Rig]:
    with azure_world(registry, chaos_root, POLICY, REGWARDEN_RECOVERY_SETTLE="0") as world:
        world.start()
        r = Rig(world)
        try:
            yield r
        finally:
            r.pool.shutdown(cancel_futures=True)


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[dict[str, Any]], None]:
    def emit(line: dict[str, Any]) -> None:
        with capsys.disabled():
            print("\nCHAOS " + json.dumps(line, sort_keys=True), flush=True)

    return emit


@pytest.mark.parametrize("strategy", ["lock", "move"])
def test_a_quarantine_killed_at_each_write_ends_whole_after_the_redelivery(
    rig: Rig, strategy: str, report: Callable[[dict[str, Any]], None]
) -> None:
    started = time.monotonic()
    writes, clean = rig.writes_of(strategy)
    assert clean.ok, clean.line() + "\n" + rig.world.log()[-6000:]
    if strategy == "lock":
        # one PATCH per manifest: the index and its two children
        assert [w.split()[0] for w in writes] == ["PATCH"] * 3, writes
    else:
        assert sum(1 for w in writes if w.startswith("PUT /v2/")) >= 3, writes
        assert any(w.startswith("DELETE ") for w in writes), writes
    trials = [rig.trial(strategy, n, when) for n, when in kill_points(writes)]
    table = {t.kill: ("whole" if t.ok else "NOT: " + "; ".join(t.problems)) for t in trials}
    report(
        {
            "test": f"azure-{strategy}-index",
            "ci": CI,
            "writes": writes,
            "kill_points": table,
            "redelivered_alerts": sum(t.alerts - t.alert_keys for t in trials),
            "recovery_s_max": max((t.recovery_s or 0.0) for t in trials),
            "wall_s": round(time.monotonic() - started, 1),
        }
    )
    for t in trials:
        assert t.held and (t.kill.startswith("before") or (t.held_status or 500) < 300), t.line()
    failed = [t.line() for t in trials if not t.ok]
    assert not failed, "\n".join(failed) + "\n" + rig.world.log()[-6000:]


def test_a_lock_killed_and_never_redelivered_is_finished_by_the_recovery_timer(
    rig: Rig, report: Callable[[dict[str, Any]], None]
) -> None:
    """Killed once the first PATCH landed, and the event never comes again (dead-lettered,
    say): the recovery timer finishes the lock from the ledger's intent, with its verdict
    and its alert."""
    trial = rig.trial("lock", 1, "after", then="sweep")
    report({"test": "azure-lock-index-recovery", **json.loads(trial.line())})
    assert trial.held.startswith("PATCH /acr/v1/") and trial.held_status == 200, trial.line()
    assert trial.ok, trial.line() + "\n" + rig.world.log()[-6000:]


def test_the_judge_sees_a_killed_lock_nobody_finished(rig: Rig) -> None:
    """The checks themselves: killed once the first PATCH landed and left alone, the lock
    is partial, its intent unfinished, no verdict, no alert; then the recovery timer
    finishes it and the same checks pass."""
    repo, content, events = rig.push("lock")
    parked = rig.world.acr.park(1, "after", host_write)
    first = rig.post(events[0])
    rig.kill_at(parked, first)
    assert parked.request.startswith("PATCH /acr/v1/") and parked.status == 200, parked
    left = Trial("lock", "after write 1, nothing after")
    rig.judge(left, repo, content, events[0])
    assert not left.state.startswith("locked") and left.unfinished == 1, left.line()
    assert left.verdicts == [] and left.alert_keys == 0, left.line()
    assert not left.ok, left.line()

    swept = Trial("lock", "then swept")
    rig.sweep(swept)
    rig.judge(swept, repo, content, events[0], swept=True)
    assert swept.ok, swept.line()
