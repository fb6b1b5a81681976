"""Render a `Report` as one self-contained HTML file: styles inline, plots as inline SVG
drawn by matplotlib (the `report` extra, imported on first use), no script and no
reference to any other host, so the file opens offline. Every plot has a table beside it
carrying the same figures (screen readers, and people who want the numbers)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from html import escape
from typing import Any

from ..errors import UsageError
from ._model import GroupBytes, ImageRow, PullsSection, QuarantineRow, Report, SeverityCounts
from ._summarise import SEVERITIES

__all__ = ["render_html"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#1b1f24;
background:#fff;line-height:1.4}
h1{font-size:1.6rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2.5rem}
.fig{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start;margin:1rem 0}
.fig svg{max-width:36rem;height:auto}
table{border-collapse:collapse;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.2rem .5rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem;border-radius:4px}
figcaption{font-size:.9rem;color:#57606a}
code{font-size:.85rem}
"""


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            "the HTML report draws its plots with matplotlib, which is not installed",
            hint="pip install 'regwarden[report]' (or use --output json)",
        ) from None
    matplotlib.use("Agg")  # no display: render to SVG only
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    # text as text (small, selectable); a fixed hash salt keeps ids stable between runs
    with _pyplot().rc_context({"svg.fonttype": "none", "svg.hashsalt": "regwarden"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(fig)
    text = buf.getvalue()
    return re.sub(r"^.*?(?=<svg)", "", text, flags=re.S)  # drop the XML prolog and doctype


def _bar(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str) -> str:
    plt = _pyplot()
    height = max(1.8, 0.35 * len(labels) + 1)
    fig, ax = plt.subplots(figsize=(6, height))
    ax.barh(list(range(len(labels))), list(values), color="#0969da")
    ax.set_yticks(list(range(len(labels))), labels=list(labels))
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _svg(fig)


def _columns(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(range(len(labels))), list(values), color="#1a7f37")
    ax.set_xticks(list(range(len(labels))), labels=list(labels), rotation=20, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return _svg(fig)


def _line(xs: Sequence[str], ys: Sequence[float], title: str, ylabel: str) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(list(range(len(xs))), list(ys), marker="o", color="#8250df")
    ax.set_xticks(list(range(len(xs))), labels=list(xs), rotation=20, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    return _svg(fig)


_SEVERITY_COLOURS = {
    "critical": "#82071e",
    "high": "#cf222e",
    "medium": "#bc4c00",
    "low": "#d4a72c",
    "negligible": "#8c959f",
    "unknown": "#d0d7de",
}


def _stacked(rows: Sequence[SeverityCounts], title: str) -> str:
    """Horizontal bars, one per row, stacked by severity (worst leftmost)."""
    plt = _pyplot()
    height = max(1.8, 0.35 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(6, height))
    ys = list(range(len(rows)))
    left = [0] * len(rows)
    for severity in SEVERITIES:
        values = [r.counts.get(severity, 0) for r in rows]
        if any(values):
            ax.barh(ys, values, left=left, color=_SEVERITY_COLOURS[severity], label=severity)
            left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(ys, labels=[r.name for r in rows])
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel("findings")
    if any(left):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # off the bars
    return _svg(fig)


def _findings(rows: Sequence[SeverityCounts], title: str, what: str) -> str:
    if not rows:
        return f"<p>{escape(title)}: no image's last verdict read a scan report.</p>"
    table = _table(
        (what, "images scanned", *SEVERITIES, "total"),
        [(r.name, r.images, *(r.counts.get(s, 0) for s in SEVERITIES), r.total) for r in rows],
    )
    return _figure(
        _stacked(rows, title),
        f"{title}: findings of each {what}'s images by severity, from their last verdicts "
        "(several scanners: per severity, the most one of them found).",
        table,
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> str:
    if not rows:
        return f"<p>{escape(caption)}: none.</p>" if caption else "<p>None.</p>"
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th scope='col'>{escape(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        cells = []
        for cell in row:
            cls = " class='n'" if isinstance(cell, int | float) else ""
            cells.append(f"<td{cls}>{escape(str(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _figure(svg: str, caption: str, table: str) -> str:
    return (
        f"<div class='fig'><figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"
        f"{table}</div>"
    )


def _groups(groups: Sequence[GroupBytes], title: str, what: str) -> str:
    if not groups:
        return f"<p>No images by {escape(what)}.</p>"
    svg = _bar([g.name for g in groups], [g.bytes / 2**20 for g in groups], title, "MiB (unique)")
    rows = [(g.name, _size(g.bytes), g.bytes, g.images) for g in groups]
    return _figure(
        svg,
        f"{title}: unique bytes per {what}, largest first.",
        _table((what, "size", "bytes", "images"), rows),
    )


def _images(rows: Sequence[ImageRow], caption: str) -> str:
    return _table(
        ("repository", "digest", "team", "tags", "size", "layers", "age (days)", "detail"),
        [
            (
                r.repository,
                r.digest[:19],
                r.team or "-",
                ", ".join(r.tags) or "-",
                _size(r.bytes),
                r.layers,
                "-" if r.age_days is None else round(r.age_days, 1),
                r.detail,
            )
            for r in rows
        ],
        caption,
    )


def _quarantines(rows: Sequence[QuarantineRow]) -> str:
    return _table(
        ("image", "team", "quarantined", "why", "strategy", "released", "release reason"),
        [
            (
                f"{q.repository}@{q.digest[:19]}",
                q.team or "-",
                q.quarantined_at.isoformat(timespec="seconds"),
                q.reason,
                q.strategy,
                q.released_at.isoformat(timespec="seconds") if q.released_at else "standing",
                q.released_because or "-",
            )
            for q in rows
        ],
        "Quarantine log, newest first",
    )


def _when(at: Any) -> str:
    return "-" if at is None else str(at.isoformat(timespec="seconds"))


def _pulls(p: PullsSection) -> str:
    """Most pulled (plot and table), by team and repository, not pulled in N days (and
    where that is unknown), who pulls what."""
    out = ["<h2 id='pulls'>Pulls</h2>"]
    source = (
        "the registry's own last-pulled times and the ledger's pull tallies"
        if p.registry_pull_times
        else "the ledger's pull tallies from the access stream"
    )
    out.append(
        f"<p>{p.total_pulls} pulls recorded in {p.tracked_repositories} tracked "
        f"repositories ({escape(source)}). Counts start when the ledger began tracking a "
        "repository's pulls.</p>"
    )
    if p.most_pulled:
        labels = [f"{i.repository}@{(i.tags or (i.digest[7:19],))[0]}" for i in p.most_pulled]
        out.append(
            _figure(
                _bar(labels, [i.pulls for i in p.most_pulled], "Most pulled images", "pulls"),
                "Most pulled images: recorded pulls, most first.",
                _table(
                    ("image", "team", "tags", "pulls", "principals", "last pulled"),
                    [
                        (
                            f"{i.repository}@{i.digest[:19]}",
                            i.team or "-",
                            ", ".join(i.tags) or "-",
                            i.pulls,
                            i.principals,
                            _when(i.last_pulled),
                        )
                        for i in p.most_pulled
                    ],
                ),
            )
        )
    else:
        out.append("<p>Most pulled images: no pull is recorded.</p>")
    for groups, what in ((p.by_team, "team"), (p.by_repository, "repository")):
        out.append(
            _table(
                (what, "pulls", "images pulled", "last pulled"),
                [(g.name, g.pulls, g.images, _when(g.last_pulled)) for g in groups],
                f"Pulls by {what}",
            )
        )
    out.append(
        _images(
            p.not_pulled,
            f"Not pulled within {p.stale_days} days ({p.not_pulled_count} in all, "
            "least recently pulled first)",
        )
    )
    if p.unknown:
        out.append(
            _table(
                ("repository", "team", "images", f"not pulled within {p.stale_days} days?"),
                [
                    (
                        u.repository,
                        u.team or "-",
                        u.images,
                        "unknown since tracking began " + u.tracking_since.date().isoformat()
                        if u.tracking_since is not None
                        else "unknown: pulls are not tracked",
                    )
                    for u in p.unknown
                ],
                f"Pull state unknown ({p.unknown_count} images in all; repositories with "
                f"most first): tracking covers less than {p.stale_days} days of them",
            )
        )
    rows: list[tuple[object, ...]] = []
    for who in p.principals:
        top = "; ".join(f"{g.name} ({g.pulls})" for g in who.repositories)
        rows.append((who.principal, who.pulls, who.images, _when(who.last_pulled), top))
    out.append(
        _table(
            ("principal", "pulls", "images", "last pulled", "repositories pulled (pulls)"),
            rows,
            "Who pulls what",
        )
    )
    return "\n".join(out)


def render_html(report: Report) -> str:
    """The whole page as text."""
    r = report
    s, a, sec, h = r.storage, r.age, r.security, r.hygiene
    parts: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        # no request may leave the page, whatever a plot or a name contains
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>Registry report: {escape(r.registry)}</title><style>{_STYLE}</style></head>",
        f"<body><h1>Registry report: {escape(r.registry)}</h1>",
        f"<p>Generated {escape(r.generated_at.isoformat(timespec='seconds'))}: {r.images} "
        f"images in {r.repositories} repositories, {_size(s.unique_bytes)} in "
        f"{s.unique_blobs} unique blobs.</p>",
    ]
    parts += [f"<p class='note'>{escape(n)}</p>" for n in r.notes]
    parts.append("<h2 id='teams'>Teams</h2>")
    parts.append(
        _table(
            ("team", "images", "repositories", "size", "standing quarantines", "unsigned"),
            [
                (t.team, t.images, t.repositories, _size(t.bytes), t.quarantined, t.unsigned)
                for t in r.teams
            ],
            "Per team",
        )
    )
    # -- storage
    parts.append("<h2 id='storage'>Storage</h2>")
    parts.append(f"<p class='note'>{escape(s.note)}</p>")
    parts.append(
        f"<p>Unique: {_size(s.unique_bytes)}; summed image by image (shared layers counted "
        f"again): {_size(s.naive_bytes)}.</p>"
    )
    parts.append(_groups(s.by_team, "Storage by team", "team"))
    parts.append(_groups(s.by_repository, "Storage by repository (top)", "repository"))
    labels = [p.at.strftime("%Y-%m-%d %H:%M") for p in s.trend]
    parts.append(
        _figure(
            _line(labels, [p.bytes / 2**20 for p in s.trend], "Storage trend", "MiB"),
            "Unique storage at each report, oldest first (this report last).",
            _table(
                ("report", "size", "images"),
                [(lbl, _size(p.bytes), p.images) for lbl, p in zip(labels, s.trend, strict=True)],
            ),
        )
    )
    # -- age
    parts.append("<h2 id='age'>Age</h2>")
    parts.append(
        _figure(
            _columns([b.label for b in a.ages], [b.count for b in a.ages], "Image ages", "images"),
            "Images by age (config `created`, else first seen by the ledger).",
            _table(("age", "images"), [(b.label, b.count) for b in a.ages]),
        )
    )
    if a.pull_times_known:
        parts.append(
            f"<p>Stale: {len(a.stale)} images not pulled within {a.stale_days} days where "
            "the pull record covers that long (see <a href='#pulls'>Pulls</a>).</p>"
        )
    else:
        parts.append("<p>Stale images: the registry and ledger know no pull times.</p>")
    parts.append(_images(a.untagged, "Untagged images"))
    parts.append(_images(a.orphaned, "Orphaned artifacts (their subject is gone)"))
    plan = a.retention_plan
    if plan is None:
        parts.append("<p>Retention: no policy given, so no plan was made.</p>")
    else:
        parts.append(
            f"<p>The current retention policy would delete {plan.images_deleted} images "
            f"({_size(plan.bytes_freed)}) and keep {plan.images_kept} in {plan.repositories} "
            f"repositories{' — a guard rail tripped' if plan.tripped else ''}. Nothing was "
            "deleted to find this out.</p>"
        )
    # -- security
    parts.append("<h2 id='security'>Security</h2>")
    sig = [("signed", sec.signed), ("verified", sec.verified), ("unsigned", sec.unsigned)]
    if sec.unknown:
        sig.append(("unknown", sec.unknown))
    parts.append(
        _figure(
            _columns([k for k, _ in sig], [v for _, v in sig], "Signature coverage", "images"),
            "Images with a signature in the registry; verified: signed and the gate's last "
            "verdict passed.",
            _table(("coverage", "images"), sig),
        )
    )
    verdicts = list(sec.verdicts.items())
    parts.append(
        _figure(
            _columns([k for k, _ in verdicts], [v for _, v in verdicts], "Last verdicts", "images"),
            "Images by the gate's last verdict (none: never judged).",
            _table(("verdict", "images"), verdicts),
        )
    )
    if sec.findings_by_severity is None:
        parts.append(
            "<p>Findings by severity: no image's last verdict read a scan report (the "
            "ledger keeps a verdict's findings from when the gate judged it with one).</p>"
        )
    else:
        total = sum(sec.findings_by_severity.values())
        parts.append(
            f"<p>Findings by severity, from the last verdicts of the {sec.findings_images} "
            f"images judged with a scan report: {total} in all — "
            + escape(", ".join(f"{n} {k}" for k, n in sec.findings_by_severity.items() if n))
            + ("" if total else "none")
            + ".</p>"
        )
        parts.append(_findings(sec.findings_by_team, "Findings by team", "team"))
        parts.append(
            _findings(sec.findings_by_repository, "Findings by repository (worst)", "repository")
        )
    parts.append(_images(sec.past_max_scan_age, "Past maxScanAge (not judged recently enough)"))
    parts.append(_quarantines(sec.quarantines))
    # -- hygiene
    parts.append("<h2 id='hygiene'>Hygiene</h2>")
    parts.append(_images(h.latest_in_use, "Images tagged latest"))
    parts.append(
        f"<p>{h.non_semver_tags} tags are not semver"
        + (f", e.g. {escape(', '.join(h.non_semver_examples))}" if h.non_semver_examples else "")
        + ".</p>"
    )
    parts.append(_images(h.largest, "Largest images"))
    parts.append(
        _table(
            ("base image", "images"),
            list(h.base_images.items()),
            "Base images (org.opencontainers.image.base.name)",
        )
    )
    # -- pulls
    if r.pulls is not None:
        parts.append(_pulls(r.pulls))
    # -- retention history
    parts.append("<h2 id='retention'>Retention history</h2>")
    runs = r.retention_history
    if runs:
        names = [run.at.strftime("%Y-%m-%d %H:%M") for run in runs]
        parts.append(
            _figure(
                _columns(names, [run.bytes_freed / 2**20 for run in runs], "Freed per run", "MiB"),
                "Bytes freed by each retention run the ledger recorded.",
                _table(
                    ("run", "at", "status", "images deleted", "freed"),
                    [
                        (run.run_id, n, run.status, run.deleted, _size(run.bytes_freed))
                        for n, run in zip(names, runs, strict=True)
                    ],
                ),
            )
        )
    else:
        parts.append("<p>No retention run is recorded in the ledger.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
