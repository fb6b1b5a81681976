"""Running retention from a Runtime: the whole registry in one process (`regwarden
retention apply`, `regwarden invoke retention`, a Kubernetes CronJob), or fanned out one
repository per message so a cloud run scales with the registry:

    messages = fan_out(registry, policy, run="20261127T120000Z-3f2a9c")  # scheduled fn
    for m in messages: queue.send(json.dumps(m))                         # e.g. SQS
    result = work(json.loads(body), runtime, now=now)                    # worker fn

A worker's run id is derived from the fan-out's run and the repository, so a redelivered
message resumes the repository's recorded plan instead of planning again.

A cloud's functions wire the two ends to their queue and schedule; what they share is
here, so each adapter keeps only its I/O (SQS, Pub/Sub …) and its settings:

    done = fan_out_scheduled(payload, registry, policy, prefixes=scope, now=now)
    queue.send_all(done.bodies())                           # the platform's batching
    log(done.summary(mode=mode))

    done = work_body(body, runtime, registry=host, prefixes=scope, now=now,
                     in_use=lambda: gather_in_use(inventory_with(policy.inventory, ...)),
                     should_stop=deadline_guard(deadline, margin_s=30))
    if done.failure is not None: raise done.failure         # the message comes back
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import IntakeError, RegwardenError, UsageError
from ._execute import ApplyResult, apply
from ._inventory import InUse, gather_in_use, in_use_protections
from ._progress import Progress
from ._report import send_alerts, team_alerts
from ._run import (
    RunLedger,
    RunPlan,
    load_run,
    new_run_id,
    plan_key,
    plan_run,
    select_repositories,
)
from ._schedule import (
    bounded,
    in_scope,
    message_body,
    message_field,
    outcome_failure,
    scheduled_run,
    scheduled_run_id,
    work_message,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ...notify import Router
    from ...policy import Inventory, Policy
    from ...providers import Registry
    from ..planning import RegistryPlan

__all__ = [
    "FanOut",
    "RetentionOutcome",
    "RetentionRuntime",
    "WorkDone",
    "deadline_guard",
    "fan_out",
    "fan_out_scheduled",
    "inventory_with",
    "locked_on_registry",
    "recheck_in_use",
    "run_retention",
    "work",
    "work_body",
]


class RetentionRuntime(Protocol):
    """What retention uses of `regwarden.runtime.Runtime`."""

    @property
    def policy(self) -> Policy: ...

    @property
    def ledger(self) -> RunLedger: ...

    def registry(self, host: str) -> Registry: ...

    def router(self) -> Router: ...


@dataclass(frozen=True, slots=True)
class RetentionOutcome:
    """A planned run and, unless it was a dry run, what applying it did."""

    run: RunPlan
    result: ApplyResult | None
    alerts: int = 0
    notes: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """0 done or nothing to do; 1 a guard rail tripped (or, dry run, deletions are
        pending); 3 deletions failed or the registry refused them; 130 interrupted."""
        if self.run.tripped:
            return 1
        if self.result is None:
            return 1 if self.run.deletions else 0
        status = self.result.status
        if status in ("failed", "aborted"):
            return 3
        if status == "interrupted":
            return 130
        return 0

    def to_dict(self) -> dict[str, Any]:
        from ..planning import plan_to_dict

        out: dict[str, Any] = {
            "run_id": self.run.run_id,
            "registry": self.run.registry,
            "tripped": self.run.tripped,
            "planned_deletions": self.run.deletions,
            "planned_bytes": self.run.bytes,
            "timings": {
                "listing_s": round(self.run.listing_s, 3),
                "record_construction_s": round(self.run.build_s, 3),
                "planning_s": round(self.run.planning_s, 3),
            },
            "in_use": dict(self.run.in_use),
            "notes": list(self.notes),
            "result": self.result.to_dict() if self.result is not None else None,
            "alerts": self.alerts,
        }
        if self.run.plan is not None:
            out["plan"] = plan_to_dict(self.run.plan, only="delete")
            out["locked"] = locked_on_registry(self.run.plan)
        return out


def locked_on_registry(plan: RegistryPlan) -> list[dict[str, Any]]:
    """The images a plan keeps because the registry refuses to delete them (ACR's
    `deleteEnabled: false`): what a run reports besides its deletions."""
    return [
        {"repository": p.repository, "digest": d.digest, "tags": list(d.tags), "reason": d.reason}
        for p in plan.plans
        for d in p.decisions
        if d.action == "keep" and d.rule == "locked"
    ]


def recheck_in_use(run: RunPlan, registry: Registry, in_use: InUse) -> tuple[RunPlan, list[str]]:
    """For a resumed run: drop every repository whose remaining work now touches an image
    in use (by digest, or by a tag a workload names). The stored plan cannot say what
    else such an image needs (children, referrers), so the repository waits for a new plan.
    """
    if not in_use.refs:
        return run, []
    protections = in_use_protections(
        in_use.refs,
        registry,
        repositories=[w.repository for w in run.work],
        registry_name=run.registry,
    )
    keep = []
    notes: list[str] = []
    for w in run.work:
        prot = protections.get(w.repository)
        hit = None
        if prot is not None:
            for digest, info in w.deletions.items():
                if digest in prot.in_use or prot.in_use_tags.intersection(info.tags):
                    hit = digest
                    break
        if hit is None:
            keep.append(w)
        else:
            notes.append(
                f"{w.repository}: {hit} is in use now; its remaining deletions are skipped "
                "(plan again)"
            )
    return replace(run, work=tuple(keep)), notes


def run_retention(
    runtime: RetentionRuntime,
    *,
    registry: str,
    now: datetime,
    globs: Sequence[str] = (),
    repositories: Sequence[str] | None = None,
    execute: bool = False,
    concurrency: int = 8,
    run_id: str | None = None,
    resume: bool = False,
    max_deletes: int | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    in_use: InUse | None = None,
    on_planned: Callable[[RunPlan], None] | None = None,
) -> RetentionOutcome:
    """Plan (or, with `resume`, load) a run over `registry` and, with `execute`, apply it
    and alert each team. The inventory is read first; if it cannot be read, nothing is
    planned (fail closed). A `run_id` the ledger already holds is resumed, never planned
    again. `on_planned` sees the run before anything is deleted."""
    policy = runtime.policy
    ledger = runtime.ledger
    reg = runtime.registry(registry)
    if run_id is not None and not resume:
        resume = ledger.action(plan_key(run_id)) is not None
    if in_use is None:
        in_use = gather_in_use(policy.inventory, base_dir=policy.base_dir)
    notes: list[str] = []
    if resume:
        if run_id is None:
            raise UsageError("resuming needs the run id (--resume RUN_ID)")
        run = load_run(ledger, run_id)
        if run.registry != registry:
            raise UsageError(
                f"run {run_id} is for registry {run.registry!r}, got --registry {registry!r}"
            )
        run, notes = recheck_in_use(run, reg, in_use)
    else:
        run = plan_run(
            reg,
            policy,
            ledger=ledger,
            now=now,
            repositories=repositories,
            globs=globs,
            in_use=in_use,
            max_deletes=max_deletes,
            run_id=run_id,
            registry_name=registry,
        )
    if not execute:
        return RetentionOutcome(run=run, result=None, notes=tuple(notes))
    if on_planned is not None:
        on_planned(run)
    result = apply(
        run,
        reg,
        ledger,
        concurrency=concurrency,
        progress=progress,
        should_stop=should_stop,
    )
    alerts = team_alerts(result, run, policy, now=now)
    sent = send_alerts(
        alerts, runtime.router(), ledger, run_id=run.run_id, status=result.status, now=now
    )
    return RetentionOutcome(run=run, result=result, alerts=sent, notes=tuple(notes))


# -- fan-out --------------------------------------------------------------------------------


def fan_out(
    registry: Registry,
    policy: Policy,
    *,
    globs: Sequence[str] = (),
    run: str | None = None,
    now: datetime | None = None,
) -> list[dict[str, str]]:
    """One message per repository that has retention rules: `{"registry", "repository",
    "run"}` (`run` names the scheduled run; pass it or `now` to make one)."""
    if run is None:
        if now is None:
            raise UsageError("fan_out needs the run id or now")
        run = new_run_id(now)
    chosen, _ = select_repositories(registry.list_repositories(), policy, globs)
    return [{"registry": registry.host, "repository": r, "run": run} for r in chosen]


def _worker_run_id(run: str, repository: str) -> str:
    """The run id of one repository's share of `run` (at most 64 characters; a long `run`
    is cut, never the repository's tag, so two repositories never share a run id)."""
    tag = hashlib.sha256(repository.encode()).hexdigest()[:10]
    return f"{run[:53]}.{tag}"


def work(
    message: Mapping[str, Any],
    runtime: RetentionRuntime,
    *,
    now: datetime,
    execute: bool = True,
    concurrency: int = 8,
    in_use: InUse | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RetentionOutcome:
    """Plan and apply retention for the one repository a fan-out message names. A message
    whose run was already recorded resumes it (SQS redelivery, a timed-out function).
    `should_stop` is polled before each deletion (e.g. the function's remaining time): once
    it says stop, the apply ends `interrupted` and the same message resumes the run."""
    if not isinstance(message, Mapping):
        raise IntakeError(f"retention message: got {type(message).__name__}, expected an object")
    host = message_field(message, "registry")
    repository = message_field(message, "repository")
    run = message_field(message, "run", required=False)
    assert host is not None and repository is not None
    run_id = _worker_run_id(run, repository) if run else None
    return run_retention(
        runtime,
        registry=host,
        now=now,
        repositories=[repository],
        execute=execute,
        concurrency=concurrency,
        run_id=run_id,
        in_use=in_use,
        should_stop=should_stop,
    )


# -- what every cloud's retention functions share ---------------------------------------------


@dataclass(frozen=True, slots=True)
class FanOut:
    """A scheduled run fanned out: its id and one work message per repository in scope."""

    run: str
    registry: str
    messages: tuple[dict[str, str], ...]
    out_of_scope: int = 0
    """Repositories with rules whose names no prefix of this deployment's scope starts."""

    def bodies(self) -> list[str]:
        """The messages as queued (`work_body` reads one back)."""
        return [message_body(m) for m in self.messages]

    def summary(self, **extra: Any) -> dict[str, Any]:
        """What the fan-out logs and answers, lists cut short (`bounded`)."""
        doc = {
            "run": self.run,
            "registry": self.registry,
            "queued": len(self.messages),
            "out_of_scope": self.out_of_scope,
            "repositories": [m["repository"] for m in self.messages],
            **extra,
        }
        return bounded(doc)  # type: ignore[no-any-return]


def fan_out_scheduled(
    event: object,
    registry: Registry,
    policy: Policy,
    *,
    registry_name: str | None = None,
    prefixes: Sequence[str] = ("",),
    now: datetime,
) -> FanOut:
    """The scheduled fan-out, whatever the queue: the schedule's payload checked
    (`scheduled_run`), the run id every retry of the same schedule repeats, one message
    per repository with retention rules whose name starts with one of `prefixes`."""
    payload = scheduled_run(event)
    name = registry_name or registry.host
    run = scheduled_run_id(payload, name, now=now)
    chosen = fan_out(registry, policy, globs=payload.globs, run=run)
    messages = tuple(m for m in chosen if in_scope(m["repository"], prefixes))
    return FanOut(run, name, messages, len(chosen) - len(messages))


@dataclass(frozen=True, slots=True)
class WorkDone:
    """One work message handled: the message, what retention did, and the error to raise
    so the message is delivered again (None: the message is done)."""

    message: dict[str, str]
    outcome: RetentionOutcome
    failure: RegwardenError | None

    def summary(self, **extra: Any) -> dict[str, Any]:
        """The outcome as the worker logs and answers it, lists cut short (`bounded`)."""
        return bounded({**self.outcome.to_dict(), **extra})  # type: ignore[no-any-return]


def work_body(
    body: str,
    runtime: RetentionRuntime,
    *,
    registry: str,
    prefixes: Sequence[str] = ("",),
    now: datetime,
    execute: bool = True,
    concurrency: int = 8,
    in_use: Callable[[], InUse] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume_delay: int = 60,
    on_message: Callable[[Mapping[str, str]], None] | None = None,
) -> WorkDone:
    """One queued work message, whatever the queue: the body checked (`work_message`:
    this worker's registry, a repository in scope), then `on_message` (e.g. to tag the
    logs), then the inventory read (`in_use`; None: the policy's), then `work`. Raises
    what the message or the inventory got wrong; `failure` is what a deletion phase got
    wrong (`outcome_failure`: `RunInterrupted` returns after `resume_delay` seconds)."""
    message = work_message(body, registry=registry, prefixes=prefixes)
    if on_message is not None:
        on_message(message)
    outcome = work(
        message,
        runtime,
        now=now,
        execute=execute,
        concurrency=concurrency,
        in_use=in_use() if in_use is not None else None,
        should_stop=should_stop,
    )
    return WorkDone(message, outcome, outcome_failure(outcome, resume_delay=resume_delay))


def inventory_with(inventory: Inventory, **defaults: BaseModel) -> Inventory:
    """`inventory` with each section of `defaults` the policy does not set, e.g. a
    function's own platform: `inventory_with(policy.inventory, aws=AwsInventory())`."""
    unset = {
        name: section for name, section in defaults.items() if getattr(inventory, name) is None
    }
    return inventory.model_copy(update=unset) if unset else inventory


def deadline_guard(
    deadline: float, *, margin_s: float, clock: Callable[[], float] = time.monotonic
) -> Callable[[], bool]:
    """`should_stop` for a function with a time limit: True once less than `margin_s`
    seconds are left before `deadline` (on `clock`'s scale)."""
    return lambda: deadline - clock() < margin_s
