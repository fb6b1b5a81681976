"""The executor against an in-memory registry: phase order, resume without re-deleting,
404 as done, AIMD on throttling, ECR-style batches, failures, guard trips, dry runs; and the
limiter on its own with a fake clock."""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.retention import FakeBatchRegistry, FakeRegistry, record

from regwarden.errors import RegistryError, Unsupported, UsageError
from regwarden.policy import Policy, load_policy_text
from regwarden.retention import (
    AdaptiveLimiter,
    LineProgress,
    RunPlan,
    apply,
    deletion_key,
    load_run,
    plan_run,
)
from regwarden.store import SqliteLedger

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
INDEX = "application/vnd.oci.image.index.v1+json"


def dg(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def policy(guard: str = "{maxDeletes: 10000, maxShare: 1}") -> Policy:
    text = (
        "apiVersion: regwarden/v1\nkind: Policy\ndefaults:\n  team: platform\n"
        "  retention:\n    keep: [{mostRecent: 2}]\n"
        "    delete: [{olderThan: 30d}, {untagged: {olderThan: 7d}}]\n"
        f"    guard: {guard}\n"
    )
    return load_policy_text(text, source="test.yaml", base_dir="/tmp")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


def images(repo: str, n: int, *, old: int, prefix: str = "img") -> list:  # type: ignore[type-arg]
    """`n` tagged images, the first two recent (kept by mostRecent), `old` of them older
    than 30 days; every third old one has a cosign signature."""
    out = []
    for i in range(n):
        digest = dg(f"{repo}/{prefix}{i}")
        age = 1 + i if i < n - old else 60 + i
        out.append(record(repo, digest, f"v{i}", pushed=NOW - age * DAY, size=100 + i))
        if i >= n - old and i % 3 == 0:
            sig = digest.replace(":", "-") + ".sig"
            out.append(record(repo, dg(f"{repo}/{prefix}{i}.sig"), sig, size=10))
    return out


def plan(registry: FakeRegistry, ledger: SqliteLedger, pol: Policy | None = None) -> RunPlan:
    return plan_run(registry, pol or policy(), ledger=ledger, now=NOW, run_id="run-1")


def test_deletes_every_planned_digest_in_phases_and_records_each(ledger: SqliteLedger) -> None:
    index, child = dg("index"), dg("child")
    listing = [
        *images("team/api", 12, old=9),
        record(
            "team/api", index, "multi", pushed=NOW - 90 * DAY, media_type=INDEX, children=(child,)
        ),
        record("team/api", child, pushed=NOW - 90 * DAY),  # listed, as ECR lists children
    ]
    registry = FakeRegistry({"team/api": listing, "team/web": images("team/web", 5, old=3)})
    run = plan(registry, ledger)
    assert run.plan is not None and not run.tripped
    planned = {(w.repository, d) for w in run.work for p in w.phases for d in p}
    assert len(planned) == run.deletions == run.plan.images_deleted

    result = apply(run, registry, ledger, concurrency=4)
    assert result.status == "done"
    assert set(registry.deleted()) == planned
    assert len(registry.deleted()) == len(planned)  # each once
    assert result.deleted == len(planned) and result.failures == ()
    assert result.bytes_freed == run.bytes
    # phases: a signature and an index go before the image and child they point at
    at = {(c.repository, c.digests[0]): c.at for c in registry.calls if c.op == "delete"}
    for w in run.work:
        for earlier, later in zip(w.phases, w.phases[1:], strict=False):
            assert max(at[(w.repository, d)] for d in earlier) <= min(
                at[(w.repository, d)] for d in later
            )
    assert at[("team/api", index)] < at[("team/api", child)]
    # the ledger holds every deletion and the run's summary
    for repo, digest in planned:
        action = ledger.action(deletion_key("run-1", registry.host, repo, digest))
        assert action is not None and action.status == "done"
        assert action.state["result"] == "deleted"
    summary = ledger.action("retention-run:run-1")
    assert summary is not None and summary.status == "done"
    assert summary.state["deleted"] == len(planned)


def test_an_interrupted_apply_resumes_without_re_deleting(ledger: SqliteLedger) -> None:
    registry = FakeRegistry({"team/api": images("team/api", 40, old=36)}, delay=0.002)
    run = plan(registry, ledger)
    total = run.deletions
    stop_after = total // 2

    first = apply(
        run,
        registry,
        ledger,
        concurrency=2,
        should_stop=lambda: len(registry.deleted()) >= stop_after,
    )
    assert first.status == "interrupted"
    done_first = len(registry.deleted())
    assert stop_after <= done_first < total
    assert first.deleted == done_first
    assert first.repositories[0].not_started == total - done_first

    # resume from the ledger alone: the stored plan, not a new one
    stored = load_run(ledger, "run-1")
    assert stored.plan is None
    assert [w.phases for w in stored.work] == [w.phases for w in run.work]
    second = apply(stored, registry, ledger, concurrency=4)
    assert second.status == "done"
    deleted = registry.deleted()
    assert len(deleted) == total == len(set(deleted))  # nothing deleted twice
    assert second.resumed == done_first
    assert second.deleted == total - done_first


def test_a_digest_already_gone_counts_as_done(ledger: SqliteLedger) -> None:
    registry = FakeRegistry({"team/api": images("team/api", 6, old=4)})
    run = plan(registry, ledger)
    victim = run.work[0].phases[-1][0]
    registry.gone("team/api", victim)
    result = apply(run, registry, ledger)
    assert result.status == "done" and result.gone == 1
    action = ledger.action(deletion_key("run-1", registry.host, "team/api", victim))
    assert action is not None and action.status == "done" and action.state["result"] == "gone"


def test_throttling_halves_concurrency_and_everything_still_completes(
    ledger: SqliteLedger,
) -> None:
    registry = FakeRegistry({"team/api": images("team/api", 60, old=56)}, delay=0.001)
    run = plan(registry, ledger)
    registry.throttle(6)
    result = apply(run, registry, ledger, concurrency=8, max_attempts=6)
    assert result.status == "done"
    assert len(registry.deleted()) == run.deletions
    throttled = [c for c in registry.calls if c.op == "throttled"]
    assert len(throttled) == 6
    assert result.throttles >= 6
    assert result.lowest_concurrency < result.concurrency == 8


def test_throttled_past_the_attempt_budget_fails_and_blocks_later_phases(
    ledger: SqliteLedger,
) -> None:
    registry = FakeRegistry({"team/api": images("team/api", 12, old=9)})
    run = plan(registry, ledger)
    assert len(run.work[0].phases) == 2  # signatures, then images
    registry.throttle(10_000)
    result = apply(run, registry, ledger, concurrency=2, max_attempts=2)
    assert result.status == "failed"
    assert result.deleted == 0
    first_phase = len(run.work[0].phases[0])
    assert len(result.failures) == first_phase
    assert result.repositories[0].not_started == run.deletions - first_phase
    assert all("429" in f.error for f in result.failures)


def test_a_refusal_for_everything_stops_the_run(ledger: SqliteLedger) -> None:
    class Refusing(FakeRegistry):
        def delete(self, repository: str, digest: str) -> None:
            raise Unsupported("DELETE: got HTTP 405 (UNSUPPORTED)", status=405)

    registry = Refusing({"team/api": images("team/api", 30, old=26)})
    run = plan(registry, ledger)
    result = apply(run, registry, ledger, concurrency=2)
    assert result.status == "aborted"
    assert any("405" in n for n in result.notes)
    assert result.failures == ()  # nothing marked failed: a resume retries it all
    assert result.repositories[0].not_started == run.deletions


def test_batches_of_at_most_100_per_phase_with_throttled_batches_retried(
    ledger: SqliteLedger,
) -> None:
    listing = images("team/api", 260, old=250)
    registry = FakeBatchRegistry({"team/api": listing}, throttle_codes=1)
    run = plan(registry, ledger)
    result = apply(run, registry, ledger, concurrency=4)
    assert result.status == "done"
    assert len(registry.deleted()) == run.deletions
    batches = [c for c in registry.calls if c.op == "batch"]
    minimum = sum(math.ceil(len(p) / 100) for p in run.work[0].phases)
    assert len(batches) == minimum + 1  # one batch came back throttled and was retried
    assert all(len(c.digests) <= 100 for c in batches)
    assert result.throttles >= 1
    assert result.requests == len(batches)


def test_batch_failures_are_per_digest(ledger: SqliteLedger) -> None:
    registry = FakeBatchRegistry({"team/api": images("team/api", 10, old=7, prefix="b")})
    run = plan(registry, ledger)
    bad = run.work[0].phases[-1][0]
    gone = run.work[0].phases[-1][1]
    registry.fail(bad)
    registry.gone("team/api", gone)
    result = apply(run, registry, ledger)
    assert result.status == "failed"
    assert [f.digest for f in result.failures] == [bad]
    assert "InternalError" in result.failures[0].error
    assert result.gone == 1
    assert result.deleted == run.deletions - 2


def test_a_tripped_plan_deletes_nothing(ledger: SqliteLedger) -> None:
    registry = FakeRegistry({"team/api": images("team/api", 20, old=18)})
    run = plan(registry, ledger, policy("{maxDeletes: 3, maxShare: 1}"))
    assert run.tripped and run.work == ()
    result = apply(run, registry, ledger)
    assert result.status == "tripped"
    assert registry.deleted() == []
    summary = ledger.action("retention-run:run-1")
    assert summary is not None and summary.status == "tripped"


def test_dry_run_writes_and_deletes_nothing(ledger: SqliteLedger) -> None:
    registry = FakeRegistry({"team/api": images("team/api", 8, old=5)})
    run = plan(registry, ledger)
    result = apply(run, registry, ledger, dry_run=True)
    assert result.status == "dry-run"
    assert registry.deleted() == []
    assert ledger.action("retention-plan:run-1") is None
    assert result.repositories[0].not_started == run.deletions


def test_a_keyboard_interrupt_is_recorded_then_propagates(ledger: SqliteLedger) -> None:
    registry = FakeRegistry({"team/api": images("team/api", 30, old=26)}, delay=0.002)
    run = plan(registry, ledger)
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        on_main = threading.current_thread() is threading.main_thread()
        if on_main and calls > 1 and len(registry.deleted()) >= 3:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        apply(run, registry, ledger, concurrency=2, should_stop=stop)
    summary = ledger.action("retention-run:run-1")
    assert summary is not None and summary.status == "interrupted"
    second = apply(load_run(ledger, "run-1"), registry, ledger)
    assert second.status == "done"
    assert len(registry.deleted()) == len(set(registry.deleted())) == run.deletions


def test_progress_lines_report_counts() -> None:
    import io

    stream = io.StringIO()
    ticks = iter(range(0, 1000, 10))
    progress = LineProgress(stream, interval=15, clock=lambda: float(next(ticks)))
    progress.start(4, "retention r")
    for _ in range(4):
        progress.advance(throttled=1, concurrency=4)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "retention r: 4/4 (100%) · 1 throttled · concurrency 4"
    assert 1 <= len(lines) < 5


# -- the limiter ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_limiter_halves_once_per_cooldown_and_creeps_back() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(8, cooldown=1.0, clock=clock)
    assert limiter.limit == 8
    limiter.throttled()
    limiter.throttled()  # same burst: one decrease
    assert (limiter.limit, limiter.throttles, limiter.decreases) == (4, 2, 1)
    clock.t += 2
    limiter.throttled()
    assert limiter.limit == 2 and limiter.lowest == 2
    clock.t += 2
    limiter.throttled()
    limiter_floor = limiter.limit
    clock.t += 2
    limiter.throttled()
    assert limiter.limit == limiter_floor == 1  # never below the minimum
    # additive increase: about one slot per window of `limit` successes
    for _ in range(1):
        assert limiter.acquire()
        limiter.release(ok=True)
    assert limiter.limit == 2
    successes = 0
    while limiter.limit < 3:
        assert limiter.acquire()
        limiter.release(ok=True)
        successes += 1
    assert successes == 3  # 2 → 2.5 → 2.9 → 3.24
    for _ in range(100):
        assert limiter.acquire()
        limiter.release(ok=True)
    assert limiter.limit == 8  # capped at the maximum


def test_limiter_blocks_beyond_the_limit_and_during_a_pause() -> None:
    limiter = AdaptiveLimiter(2)
    assert limiter.acquire() and limiter.acquire()
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(limiter.acquire()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # both slots taken
    limiter.release()
    waiter.join(2)
    assert got == [True]

    stop = threading.Event()
    limiter.throttled(delay=30)  # a long pause: only a stop gets a waiter out
    blocked: list[bool] = []
    paused = threading.Thread(target=lambda: blocked.append(limiter.acquire(stop)))
    paused.start()
    paused.join(0.2)
    assert paused.is_alive()
    stop.set()
    paused.join(2)
    assert blocked == [False]


def test_bad_settings_are_usage_errors(ledger: SqliteLedger) -> None:
    registry = FakeRegistry({"team/api": images("team/api", 4, old=2)})
    run = plan(registry, ledger)
    with pytest.raises(UsageError, match="concurrency: got 0"):
        apply(run, registry, ledger, concurrency=0)
    with pytest.raises(UsageError, match="batch size: got 101"):
        apply(run, registry, ledger, batch_size=101)
    with pytest.raises(UsageError, match="no retention run 'nope'"):
        load_run(ledger, "nope")
    with pytest.raises(UsageError, match="run id: got 'a b'"):
        load_run(ledger, "a b")
    assert isinstance(RegistryError("x"), Exception)


def index_listing() -> list:  # type: ignore[type-arg]
    """An old untagged-children index, as a tag-listing registry shows it (children not
    listed), and a kept image."""
    index, amd, arm = dg("index"), dg("child-amd64"), dg("child-arm64")
    return [
        record(
            "team/api",
            index,
            "multi",
            pushed=NOW - 90 * DAY,
            media_type=INDEX,
            children=(amd, arm),
        ),
        *images("team/api", 2, old=0),
    ]


def test_a_childs_unknown_age_is_its_deleted_index_and_the_plan_keeps_it(
    ledger: SqliteLedger, tmp_path: Path
) -> None:
    registry = FakeRegistry({"team/api": index_listing()})
    run = plan(registry, ledger)
    (work,) = run.work
    index = dg("index")
    assert work.phases[0] == (index,)
    anchor = (NOW - 90 * DAY).timestamp()
    assert work.deletions[index].anchor == anchor
    for child in (dg("child-amd64"), dg("child-arm64")):
        assert work.deletions[child].anchor == anchor  # none of its own: the index's
    apply(run, registry, ledger, dry_run=True)  # a dry run saves nothing
    assert ledger.action("retention-plan:run-1") is None
    # saved with the plan: a resumed run has them too
    apply(run, registry, ledger)
    assert load_run(ledger, "run-1").work[0].deletions == work.deletions


def test_a_plan_saved_without_anchors_still_loads(ledger: SqliteLedger) -> None:
    registry = FakeRegistry({"team/api": index_listing()})
    run = plan(registry, ledger)
    apply(run, registry, ledger)
    record_ = ledger.action("retention-plan:run-1")
    assert record_ is not None
    state = record_.state
    for repo in state["repositories"]:
        repo["deletions"] = {d: v[:4] for d, v in repo["deletions"].items()}
    ledger.finish_action("retention-plan:run-1", status="planned", state=state)
    loaded = load_run(ledger, "run-1")
    assert {d.anchor for d in loaded.work[0].deletions.values()} == {None}


def test_a_tag_listing_registry_gets_the_untagged_later_phases_in_the_ledger_first(
    ledger: SqliteLedger,
) -> None:
    """Before the index's DELETE, its untagged platform images go into the ledger's pushes
    at the plan's age for them: killed between the two, the next plan still sees them."""
    registry = FakeRegistry({"team/api": index_listing()})
    run = plan(registry, ledger)
    seen_at_index_delete: dict[str, tuple[datetime, datetime | None]] = {}
    real_delete = registry.delete

    def delete(repository: str, digest: str) -> object:
        if digest == dg("index"):
            seen_at_index_delete.update(ledger.image_times(registry.host, "team/api"))
        return real_delete(repository, digest)

    registry.delete = delete  # type: ignore[method-assign]
    assert apply(run, registry, ledger).status == "done"
    children = {dg("child-amd64"), dg("child-arm64")}
    assert set(seen_at_index_delete) == children  # the index itself is tagged: not added
    assert {t[0] for t in seen_at_index_delete.values()} == {NOW - 90 * DAY}


def test_a_registry_listing_every_manifest_gets_nothing_added(ledger: SqliteLedger) -> None:
    registry = FakeRegistry({"team/api": index_listing()})
    registry.capabilities = frozenset({"manifest-listing"})
    run = plan(registry, ledger)
    assert apply(run, registry, ledger).status == "done"
    assert ledger.image_times(registry.host, "team/api") == {}
