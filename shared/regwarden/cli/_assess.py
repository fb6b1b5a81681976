"""`regwarden assess HOST/REPOSITORY-GLOB`: what `enforce` would do to the images already in
a registry, before a platform team switches a policy from `audit` to `enforce`.

Every image (not its signatures, attestations or an index's platform manifests) in the
matching repositories is judged as `regwarden check` judges one (`Pipeline.assess`: the
gate's own evidence gathering and checks, no action), several at a time. Nothing is
written anywhere: the pipeline runs on an in-memory ledger, so no ledger is created or
changed, and with no history a grace period or scan timeout counts from the registry's
push time where it keeps one, else as run out (the answer is definite). Only the registry
named is contacted. A check that fails is counted as a quarantine whatever the policy's
`mode`: that is what `enforce` would do.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import NotFound, RegistryError, UsageError
from ..model import CheckOutcome, Verdict
from ._render import print_json

if TYPE_CHECKING:
    from ..pipeline import Pipeline
    from ..providers import ListedImage, Registry

__all__ = ["WOULD", "run_assess", "would"]

WOULD = ("pass", "warn", "quarantine", "pending", "error")
"""What enforce would do with an image, in the order the summary shows."""
TOP_REASONS = 3


def would(verdict: Verdict) -> str:
    """The verdict as `evaluate` decides it in `enforce` mode: an error outranks a failure,
    a failure outranks waiting, waiting outranks a warning."""
    outcomes = {c.outcome for c in verdict.checks}
    for outcome, word in (
        (CheckOutcome.ERROR, "error"),
        (CheckOutcome.FAIL, "quarantine"),
        (CheckOutcome.PENDING, "pending"),
        (CheckOutcome.WARN, "warn"),
    ):
        if outcome in outcomes:
            return word
    return "pass"


def _reasons(verdict: Verdict, word: str) -> list[str]:
    wanted = {
        "quarantine": CheckOutcome.FAIL,
        "error": CheckOutcome.ERROR,
        "pending": CheckOutcome.PENDING,
        "warn": CheckOutcome.WARN,
    }.get(word)
    return [f"{c.name}: {c.reason}" for c in verdict.checks if c.outcome is wanted]


@dataclass
class _Team:
    images: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


def _split_target(target: str) -> tuple[str, str]:
    from ..intake import parse_host
    from ..policy import Glob

    if "://" in target:
        parse_host(target, what="assess target")  # refuses the scheme, naming the host
    host, _, pattern = target.partition("/")
    host = parse_host(host, what="assess target's host")
    pattern = pattern or "**"
    try:
        Glob.compile(pattern)
    except ValueError as exc:
        raise UsageError(
            f"assess: {exc}", hint="HOST/REPOSITORY-GLOB, e.g. 127.0.0.1:5000/payments/**"
        ) from None
    return host, pattern


def _images_of(registry: Registry, repository: str) -> list[ListedImage]:
    """The images a push gate would judge: no signature, attestation, SBOM or referrers
    index, and no platform manifest of an index listed beside it (judged with the index)."""
    from ._images import is_artifact

    listed = [r for r in registry.list_images(repository) if not is_artifact(r)]
    children = {c for r in listed for c in r.children}
    return [r for r in listed if r.digest not in children]


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int | None, int], None]]:
    """`advance(total, done)`: a rich progress bar on stderr, or nothing."""
    if not enabled:
        yield lambda total, done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("judging", total=None)
        lock = threading.Lock()

        def advance(total: int | None, done: int) -> None:
            with lock:
                if total is not None:
                    bar.update(task, total=total)
                bar.advance(task, done)

        yield advance


def run_assess(target: str, *, policy: Path, concurrency: int, insecure: bool, output: str) -> None:
    from ..intake import allowed_host_set
    from ..policy import Glob, ensure_supported, load_policy
    from ..quarantine_names import is_destination
    from ..reference import ImageRef
    from ..runtime import Runtime
    from ..store import SqliteLedger

    if concurrency < 1:
        raise UsageError(f"--concurrency: got {concurrency}, expected 1 or more")
    host, pattern = _split_target(target)
    glob = Glob.compile(pattern)
    loaded = load_policy(policy)
    ensure_supported(loaded)
    ledger = SqliteLedger(":memory:")  # nothing is recorded: see the module docstring
    runtime = Runtime(
        loaded, ledger=ledger, insecure=insecure, allowed_hosts=allowed_host_set([host])
    )
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    uncovered: list[str] = []
    show = output != "json" and sys.stderr.isatty()
    try:
        registry = runtime.registry(host)
        pipeline = runtime.pipeline(alerts=False)
        templates = runtime.quarantine_templates()
        repositories = sorted(
            r
            for r in registry.list_repositories()
            if glob.matches(r) and not is_destination(r, templates)
        )
        with _progress(show) as advance, ThreadPoolExecutor(concurrency) as pool:
            work: list[tuple[str, ListedImage]] = []
            for repo in repositories:
                if runtime.rules_for(repo) is None:
                    uncovered.append(repo)
                    continue
                found = [(repo, i) for i in _images_of(registry, repo)]
                work += found
                advance(len(work), 0)

            def judge(item: tuple[str, ListedImage]) -> dict[str, Any]:
                repo, listed = item
                image = ImageRef(registry=host, repository=repo, digest=listed.digest)
                try:
                    return _row(pipeline, image, listed, now=now)
                finally:
                    advance(None, 1)

            rows = list(pool.map(judge, work))
    finally:
        runtime.close()
        ledger.close()
    summary = _summary(host, pattern, repositories, uncovered, rows)
    if output == "json":
        print_json(summary)
    else:
        _print_summary(summary)
    raise typer.Exit(0)


def _row(pipeline: Pipeline, image: Any, listed: ListedImage, *, now: datetime) -> dict[str, Any]:
    base = {"image": str(image), "tags": list(listed.tags)}
    try:
        verdict = pipeline.assess(image, now=now)
    except NotFound as exc:  # deleted while we looked, or out of the policy's reach
        return base | {"team": None, "would": "gone", "verdict": None, "reasons": [exc.message]}
    except RegistryError as exc:  # this image could not be judged; the others still are
        return base | {"team": None, "would": "error", "verdict": None, "reasons": [exc.message]}
    word = would(verdict)
    return base | {
        "team": verdict.team,
        "would": word,
        "verdict": verdict.outcome.value,
        "mode": verdict.mode,
        "reasons": _reasons(verdict, word),
    }


def _summary(
    host: str,
    pattern: str,
    repositories: list[str],
    uncovered: list[str],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    teams: dict[str, _Team] = {}
    gone = 0
    for row in rows:
        if row["would"] == "gone":
            gone += 1
            continue
        team = teams.setdefault(row["team"] or "-", _Team())
        team.images += 1
        team.counts[row["would"]] += 1
        if row["would"] == "quarantine":
            team.reasons.update(row["reasons"])
    per_team: list[dict[str, Any]] = [
        {
            "team": None if name == "-" else name,
            "images": t.images,
            **{w: t.counts[w] for w in WOULD},
            "topReasons": [
                {"reason": reason, "images": n} for reason, n in t.reasons.most_common(TOP_REASONS)
            ],
        }
        for name, t in sorted(teams.items())
    ]
    totals = {w: sum(t[w] for t in per_team) for w in WOULD}
    return {
        "registry": host,
        "repositories": pattern,
        "repositoriesMatched": len(repositories),
        "repositoriesWithoutPolicy": uncovered,
        "judged": sum(t["images"] for t in per_team),
        "gone": gone,
        "totals": totals,
        "teams": per_team,
        "images": rows,
    }


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    table = Table(
        title=f"what enforce would do on {summary['registry']}/{summary['repositories']}",
        title_justify="left",
        show_edge=False,
    )
    table.add_column("TEAM")
    table.add_column("IMAGES", justify="right")
    for word in ("pass", "warn", "quarantine", "pending", "error"):
        table.add_column(word.upper(), justify="right")
    table.add_column("TOP REASONS (QUARANTINE)")
    for t in summary["teams"]:
        table.add_row(
            t["team"] or "-",
            str(t["images"]),
            *(str(t[w]) for w in WOULD),
            "\n".join(f"{r['images']}× {r['reason']}" for r in t["topReasons"]) or "-",
        )
    console.print(table)
    totals = summary["totals"]
    console.print(
        f"{summary['judged']} image(s) in {summary['repositoriesMatched']} repositories: "
        f"{totals['quarantine']} would be quarantined, {totals['pending']} pending, "
        f"{totals['warn']} warn, {totals['pass']} pass, {totals['error']} could not be judged"
        + (f"; {summary['gone']} gone meanwhile" if summary["gone"] else "")
        + ". Nothing was changed."
    )
