"""A verdict's findings by severity, as the ledger keeps them with it (`Outcome.findings`)
for the report: read from the vulnerabilities check's details, which name each scan
source's counts (`_checks._Judged.entry`). Pure."""

from __future__ import annotations

from ..model import Severity, Verdict

__all__ = ["verdict_findings"]


def verdict_findings(verdict: Verdict) -> tuple[tuple[str, int], ...] | None:
    """(severity name, count), worst first, only severities found; `()` when the scans
    found nothing; None when the verdict was judged without a scan report (no rules, no
    scan yet, the scan unreadable). Several sources: per severity, the most any one source
    found — the same finding reported by Trivy and by Grype is one finding, not two."""
    sources: list[object] = []
    for check in verdict.checks:
        if check.name == "vulnerabilities":
            found = check.details.get("sources")
            sources += found if isinstance(found, list) else []
    counts: dict[Severity, int] = {}
    seen = False
    for source in sources:
        by_name = source.get("counts") if isinstance(source, dict) else None
        if not isinstance(by_name, dict):
            continue
        seen = True
        for name, count in by_name.items():
            try:
                severity = Severity.parse(str(name))
            except ValueError:
                continue
            if isinstance(count, int) and count > 0:
                counts[severity] = max(counts.get(severity, 0), count)
    if not seen:
        return None
    return tuple((str(s), counts[s]) for s in sorted(counts, reverse=True))
