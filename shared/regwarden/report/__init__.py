"""The registry hygiene report (`regwarden report`): `_collect` reads the registry and the
ledger into an `Inventory`, `summarise` turns it into a `Report` (pure), `render_html`
draws it as one offline HTML file."""

from ._collect import collect
from ._history import record_report, report_summaries
from ._html import render_html
from ._model import ImageFact, Inventory, QuarantineRow, Report, RetentionPlanSummary, RetentionRun
from ._summarise import GC_NOTE, NO_TEAM, summarise, unique_bytes

__all__ = [
    "GC_NOTE",
    "NO_TEAM",
    "ImageFact",
    "Inventory",
    "QuarantineRow",
    "Report",
    "RetentionPlanSummary",
    "RetentionRun",
    "collect",
    "record_report",
    "render_html",
    "report_summaries",
    "summarise",
    "unique_bytes",
]
