"""One retention run over one registry: list, protect, plan, and the work the executor does.

    run = plan_run(registry, policy, ledger=ledger, now=now, in_use=gather_in_use(...))
    print(plan_table(run.plan))
    save_run(ledger, run, now=now)          # before the first deletion
    result = apply(run, registry, ledger)   # see _execute.py

`RunPlan.work` is what `apply` needs and what the ledger keeps for a resumed run: per
repository, the digests to delete in phases (everything in a phase can go in parallel;
a phase starts when the previous one is done, so referrers go before their subject and an
index before its children), and a short note per digest for the audit trail.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import UsageError
from ...quarantine_names import is_destination, sources_of
from ..planning import (
    NO_PROTECTIONS,
    ImageRecord,
    Protections,
    RegistryPlan,
    RepositoryPlan,
    RetentionRules,
    cosign_subject,
    plan_registry,
    retention_rules,
)
from ._collect import Collected, TimesLedger, collect_records
from ._inventory import InUse, in_use_protections
from ._verdicts import VERDICT_ACTION_KIND, superseded_verdicts

if TYPE_CHECKING:
    from ...policy import Policy
    from ...providers import Registry
    from ...store import ActionRecord, QuarantineRecord

__all__ = [
    "Deletion",
    "RepositoryWork",
    "RunLedger",
    "RunPlan",
    "load_run",
    "new_run_id",
    "plan_key",
    "plan_run",
    "quarantine_protections",
    "save_run",
    "select_repositories",
    "work_from_plan",
]

PLAN_KIND = "retention-plan"
RUN_KIND = "retention-run"
_FORMAT = 1
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class RunLedger(TimesLedger, Protocol):
    """The ledger methods a retention run uses (SqliteLedger and DynamoLedger have them)."""

    def begin_action(
        self,
        key: str,
        *,
        registry: str,
        repository: str,
        digest: str,
        kind: str,
        reason: str,
        state: dict[str, Any],
        now: datetime,
    ) -> ActionRecord: ...

    def finish_action(
        self, key: str, *, status: str, state: dict[str, Any] | None = None
    ) -> None: ...

    def action(self, key: str) -> ActionRecord | None: ...

    def actions(self, *, status: str | None = None) -> list[ActionRecord]: ...

    def record_push(
        self, registry: str, repository: str, digest: str, tags: tuple[str, ...], *, now: datetime
    ) -> datetime: ...

    def quarantined(
        self, registry: str, repository: str, digest: str
    ) -> QuarantineRecord | None: ...

    def seen_delivery(self, delivery_id: str, *, now: datetime, ttl: timedelta) -> bool: ...


@dataclass(frozen=True, slots=True)
class Deletion:
    """What the audit trail says about one digest to delete."""

    tags: tuple[str, ...]
    size: int
    rule: str
    reason: str
    anchor: float | None = None
    """The age the plan judged it by (epoch seconds): its own, or for a platform image or
    subject of unknown age, the deleted manifest's that points at it. None: unknown."""


@dataclass(frozen=True, slots=True)
class RepositoryWork:
    """The deletions of one repository, in phases."""

    repository: str
    phases: tuple[tuple[str, ...], ...]
    deletions: Mapping[str, Deletion] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(p) for p in self.phases)

    @property
    def bytes(self) -> int:
        return sum(d.size for d in self.deletions.values())


@dataclass(frozen=True, slots=True)
class RunPlan:
    """A planned run: the full plan (None when loaded back from the ledger), the work,
    and what it took to make."""

    run_id: str
    registry: str
    created: datetime
    work: tuple[RepositoryWork, ...]
    plan: RegistryPlan | None = None
    tripped: bool = False
    """The plan tripped a guard rail: `work` is empty and nothing may be deleted."""
    listing_s: float = 0.0
    build_s: float = 0.0
    planning_s: float = 0.0
    in_use: Mapping[str, int] = field(default_factory=dict)

    @property
    def deletions(self) -> int:
        return sum(w.count for w in self.work)

    @property
    def bytes(self) -> int:
        return sum(w.bytes for w in self.work)


def new_run_id(now: datetime) -> str:
    """`20261127T120000Z-3f2a9c`: sortable by time, unique enough to name a run."""
    return f"{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def _check_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(
            f"run id: got {run_id!r}, expected letters, digits, '.', '_' or '-' "
            "(at most 64), e.g. 20261127T120000Z-3f2a9c"
        )
    return run_id


# -- choosing repositories -----------------------------------------------------------------------


def select_repositories(
    names: Iterable[str], policy: Policy, globs: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """(repositories to plan, repositories skipped because no retention applies), sorted.
    With `globs`, only repositories matching one of them are considered."""
    from ...policy import Glob

    try:
        compiled = [Glob.compile(g) for g in globs]
    except ValueError as exc:
        raise UsageError(f"--repository: {exc}") from None
    chosen: list[str] = []
    skipped: list[str] = []
    for name in sorted(set(names)):
        if compiled and not any(g.matches(name) for g in compiled):
            continue
        if policy.for_repository(name).retention is None:
            skipped.append(name)
        else:
            chosen.append(name)
    return chosen, skipped


# -- protections from the ledger: quarantine -------------------------------------------------------


def quarantine_protections(
    repository: str,
    records: Sequence[ImageRecord],
    policy: Policy,
    ledger: RunLedger,
    *,
    registry_name: str,
) -> Protections:
    """Images held by quarantine in `repository`.

    In a `move` quarantine repository everything is quarantined: since when comes from the
    ledger (unknown: never expires); an image the ledger shows as released is not held.
    In a repository quarantined by `retag` or `lock`, the ledger names the held digests.
    """
    quarantined: dict[str, float | None] = {}
    templates = policy.quarantine_templates()
    if is_destination(repository, templates):
        sources = sources_of(repository, templates)
        for r in records:
            since: float | None = None
            released = False
            for source in sources:
                rec = ledger.quarantined(registry_name, source, r.digest)
                if rec is not None and rec.location == repository:
                    released = rec.released_at is not None
                    since = rec.quarantined_at.timestamp()
                    break
            if not released:
                quarantined[r.digest] = since
        return Protections(quarantined=quarantined)
    strategy = policy.for_repository(repository).quarantine.strategy
    if strategy in ("retag", "lock"):
        for r in records:
            rec = ledger.quarantined(registry_name, repository, r.digest)
            if rec is not None and rec.released_at is None and rec.location == repository:
                quarantined[r.digest] = rec.quarantined_at.timestamp()
    return Protections(quarantined=quarantined) if quarantined else NO_PROTECTIONS


# -- work from a plan ------------------------------------------------------------------------


def work_from_plan(plan: RepositoryPlan, records: Iterable[ImageRecord]) -> RepositoryWork:
    """Split `plan.delete_order` into phases: a digest's phase is one more than the latest
    phase of any deleted manifest that points at it (as index child or referrer subject)."""
    if not plan.delete_order:
        return RepositoryWork(plan.repository, ())
    doomed = set(plan.delete_order)
    pointers: dict[str, list[str]] = {}  # digest → deleted manifests pointing at it
    for r in records:
        if r.digest not in doomed:
            continue
        targets = [c for c in r.children if c in doomed and c != r.digest]
        subject = r.subject or cosign_subject(r.tags)
        if subject is not None and subject in doomed and subject != r.digest:
            targets.append(subject)
        for t in targets:
            pointers.setdefault(t, []).append(r.digest)
    phase: dict[str, int] = {}
    for d in plan.delete_order:  # topological: pointers come first
        phase[d] = 1 + max((phase.get(p, -1) for p in pointers.get(d, ())), default=-1)
    phases: list[list[str]] = [[] for _ in range(max(phase.values()) + 1)]
    for d in plan.delete_order:
        phases[phase[d]].append(d)
    times = {d.digest: d.time for d in plan.decisions}

    def anchor(digest: str) -> float | None:
        own = times.get(digest)
        if own is not None:
            return own
        known = [t for p in pointers.get(digest, ()) if (t := times.get(p)) is not None]
        return min(known) if known else None

    deletions = {
        d.digest: Deletion(d.tags, d.size, d.rule, d.reason, anchor(d.digest))
        for d in plan.decisions
        if d.action == "delete"
    }
    return RepositoryWork(plan.repository, tuple(tuple(p) for p in phases), deletions)


# -- planning a run --------------------------------------------------------------------------


def plan_run(
    registry: Registry,
    policy: Policy,
    *,
    ledger: RunLedger | None,
    now: datetime,
    repositories: Sequence[str] | None = None,
    globs: Sequence[str] = (),
    in_use: InUse | None = None,
    max_deletes: int | None = None,
    run_id: str | None = None,
    registry_name: str | None = None,
    concurrency: int = 4,
    rules_for: Callable[[str], RetentionRules | None] | None = None,
) -> RunPlan:
    """List, protect and plan every repository with retention rules (or `repositories`).

    `in_use` comes from `gather_in_use` (the caller reads the inventory once per run).
    Repositories are listed `concurrency` at a time. `max_deletes` caps the whole run.
    """
    import time

    name = registry_name or registry.host
    if repositories is None:
        repositories, _ = select_repositories(registry.list_repositories(), policy, globs)
    rules_for = rules_for or (lambda repo: retention_rules(policy.for_repository(repo)))
    rules = {repo: rules_for(repo) for repo in repositories}
    planned = [repo for repo in repositories if rules[repo] is not None]

    def collect(repo: str) -> Collected:
        return collect_records(registry, repo, ledger=ledger, registry_name=name)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        collected = {c.repository: c for c in pool.map(collect, planned)}

    protections: dict[str, Protections] = {}
    if in_use is not None and in_use.refs:
        protections = in_use_protections(
            in_use.refs, registry, repositories=planned, registry_name=name
        )
    for repo in planned:
        if collected[repo].locked:
            locked = Protections(locked=collected[repo].locked)
            protections[repo] = protections.get(repo, NO_PROTECTIONS).merge(locked)
    if ledger is not None:
        for repo in planned:
            held = quarantine_protections(
                repo, collected[repo].records, policy, ledger, registry_name=name
            )
            if held:
                protections[repo] = protections.get(repo, NO_PROTECTIONS).merge(held)

    # Verdict attestations a newer one replaced: orphans, not followers of their image. Read
    # only where a planned repository's policy attests verdicts, and by key — each listed
    # image's own `verdict-attestation:` record — never by listing every action (a
    # whole-table Scan on DynamoDB, which no retention role is granted).
    superseded: dict[str, frozenset[str]] = {}
    attesting = [repo for repo in planned if policy.for_repository(repo).attest is not None]
    if ledger is not None and attesting:
        run_ledger = ledger

        def verdict_actions(repo: str) -> list[ActionRecord]:
            keys = (
                f"{VERDICT_ACTION_KIND}:{name}/{repo}@{r.digest}"
                for r in collected[repo].records
                if r.subject is None  # a referrer is no image with a verdict of its own
            )
            return [a for a in map(run_ledger.action, keys) if a is not None]

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            found = [a for actions in pool.map(verdict_actions, attesting) for a in actions]
        superseded = superseded_verdicts(found, registry=name)

    t0 = time.perf_counter()
    plan = plan_registry(
        {repo: collected[repo].records for repo in planned},
        lambda repo: rules[repo],
        now=now,
        protections=protections,
        max_deletes=max_deletes,
        superseded=superseded,
        pull_tracking={repo: collected[repo].pull_tracking for repo in planned},
    )
    planning_s = time.perf_counter() - t0
    plans = tuple(
        replace(p, warnings=collected[p.repository].warnings + p.warnings) for p in plan.plans
    )
    skipped = tuple(sorted(set(repositories) - set(planned)))
    plan = RegistryPlan(plans=plans, skipped=skipped + plan.skipped, trip=plan.trip)
    tripped = plan.tripped
    work: tuple[RepositoryWork, ...] = ()
    if not tripped:
        work = tuple(
            work_from_plan(p, collected[p.repository].records) for p in plan.plans if p.delete_order
        )
    return RunPlan(
        run_id=_check_run_id(run_id) if run_id else new_run_id(now),
        registry=name,
        created=now,
        work=work,
        plan=plan,
        tripped=tripped,
        listing_s=sum(c.listing_s for c in collected.values()),
        build_s=sum(c.build_s for c in collected.values()),
        planning_s=planning_s,
        in_use=dict(in_use.sources) if in_use is not None else {},
    )


# -- persistence: the plan of a run, kept in the ledger so an apply can resume -------------


def plan_key(run_id: str) -> str:
    return f"{PLAN_KIND}:{run_id}"


def save_run(ledger: RunLedger, run: RunPlan, *, now: datetime) -> bool:
    """Record the run's work in the ledger before anything is deleted. Returns False if the
    run id was already recorded (a resumed run keeps its original plan)."""
    state: dict[str, Any] = {
        "format": _FORMAT,
        "registry": run.registry,
        "created": run.created.isoformat(),
        "tripped": run.tripped,
        "repositories": [
            {
                "repository": w.repository,
                "phases": [list(p) for p in w.phases],
                "deletions": {
                    d: [list(x.tags), x.size, x.rule, x.reason, x.anchor]
                    for d, x in w.deletions.items()
                },
            }
            for w in run.work
        ],
    }
    existing = ledger.action(plan_key(run.run_id))
    if existing is not None:
        return False
    ledger.begin_action(
        plan_key(run.run_id),
        registry=run.registry,
        repository="*",
        digest="",
        kind=PLAN_KIND,
        reason=f"{run.deletions} deletions in {len(run.work)} repositories",
        state=state,
        now=now,
    )
    ledger.finish_action(plan_key(run.run_id), status="planned")
    return True


def load_run(ledger: RunLedger, run_id: str) -> RunPlan:
    """The run recorded under `run_id` (its plan as it was, without re-planning)."""
    record = ledger.action(plan_key(_check_run_id(run_id)))
    if record is None or record.kind != PLAN_KIND:
        raise UsageError(
            f"no retention run {run_id!r} in the ledger",
            hint="give the run id an earlier 'retention apply' printed, with the same --ledger",
        )
    state = record.state
    if state.get("format") != _FORMAT:
        raise UsageError(
            f"retention run {run_id!r}: got plan format {state.get('format')!r}, expected {_FORMAT}"
        )
    work = tuple(
        RepositoryWork(
            repository=str(item["repository"]),
            phases=tuple(tuple(str(d) for d in p) for p in item["phases"]),
            deletions={
                # a plan saved before anchors were kept has four fields
                str(d): Deletion(tuple(v[0]), int(v[1]), str(v[2]), str(v[3]), _anchor(v[4:5]))
                for d, v in item["deletions"].items()
            },
        )
        for item in state.get("repositories") or ()
    )
    return RunPlan(
        run_id=run_id,
        registry=str(state["registry"]),
        created=datetime.fromisoformat(str(state["created"])),
        work=work,
        tripped=bool(state.get("tripped")),
    )


def _anchor(saved: list[Any]) -> float | None:
    return float(saved[0]) if saved and saved[0] is not None else None
