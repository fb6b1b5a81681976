"""`regwarden retention plan | apply` and `regwarden invoke retention`.

Parse flags, call `regwarden.retention.run_retention`, render. Exit codes: 0 done (or
nothing to delete), 1 a guard rail tripped or `apply` without `--yes` found deletions to
make, 2 usage or configuration, 3 registry or inventory unreachable or deletions failed,
130 interrupted (resume with `--resume RUN_ID --yes`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import typer

from ..errors import IntakeError, UsageError
from ..nesting import loads_json
from ..retention import RetentionOutcome, RetentionRuntime, RunPlan
from ._render import human_size, print_json

__all__ = ["run_apply", "run_invoke_retention", "run_plan"]


def _now() -> datetime:
    return datetime.now(UTC)


def _need_registry(registry: str | None, where: str) -> str:
    if not registry:
        raise UsageError(
            f"{where} needs the registry host: the policy names repositories, not registries",
            hint="pass --registry HOST (or set REGWARDEN_REGISTRY), e.g. --registry 127.0.0.1:5000",
        )
    host = registry.strip()
    if "/" in host or not host:
        raise UsageError(f"--registry: got {registry!r}, expected a host[:port] without a path")
    return host


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _print_plan(outcome: RetentionOutcome, output: str, *, only: str = "all") -> None:
    from rich.console import Console

    from ..retention import plan_markdown, plan_table, plan_to_dict

    run = outcome.run
    plan = run.plan
    if plan is None:  # a resumed run: its plan is the stored work
        print(f"run {run.run_id}: {run.deletions} deletions recorded in {len(run.work)} repos")
        return
    if output == "json":
        doc = plan_to_dict(plan, only="delete" if only == "delete" else "all")
        doc["timings"] = {
            "listing_s": round(run.listing_s, 3),
            "record_construction_s": round(run.build_s, 3),
            "planning_s": round(run.planning_s, 3),
        }
        doc["in_use"] = dict(run.in_use)
        print_json(doc)
        return
    if output == "markdown":
        print(plan_markdown(plan, only="delete" if only == "delete" else "all"))
        return
    Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200).print(
        plan_table(plan, only="delete" if only == "delete" else "all")
    )
    for p in plan.plans:
        print(
            f"{p.repository}: {p.images_deleted} to delete ({human_size(p.bytes_freed)}), "
            f"{p.images_kept} kept" + (" — TRIPPED" if p.tripped else "")
        )
    print(
        f"total: {plan.images_deleted} to delete ({human_size(plan.bytes_freed)}), "
        f"{plan.images_kept} kept in {len(plan.plans)} repositories"
        + (f"; {len(plan.skipped)} without retention rules" if plan.skipped else "")
    )
    if run.in_use:
        sources = ", ".join(f"{k} ({v})" for k, v in run.in_use.items())
        print(f"in use: {sources}")


def _trip_messages(outcome: RetentionOutcome) -> list[str]:
    plan = outcome.run.plan
    if plan is None:
        return []
    out = [f"{p.repository}: {p.trip.message}" for p in plan.plans if p.trip is not None]
    if plan.trip is not None:
        out.insert(0, plan.trip.message)
    return out


class _CliRuntime(RetentionRuntime, Protocol):
    def close(self) -> None: ...


def _runtime(policy: Path, ledger: str, insecure: bool) -> _CliRuntime:
    from ..runtime import load_runtime

    return load_runtime(policy, ledger=ledger, insecure=insecure)


def run_plan(
    *,
    policy: Path,
    registry: str | None,
    repositories: Sequence[str],
    output: str,
    ledger: str,
    insecure: bool,
    max_deletes: int | None,
) -> None:
    """Print the plan; never deletes. Exit 1 if a guard rail trips."""
    from ..retention import run_retention

    host = _need_registry(registry, "retention plan")
    runtime = _runtime(policy, ledger, insecure)
    try:
        outcome = run_retention(
            runtime,
            registry=host,
            now=_now(),
            globs=repositories,
            execute=False,
            max_deletes=max_deletes,
        )
    finally:
        runtime.close()
    _print_plan(outcome, output)
    for message in _trip_messages(outcome):
        _err(f"guard rail: {message}")
    raise typer.Exit(1 if outcome.run.tripped else 0)


def _print_result(outcome: RetentionOutcome, output: str) -> None:
    result = outcome.result
    if output == "json":
        print_json(outcome.to_dict())
        return
    if result is None:
        return
    line = (
        f"run {result.run_id}: {result.status}; deleted {result.deleted + result.gone} of "
        f"{result.planned} ({human_size(result.bytes_freed)})"
    )
    if result.resumed:
        line += f", {result.resumed} done by an earlier apply"
    if result.failures:
        line += f", {len(result.failures)} failed"
    line += f" in {result.seconds:.1f}s with {result.requests} delete requests"
    if result.throttles:
        line += (
            f"; throttled {result.throttles}x (concurrency {result.concurrency} → "
            f"{result.lowest_concurrency} at lowest)"
        )
    print(line)
    for f in result.failures[:20]:
        print(f"  failed: {f.repository}@{f.digest}: {f.error}")
    for note in (*outcome.notes, *result.notes):
        print(f"  note: {note}")
    if outcome.alerts:
        print(f"  alerts sent: {outcome.alerts}")


def run_apply(
    *,
    policy: Path,
    registry: str | None,
    repositories: Sequence[str],
    output: str,
    ledger: str,
    insecure: bool,
    yes: bool,
    concurrency: int,
    resume: str | None,
    max_deletes: int | None,
) -> None:
    """Without --yes: print what would be deleted and exit 1 (new policies start in dry
    run). With --yes: apply, within guard rails; a tripped plan deletes nothing (exit 1)."""
    from ..retention import progress_for, run_retention

    host = _need_registry(registry, "retention apply")
    if concurrency < 1:
        raise UsageError(f"--concurrency: got {concurrency}, expected 1 or more")
    if resume and repositories:
        raise UsageError("--resume continues a recorded run: --repository cannot change it")
    runtime = _runtime(policy, ledger, insecure)

    def announce(run: RunPlan) -> None:
        if output != "json":
            _err(
                f"run {run.run_id}: {run.deletions} deletions in {len(run.work)} repositories"
                f" ({human_size(run.bytes)}); resume with --resume {run.run_id} --yes"
            )

    try:
        if not yes:
            outcome = run_retention(
                runtime,
                registry=host,
                now=_now(),
                globs=repositories,
                execute=False,
                run_id=resume,
                resume=resume is not None,
                max_deletes=max_deletes,
            )
        else:
            outcome = run_retention(
                runtime,
                registry=host,
                now=_now(),
                globs=repositories,
                execute=True,
                concurrency=concurrency,
                run_id=resume,
                resume=resume is not None,
                max_deletes=max_deletes,
                progress=progress_for(sys.stderr) if output != "json" else None,
                on_planned=announce,
            )
    finally:
        runtime.close()
    trips = _trip_messages(outcome)
    if not yes:
        _print_plan(outcome, output, only="delete")
        for message in trips:
            _err(f"guard rail: {message}")
        run = outcome.run
        if run.tripped:
            _err("a guard rail tripped: nothing would be deleted (exit 1)")
        elif run.deletions:
            _err(
                f"dry run: {run.deletions} images ({human_size(run.bytes)}) would be deleted "
                f"in {len(run.work)} repositories; nothing was deleted. Re-run with --yes "
                "to delete them."
            )
        else:
            _err("dry run: nothing to delete")
        raise typer.Exit(outcome.exit_code)
    for message in trips:
        _err(f"guard rail: {message}; nothing was deleted")
    _print_result(outcome, output)
    raise typer.Exit(outcome.exit_code)


_EVENT_KEYS = ("registry", "repository", "run", "apply", "globs", "scheduledTime")


def _read_event(event_file: Path) -> dict[str, Any]:
    """The event as a dict: a work message or a schedule's payload, as JSON or inside a
    Pub/Sub delivery (the GCP functions' `regwarden-retention-*` topics)."""
    from ..intake.pubsub import decode_file, is_pubsub_delivery

    try:
        raw = event_file.read_bytes()
        doc = loads_json(raw)  # nesting bounded: no RecursionError
        if is_pubsub_delivery(doc):
            doc = loads_json(decode_file(raw).data)
    except OSError as exc:
        raise UsageError(f"cannot read {event_file}: {exc.strerror}") from None
    except ValueError as exc:  # TooDeep names the nesting limit
        raise IntakeError(f"{event_file}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise IntakeError(
            f"{event_file}: got {type(doc).__name__}, expected an object "
            '{"registry": HOST, "repository": GLOB}'
        )
    unknown = sorted(set(doc) - set(_EVENT_KEYS))
    if unknown:
        raise IntakeError(
            f"{event_file}: unknown key(s) {', '.join(unknown)}; valid: " + ", ".join(_EVENT_KEYS)
        )
    return doc


def run_invoke_retention(
    event_file: Path | None,
    *,
    policy: Path,
    registry: str | None,
    yes: bool,
    output: str,
    ledger: str,
    insecure: bool,
    concurrency: int = 8,
) -> None:
    """The retention function, in-process: `{"registry", "repository", "apply"}` from the
    event (or `--registry`, every repository), or a schedule's payload `{"globs", "run",
    "scheduledTime"}` (the fan-out's tick: every repository its globs match, on
    `--registry`). Without `apply: true` or `--yes` it reports the plan and exits 0 (the
    function's dry-run mode); applying, exit codes as `apply`."""
    from ..retention import run_retention, scheduled_run, scheduled_run_id

    event: dict[str, Any] = _read_event(event_file) if event_file is not None else {}
    host = event.get("registry") or registry
    if not isinstance(host, str):
        raise IntakeError(f"event registry: got {host!r}, expected a host string")
    host = _need_registry(host, "invoke retention")
    glob = event.get("repository", "**")
    if not isinstance(glob, str) or not glob:
        raise IntakeError(f"event repository: got {glob!r}, expected a repository glob")
    globs = [glob]
    execute = yes or event.get("apply") is True
    run = event.get("run")
    if "globs" in event or "scheduledTime" in event:  # a schedule's tick
        payload = scheduled_run(
            {k: event[k] for k in ("globs", "run", "scheduledTime") if k in event}
        )
        globs = list(payload.globs) or globs
        run = scheduled_run_id(payload, host, now=_now())
    runtime = _runtime(policy, ledger, insecure)
    try:
        outcome = run_retention(
            runtime,
            registry=host,
            now=_now(),
            globs=globs,
            execute=execute,
            concurrency=concurrency,
            run_id=run if isinstance(run, str) else None,
        )
    finally:
        runtime.close()
    if output == "json":
        print_json(outcome.to_dict())
    else:
        r = outcome.run
        print(
            f"retention: {r.registry} {', '.join(globs)}: {r.deletions} deletions planned "
            f"({human_size(r.bytes)}){' (dry run)' if not execute else ''}"
        )
        for message in _trip_messages(outcome):
            print(f"  guard rail: {message}")
        _print_result(outcome, output)
    raise typer.Exit(outcome.exit_code if execute else (1 if outcome.run.tripped else 0))
