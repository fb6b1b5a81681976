"""`regwarden report`: read the registry and the ledger, summarise, write one offline HTML
file (or JSON with the same data), and keep the summary in the ledger for the next
report's trends. Exit codes: 0 written, 2 usage or configuration, 3 registry or ledger
unreachable."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ._render import print_json, to_jsonable

__all__ = ["run_report"]


def _now() -> datetime:
    return datetime.now(UTC)


def _plan_summary(runtime: Any, host: str, globs: Sequence[str], now: datetime) -> Any:
    """What the policy's retention would delete now: a plan, never applied."""
    from ..report import RetentionPlanSummary
    from ..retention import run_retention

    outcome = run_retention(runtime, registry=host, now=now, globs=globs, execute=False)
    plan = outcome.run.plan
    if plan is None:
        return None
    return RetentionPlanSummary(
        images_deleted=plan.images_deleted,
        bytes_freed=plan.bytes_freed,
        images_kept=plan.images_kept,
        repositories=len(plan.plans),
        tripped=plan.tripped,
    )


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich bar on stderr over the repositories read, only on a terminal and never with
    --output json (whose stdout a script reads, and whose stderr a log keeps)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    task = bar.add_task("reading repositories", total=None)

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield advance


def run_report(
    *,
    registry: str | None,
    repositories: Sequence[str],
    policy: Path | None,
    ledger: str,
    insecure: bool,
    top: int,
    stale_days: int,
    out: Path | None,
    output: str,
    record: bool = True,
) -> None:
    from ..report import collect, record_report, registry_pull_times, render_html, summarise

    if not registry or "/" in registry.strip():
        raise UsageError(
            f"--registry: got {registry!r}, expected a host[:port] without a path",
            hint="e.g. --registry 127.0.0.1:5000 (or set REGWARDEN_REGISTRY)",
        )
    if top < 1 or stale_days < 1:
        raise UsageError(f"--top and --stale-days: got {top} and {stale_days}, expected >= 1")
    if output == "html" and out is None:
        raise UsageError("the HTML report needs --out FILE", hint="or use --output json")
    host = registry.strip()
    now = _now()
    runtime: Any = None
    plan = None
    notes: list[str] = []
    if policy is not None:
        from ..runtime import load_runtime

        runtime = load_runtime(policy, ledger=ledger, insecure=insecure)
        the_ledger: Any = runtime.ledger
        provider = runtime.registry(host)
        policy_model = runtime.policy
    else:
        from ..providers import ProviderOptions, open_registry
        from ..store import open_ledger

        the_ledger = open_ledger(ledger)
        provider = open_registry(host, ProviderOptions(insecure=insecure))
        policy_model = None
    try:
        if runtime is not None:
            try:
                plan = _plan_summary(runtime, host, repositories, now)
            except Exception as exc:  # the rest of the report stands without the plan
                notes.append(f"retention plan not made: {exc}")
        else:
            notes.append("no --policy: teams unknown ('-'), no retention plan, no maxScanAge")
        with _progress(output != "json" and sys.stderr.isatty()) as progress:
            inventory = collect(
                provider.data_plane(),
                the_ledger,
                registry=host,
                globs=repositories,
                repositories=provider.list_repositories(),
                policy=policy_model,
                retention_plan=plan,
                progress=progress,
                registry_pull_times=registry_pull_times(provider),
            )
        inventory = inventory.model_copy(update={"notes": (*inventory.notes, *notes)})
        report = summarise(inventory, now=now, top=top, stale_days=stale_days)
        if record:
            record_report(the_ledger, report.summary(), now=now)
    finally:
        if runtime is not None:
            runtime.close()
        else:
            provider.close()
            the_ledger.close()
    if output == "json":
        if out is None:
            print_json(report)
        else:
            import json

            out.write_text(json.dumps(to_jsonable(report), indent=2) + "\n", encoding="utf-8")
        return
    assert out is not None
    out.write_text(render_html(report), encoding="utf-8")
    print(
        f"report: {report.images} images in {report.repositories} repositories written to {out}",
        file=sys.stderr,
    )
