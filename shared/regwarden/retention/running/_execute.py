"""The executor: deletes what a run plans, resumably, as fast as the registry allows.

    result = apply(run, registry, ledger, concurrency=8, progress=progress_for())

- **Phases.** Each repository's deletions come in phases (referrers before their subject,
  an index before its children); a phase starts when the one before it is done, in every
  repository. A repository with a failure in one phase runs none of its later phases.
- **Resumable.** The run's plan is in the ledger before the first deletion. Each deletion
  is an action `retention:<run>:<registry>/<repo>@<digest>`: recorded before the request,
  finished after it. Applying the same run again skips what is done and never re-plans; a
  digest that is already gone (404) counts as done.
- **Bounded, adaptive concurrency.** At most `concurrency` deletions are in flight. Every
  sign of throttling (what the provider's `watch_throttling` reports: its client's or
  SDK's own retries; a delete answered HTTP 429/503 or `throttled`) halves the allowed
  concurrency (at most once per `cooldown`) and pauses new requests for the server's
  `Retry-After`; each success adds back 1/limit, so the limit creeps up by about one per
  window (AIMD, as TCP does). Deletions still throttled after the client's own retries
  are retried here, a bounded number of times.
- **Batches where the registry has them.** A registry declaring `batch-delete` (ECR)
  deletes with `delete_many` in batches of up to 100 digests, one API call each; a
  repository's batches go one after another, repositories in parallel.
- **Locked since planning.** The planner never deletes a manifest the listing showed
  locked; one locked after planning (a `lock` quarantine meanwhile) makes the registry
  refuse the delete. On a registry declaring `lock`, a refusal whose manifest now says
  `deleteEnabled: false` is reported as `locked` (the run is not failed and not aborted;
  the repository's later phases wait, as after a failure, since they may be that
  manifest's children).
- **Dry run** takes the same path up to the request, writes nothing and deletes nothing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ...errors import AuthError, NotFound, RegistryError, Unsupported, UsageError
from ...providers import (
    CAP_BATCH_DELETE,
    CAP_LOCK,
    CAP_MANIFEST_LISTING,
    THROTTLE_STATUS,
    DeleteResult,
)
from ._progress import NoProgress, Progress
from ._run import RUN_KIND, Deletion, RunLedger, RunPlan, save_run

if TYPE_CHECKING:
    from ...providers import Registry
    from ...store import ActionRecord

__all__ = [
    "BATCH_LIMIT",
    "AdaptiveLimiter",
    "ApplyResult",
    "Failure",
    "RepositoryResult",
    "apply",
    "deletion_key",
]

BATCH_LIMIT = 100
"""Digests per `delete_many` call (ECR's BatchDeleteImage limit)."""
DELETE_KIND = "retention-delete"

Status = Literal["done", "dry-run", "interrupted", "failed", "tripped", "aborted"]


def deletion_key(run_id: str, registry: str, repository: str, digest: str) -> str:
    """The ledger key of one deletion in one run."""
    return f"retention:{run_id}:{registry}/{repository}@{digest}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


# -- adaptive concurrency -----------------------------------------------------------------------


class AdaptiveLimiter:
    """AIMD concurrency limit: halve on throttling, creep back up on success.

    `acquire` blocks while `limit` requests are in flight or while a throttle pause
    lasts; `release(ok)` frees the slot (and grows the limit by 1/limit when ok);
    `throttled(delay)` halves the limit (once per `cooldown`, so one burst of 429s is one
    decrease) and pauses new requests for `delay` seconds.
    """

    def __init__(
        self,
        maximum: int,
        *,
        minimum: int = 1,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maximum < 1 or minimum < 1 or minimum > maximum:
            raise UsageError(
                f"concurrency: got maximum {maximum}, minimum {minimum}; expected "
                "1 <= minimum <= maximum"
            )
        self.maximum = maximum
        self.minimum = minimum
        self._limit = float(maximum)
        self._cooldown = cooldown
        self._clock = clock
        self._cv = threading.Condition()
        self._in_flight = 0
        self._pause_until = 0.0
        self._last_decrease = float("-inf")
        self.throttles = 0
        self.decreases = 0
        self.lowest = maximum

    @property
    def limit(self) -> int:
        return int(self._limit)

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Take a slot; False if `stop` was set while waiting."""
        with self._cv:
            while True:
                if stop is not None and stop.is_set():
                    return False
                now = self._clock()
                if now < self._pause_until:
                    self._cv.wait(min(self._pause_until - now, 0.5))
                    continue
                if self._in_flight < int(self._limit):
                    self._in_flight += 1
                    return True
                self._cv.wait(0.5)

    def release(self, ok: bool = True) -> None:
        with self._cv:
            self._in_flight -= 1
            if ok and self._limit < self.maximum:
                self._limit = min(float(self.maximum), self._limit + 1.0 / self._limit)
            self._cv.notify_all()

    def throttled(self, delay: float | None = None) -> None:
        with self._cv:
            self.throttles += 1
            now = self._clock()
            if now - self._last_decrease >= self._cooldown:
                self._last_decrease = now
                self._limit = max(float(self.minimum), self._limit / 2)
                self.decreases += 1
                self.lowest = min(self.lowest, int(self._limit))
            if delay:
                self._pause_until = max(self._pause_until, now + delay)
            self._cv.notify_all()


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    repository: str
    digest: str
    error: str


@dataclass(frozen=True, slots=True)
class RepositoryResult:
    repository: str
    planned: int
    deleted: int = 0
    gone: int = 0
    """Already absent (deleted by someone else, or by an attempt whose answer was lost)."""
    resumed: int = 0
    """Done by an earlier apply of the same run."""
    failed: tuple[Failure, ...] = ()
    not_started: int = 0
    bytes_freed: int = 0
    locked: tuple[str, ...] = ()
    """Digests the registry refused to delete because they were locked after planning."""

    @property
    def done(self) -> int:
        return self.deleted + self.gone + self.resumed


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What an apply did. `status`: `done` (every planned deletion is done), `failed`
    (some failed), `interrupted` (stopped; resume the run), `aborted` (the registry refused
    deletion outright), `tripped` (guard rail: nothing deleted), `dry-run`."""

    run_id: str
    registry: str
    status: Status
    repositories: tuple[RepositoryResult, ...]
    seconds: float = 0.0
    throttles: int = 0
    concurrency: int = 0
    lowest_concurrency: int = 0
    requests: int = 0
    """Delete requests made (single deletes, or batch calls)."""
    notes: tuple[str, ...] = ()

    @property
    def planned(self) -> int:
        return sum(r.planned for r in self.repositories)

    @property
    def deleted(self) -> int:
        return sum(r.deleted for r in self.repositories)

    @property
    def gone(self) -> int:
        return sum(r.gone for r in self.repositories)

    @property
    def resumed(self) -> int:
        return sum(r.resumed for r in self.repositories)

    @property
    def failures(self) -> tuple[Failure, ...]:
        return tuple(f for r in self.repositories for f in r.failed)

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes_freed for r in self.repositories)

    @property
    def locked(self) -> tuple[tuple[str, str], ...]:
        """(repository, digest) of each deletion refused because it was locked."""
        return tuple((r.repository, d) for r in self.repositories for d in r.locked)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "registry": self.registry,
            "status": self.status,
            "planned": self.planned,
            "deleted": self.deleted,
            "already_gone": self.gone,
            "resumed": self.resumed,
            "failed": len(self.failures),
            "locked": len(self.locked),
            "bytes_freed": self.bytes_freed,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "throttles": self.throttles,
            "concurrency": self.concurrency,
            "lowest_concurrency": self.lowest_concurrency,
            "notes": list(self.notes),
            "repositories": [
                {
                    "repository": r.repository,
                    "planned": r.planned,
                    "deleted": r.deleted,
                    "already_gone": r.gone,
                    "resumed": r.resumed,
                    "not_started": r.not_started,
                    "bytes_freed": r.bytes_freed,
                    "failures": [{"digest": f.digest, "error": f.error} for f in r.failed],
                    "locked": list(r.locked),
                }
                for r in self.repositories
            ],
        }


@dataclass
class _Tally:
    planned: int
    deleted: int = 0
    gone: int = 0
    resumed: int = 0
    bytes_freed: int = 0
    failed: list[Failure] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    blocked: bool = False
    """A failure in an earlier phase: later phases of this repository do not run."""


# -- the executor ---------------------------------------------------------------------------------


class _Executor:
    def __init__(
        self,
        run: RunPlan,
        registry: Registry,
        ledger: RunLedger,
        *,
        concurrency: int,
        progress: Progress,
        should_stop: Callable[[], bool] | None,
        clock: Callable[[], datetime],
        max_attempts: int,
        batch_size: int,
    ) -> None:
        self.run = run
        self.registry = registry
        self.ledger = ledger
        self.limiter = AdaptiveLimiter(concurrency)
        self.progress = progress
        self.should_stop = should_stop
        self.clock = clock
        self.max_attempts = max_attempts
        self.batch_size = batch_size
        self.stop = threading.Event()
        self.abort: str | None = None
        self.lock = threading.Lock()
        # One ledger writer at a time: SQLite serialises writers anyway, but a thread that
        # finds the database locked backs off in sleeps of milliseconds; a Python lock
        # hands over in microseconds.
        self.ledger_lock = threading.Lock()
        self.requests = 0
        self.tally = {w.repository: _Tally(planned=w.count) for w in run.work}
        self.work = {w.repository: w for w in run.work}

    # -- bookkeeping -------------------------------------------------------------------------

    def _stopping(self) -> bool:
        if self.stop.is_set():
            return True
        if self.should_stop is not None and self.should_stop():
            self.stop.set()
            return True
        return False

    def _advance(self, n: int = 1) -> None:
        self.progress.advance(n, throttled=self.limiter.throttles, concurrency=self.limiter.limit)

    def _begin(self, repository: str, digest: str, info: Deletion) -> bool:
        """Record the intent; True if an earlier apply of this run already did it."""
        with self.ledger_lock:
            record = self._begin_locked(repository, digest, info)
        return record.status == "done"

    def _begin_locked(self, repository: str, digest: str, info: Deletion) -> ActionRecord:
        return self.ledger.begin_action(
            deletion_key(self.run.run_id, self.run.registry, repository, digest),
            registry=self.run.registry,
            repository=repository,
            digest=digest,
            kind=DELETE_KIND,
            reason=info.reason,
            state={"run": self.run.run_id, "rule": info.rule, "tags": list(info.tags)},
            now=self.clock(),
        )

    def _finish(
        self, repository: str, digest: str, info: Deletion, outcome: str, error: str | None
    ) -> None:
        state: dict[str, Any] = {
            "run": self.run.run_id,
            "rule": info.rule,
            "tags": list(info.tags),
            "result": outcome,
        }
        if error is not None:
            state["error"] = error
        with self.ledger_lock:
            self.ledger.finish_action(
                deletion_key(self.run.run_id, self.run.registry, repository, digest),
                # a locked deletion is not done: a resumed run asks again
                status=outcome if outcome in ("failed", "locked") else "done",
                state=state,
            )
        t = self.tally[repository]
        with self.lock:
            if outcome == "deleted":
                t.deleted += 1
                t.bytes_freed += info.size
            elif outcome == "gone":
                t.gone += 1
            elif outcome == "resumed":
                t.resumed += 1
            elif outcome == "locked":
                t.locked.append(digest)
            else:
                t.failed.append(Failure(repository, digest, error or "failed"))

    def _locked(self, repository: str, digest: str, exc: RegistryError) -> bool:
        """Was the delete refused because the manifest is locked now? Asked of a registry
        declaring `lock` after a refusal (an AuthError: ACR answers 403 DENIED); a manifest
        whose attributes cannot be read counts as not locked (the refusal stands)."""
        if not isinstance(exc, AuthError) or CAP_LOCK not in self.registry.capabilities:
            return False
        read = getattr(self.registry, "manifest_attributes", None)
        if read is None:
            return False
        try:
            attributes = read(repository, digest)
        except RegistryError:
            return False
        return getattr(attributes, "delete", True) is False

    def _fatal(self, exc: RegistryError) -> bool:
        """Errors that will fail every deletion alike: stop the run instead."""
        if isinstance(exc, Unsupported | AuthError):
            with self.lock:
                if self.abort is None:
                    self.abort = str(exc)
            self.stop.set()
            return True
        return False

    # -- one digest (generic OCI) ------------------------------------------------------------

    def delete_one(self, repository: str, digest: str) -> None:
        info = self.work[repository].deletions.get(digest) or Deletion((), 0, "", "")
        if self._stopping():
            return
        if self._begin(repository, digest, info):
            self._finish_resumed(repository, digest, info)
            return
        attempt = 0
        while True:
            if not self.limiter.acquire(self.stop):
                return  # stopped while waiting: the intent stays, a resume retries it
            ok = False
            try:
                with self.lock:
                    self.requests += 1
                self.registry.delete(repository, digest)
                ok = True
                outcome, error = "deleted", None
            except NotFound:
                ok = True
                outcome, error = "gone", None
            except RegistryError as exc:
                attempt += 1
                if exc.status in THROTTLE_STATUS and attempt < self.max_attempts:
                    self.limiter.throttled(min(2.0**attempt * 0.25, 10.0))
                    continue
                if self._locked(repository, digest, exc):
                    ok = True  # an answer, not a sign of trouble: the limit is not cut
                    outcome, error = "locked", str(exc)
                elif self._fatal(exc):
                    return
                else:
                    outcome, error = "failed", str(exc)
            finally:
                self.limiter.release(ok)
            self._finish(repository, digest, info, outcome, error)
            self._advance()
            return

    def _finish_resumed(self, repository: str, digest: str, info: Deletion) -> None:
        t = self.tally[repository]
        with self.lock:
            t.resumed += 1
        self._advance()

    # -- a batch (CAP_BATCH_DELETE) -----------------------------------------------------------

    def delete_batch(self, repository: str, digests: Sequence[str]) -> None:
        infos = self.work[repository].deletions
        if self._stopping():
            return
        todo: list[str] = []
        for d in digests:
            info = infos.get(d) or Deletion((), 0, "", "")
            if self._begin(repository, d, info):
                self._finish_resumed(repository, d, info)
            else:
                todo.append(d)
        attempt = 0
        while todo:
            if not self.limiter.acquire(self.stop):
                return
            ok = False
            try:
                with self.lock:
                    self.requests += 1
                results: list[DeleteResult] | None = self.registry.delete_many(repository, todo)
                ok = True
            except RegistryError as exc:
                if self._fatal(exc):
                    return
                results = None
                error = str(exc)
            finally:
                self.limiter.release(ok)
            if results is None:
                for d in todo:
                    self._finish(
                        repository, d, infos.get(d) or Deletion((), 0, "", ""), "failed", error
                    )
                self._advance(len(todo))
                return
            retry: list[str] = []
            done = 0
            throttled = False
            for r in results:
                info = infos.get(r.digest) or Deletion((), 0, "", "")
                if r.status in ("deleted", "gone"):
                    self._finish(repository, r.digest, info, r.status, None)
                    done += 1
                elif r.status == "throttled" and attempt + 1 < self.max_attempts:
                    retry.append(r.digest)
                    throttled = True
                else:
                    self._finish(repository, r.digest, info, "failed", r.reason or r.status)
                    done += 1
            self._advance(done)
            todo = retry
            if throttled:
                attempt += 1
                self.limiter.throttled(min(2.0**attempt * 0.25, 10.0))

    def delete_batches(self, repository: str, digests: Sequence[str]) -> None:
        for start in range(0, len(digests), self.batch_size):
            if self._stopping():
                return
            self.delete_batch(repository, digests[start : start + self.batch_size])

    # -- phases ------------------------------------------------------------------------------

    def tasks(self, phase: int) -> Iterator[tuple[Callable[..., None], tuple[Any, ...]]]:
        batch = CAP_BATCH_DELETE in self.registry.capabilities
        for work in self.run.work:
            if phase >= len(work.phases) or self.tally[work.repository].blocked:
                continue
            digests = work.phases[phase]
            if batch:
                # one repository's batches in sequence (repositories run in parallel): a
                # repository is where a registry counts and locks deletions
                yield self.delete_batches, (work.repository, digests)
            else:
                for d in digests:
                    yield self.delete_one, (work.repository, d)

    def _drain(
        self, queue: deque[tuple[Callable[..., None], tuple[Any, ...]]], take: threading.Lock
    ) -> None:
        while not self.stop.is_set():
            with take:
                if not queue:
                    return
                fn, args = queue.popleft()
            fn(*args)

    def execute(self) -> None:
        """Run the phases in order; in each, `concurrency` workers drain one task queue
        (a few long-lived tasks rather than a future per digest: waiting on thousands of
        futures costs more CPU than the deletions)."""
        phases = max((len(w.phases) for w in self.run.work), default=0)
        workers = self.limiter.maximum
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retention") as pool:
            for phase in range(phases):
                if self._stopping():
                    break
                failed_before = {r: len(t.failed) + len(t.locked) for r, t in self.tally.items()}
                queue = deque(self.tasks(phase))
                take = threading.Lock()
                pending: set[Future[None]] = {
                    pool.submit(self._drain, queue, take) for _ in range(min(workers, len(queue)))
                }
                try:
                    while pending:
                        done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                        for f in done:
                            f.result()  # a bug in a task must surface, not vanish
                        self._stopping()
                except BaseException:
                    self.stop.set()
                    wait(pending)
                    raise
                for repo, t in self.tally.items():
                    if len(t.failed) + len(t.locked) > failed_before[repo]:
                        t.blocked = True


def _result(
    run: RunPlan,
    status: Status,
    executor: _Executor | None,
    seconds: float,
    notes: Sequence[str],
) -> ApplyResult:
    repos: list[RepositoryResult] = []
    for work in run.work:
        t = executor.tally[work.repository] if executor is not None else _Tally(work.count)
        done = t.deleted + t.gone + t.resumed + len(t.failed) + len(t.locked)
        repos.append(
            RepositoryResult(
                repository=work.repository,
                planned=work.count,
                deleted=t.deleted,
                gone=t.gone,
                resumed=t.resumed,
                failed=tuple(t.failed),
                not_started=max(0, work.count - done),
                bytes_freed=t.bytes_freed,
                locked=tuple(t.locked),
            )
        )
    limiter = executor.limiter if executor is not None else None
    return ApplyResult(
        run_id=run.run_id,
        registry=run.registry,
        status=status,
        repositories=tuple(repos),
        seconds=seconds,
        throttles=limiter.throttles if limiter else 0,
        concurrency=limiter.maximum if limiter else 0,
        lowest_concurrency=limiter.lowest if limiter else 0,
        requests=executor.requests if executor is not None else 0,
        notes=tuple(notes),
    )


def remember_unlisted(run: RunPlan, registry: Registry, ledger: RunLedger) -> None:
    """On a registry that lists tags only, put in the ledger's pushes every untagged digest
    the run deletes after another (an index's platform images, an untagged subject), at the
    age the plan judged it by. A run killed after the index's DELETE and before theirs
    would otherwise leave manifests no tag names and no later plan can see; known to the
    ledger, the next plan reads them (`_ledger_digests`) and the policy judges them again.
    A digest the ledger already knows keeps its own first-seen time."""
    if CAP_MANIFEST_LISTING in registry.capabilities:
        return  # the listing shows every manifest
    for work in run.work:
        for phase in work.phases[1:]:
            for digest in phase:
                info = work.deletions[digest]
                if info.tags or info.anchor is None:
                    continue
                seen = datetime.fromtimestamp(info.anchor, UTC)
                ledger.record_push(run.registry, work.repository, digest, (), now=seen)


def apply(
    run: RunPlan,
    registry: Registry,
    ledger: RunLedger,
    *,
    concurrency: int = 8,
    dry_run: bool = False,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], datetime] = _utc_now,
    max_attempts: int = 4,
    batch_size: int = BATCH_LIMIT,
) -> ApplyResult:
    """Delete what `run` plans; see the module docstring. The run's plan is saved in the
    ledger first (a resumed run keeps its original plan), and its result is recorded as
    action `retention-run:<run id>` when the apply ends, however it ends.

    `should_stop` is polled before each deletion: once it returns True no new deletion
    starts, in-flight ones finish, and the result says `interrupted`. A KeyboardInterrupt
    does the same, then propagates.
    """
    if concurrency < 1:
        raise UsageError(f"--concurrency: got {concurrency}, expected 1 or more")
    if not 1 <= batch_size <= BATCH_LIMIT:
        raise UsageError(f"batch size: got {batch_size}, expected 1..{BATCH_LIMIT}")
    if dry_run:
        return _result(run, "dry-run", None, 0.0, ["dry run: nothing was deleted"])
    save_run(ledger, run, now=clock())
    run_key = f"{RUN_KIND}:{run.run_id}"
    ledger.begin_action(
        run_key,
        registry=run.registry,
        repository="*",
        digest="",
        kind=RUN_KIND,
        reason=f"apply {run.deletions} planned deletions",
        state={},
        now=clock(),
    )
    if run.tripped:
        result = _result(run, "tripped", None, 0.0, ["a guard rail tripped: nothing deleted"])
        ledger.finish_action(run_key, status="tripped", state=result.to_dict())
        return result
    remember_unlisted(run, registry, ledger)

    progress = progress or NoProgress()
    executor = _Executor(
        run,
        registry,
        ledger,
        concurrency=concurrency,
        progress=progress,
        should_stop=should_stop,
        clock=clock,
        max_attempts=max_attempts,
        batch_size=batch_size,
    )
    undo = [registry.watch_throttling(executor.limiter.throttled)]
    t0 = time.perf_counter()
    progress.start(run.deletions, f"retention {run.run_id}")
    interrupted = False
    try:
        executor.execute()
    except BaseException:  # Ctrl-C, or a bug: record what was done, then propagate
        interrupted = True
        raise
    finally:
        for fn in undo:
            fn()
        progress.finish()
        seconds = time.perf_counter() - t0
        notes: list[str] = []
        if executor.abort is not None:
            status: Status = "aborted"
            notes.append(f"stopped: {executor.abort}")
        elif interrupted or executor.stop.is_set():
            status = "interrupted"
            notes.append(f"interrupted: resume with the run id {run.run_id}")
        elif any(t.failed for t in executor.tally.values()):
            status = "failed"
        else:
            status = "done"
        refused = sum(len(t.locked) for t in executor.tally.values())
        if refused:
            notes.append(
                f"{refused} deletions refused: locked on the registry since the plan was made"
            )
        result = _result(run, status, executor, seconds, notes)
        ledger.finish_action(run_key, status=status, state=result.to_dict())
    return result
