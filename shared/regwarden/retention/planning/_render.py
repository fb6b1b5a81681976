"""Plans for scripts (JSON-able dicts), for terminals (rich tables) and for reviews
(markdown). Rendering never changes a decision."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ._plan import Decision, GuardTrip, RegistryPlan, RepositoryPlan

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["plan_markdown", "plan_table", "plan_to_dict"]

Only = Literal["all", "delete"]


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _short(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest


def _trip_dict(trip: GuardTrip | None) -> dict[str, Any] | None:
    if trip is None:
        return None
    return {
        "scope": trip.scope,
        "guard": trip.guard,
        "selected": trip.selected,
        "population": trip.population,
        "limit": trip.limit,
        "bytes": trip.bytes,
        "message": trip.message,
    }


def _decision_dict(d: Decision) -> dict[str, Any]:
    return {
        "digest": d.digest,
        "action": d.action,
        "rule": d.rule,
        "reason": d.reason,
        "tags": list(d.tags),
        "size": d.size,
        "pushed": _iso(d.time),
        "role": d.role,
    }


def _by_rule(decisions: tuple[Decision, ...]) -> dict[str, dict[str, int]]:
    counts = Counter((d.action, d.rule) for d in decisions)
    out: dict[str, dict[str, int]] = {"keep": {}, "delete": {}}
    for (action, rule), n in sorted(counts.items()):
        out[action][rule] = n
    return out


def _repo_dict(plan: RepositoryPlan, only: Only) -> dict[str, Any]:
    decisions = plan.decisions if only == "all" else plan.deletions
    return {
        "repository": plan.repository,
        "tripped": plan.tripped,
        "trip": _trip_dict(plan.trip),
        "warnings": list(plan.warnings),
        "totals": {
            "images_kept": plan.images_kept,
            "images_deleted": plan.images_deleted,
            "bytes_kept": plan.bytes_kept,
            "bytes_freed": plan.bytes_freed,
        },
        "by_rule": _by_rule(plan.decisions),
        "delete_order": list(plan.delete_order),
        "decisions": [_decision_dict(d) for d in decisions],
    }


def plan_to_dict(plan: RepositoryPlan | RegistryPlan, *, only: Only = "all") -> dict[str, Any]:
    """A JSON-able view of a plan (`json.dumps` works on it). `only="delete"` lists only
    the deletions, for large registries; totals always cover everything."""
    if isinstance(plan, RepositoryPlan):
        return _repo_dict(plan, only)
    return {
        "tripped": plan.tripped,
        "trip": _trip_dict(plan.trip),
        "skipped": list(plan.skipped),
        "totals": {
            "repositories": len(plan.plans),
            "images_kept": plan.images_kept,
            "images_deleted": plan.images_deleted,
            "bytes_kept": plan.bytes_kept,
            "bytes_freed": plan.bytes_freed,
        },
        "repositories": [_repo_dict(p, only) for p in plan.plans],
    }


def _repo_plans(plan: RepositoryPlan | RegistryPlan) -> tuple[RepositoryPlan, ...]:
    return (plan,) if isinstance(plan, RepositoryPlan) else plan.plans


def plan_table(plan: RepositoryPlan | RegistryPlan, *, only: Only = "all") -> Table:
    """A rich table: one row per digest with the action, the deciding rule and why."""
    from rich.table import Table  # CLI only: the AWS layer ships no rich

    plans = _repo_plans(plan)
    table = Table(title="retention plan", show_lines=False)
    many = len(plans) > 1 or isinstance(plan, RegistryPlan)
    if many:
        table.add_column("repository")
    table.add_column("digest", no_wrap=True)
    table.add_column("tags")
    table.add_column("pushed", no_wrap=True)
    table.add_column("size", justify="right")
    table.add_column("action")
    table.add_column("rule")
    table.add_column("reason")
    for p in plans:
        for d in p.decisions if only == "all" else p.deletions:
            style = "red" if d.action == "delete" else ("yellow" if d.rule == "guard" else "")
            row = [
                _short(d.digest),
                ", ".join(d.tags) or "<untagged>",
                (_iso(d.time) or "unknown")[:10],
                _size(d.size),
                d.action,
                d.rule,
                d.reason,
            ]
            if many:
                row.insert(0, p.repository)
            table.add_row(*row, style=style or None)
    deleted = sum(p.images_deleted for p in plans)
    freed = sum(p.bytes_freed for p in plans)
    kept = sum(p.images_kept for p in plans)
    caption = [f"{deleted} to delete ({_size(freed)}), {kept} kept"]
    caption += [f"{p.repository}: {w}" if many else w for p in plans for w in p.warnings]
    if isinstance(plan, RegistryPlan) and plan.trip is not None:
        caption.append(plan.trip.message)
    table.caption = "\n".join(caption)
    return table


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def plan_markdown(plan: RepositoryPlan | RegistryPlan, *, only: Only = "all") -> str:
    """Markdown for a pull request or an issue: a summary, warnings, then a table."""
    lines: list[str] = []
    if isinstance(plan, RegistryPlan):
        lines.append("# Retention plan")
        lines.append("")
        lines.append(
            f"{len(plan.plans)} repositories: {plan.images_deleted} to delete "
            f"({_size(plan.bytes_freed)}), {plan.images_kept} kept."
        )
        if plan.skipped:
            lines.append(f"Skipped (no retention rules): {', '.join(plan.skipped)}.")
        if plan.trip is not None:
            lines.append(f"**{plan.trip.message}**")
        lines.append("")
    for p in _repo_plans(plan):
        lines.append(f"## {p.repository}")
        lines.append("")
        lines.append(
            f"{p.images_deleted} to delete ({_size(p.bytes_freed)}), {p.images_kept} kept "
            f"({_size(p.bytes_kept)})."
        )
        if p.trip is not None:
            lines.append("")
            lines.append(f"**{p.trip.message}**")
        if p.warnings:
            lines.append("")
            lines.extend(f"- ⚠ {_md_cell(w)}" for w in p.warnings)
        rows = p.decisions if only == "all" else p.deletions
        lines.append("")
        if not rows:
            lines.append("_nothing to list_")
            lines.append("")
            continue
        lines.append("| digest | tags | pushed | size | action | rule | reason |")
        lines.append("| --- | --- | --- | ---: | --- | --- | --- |")
        for d in rows:
            tags = ", ".join(f"`{t}`" for t in d.tags) or "_untagged_"
            lines.append(
                f"| `{_short(d.digest)}` | {tags} | {(_iso(d.time) or 'unknown')[:10]} | "
                f"{_size(d.size)} | **{d.action}** | {d.rule} | {_md_cell(d.reason)} |"
            )
        lines.append("")
    return "\n".join(lines)
