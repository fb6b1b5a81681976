"""The registry hygiene report (`regwarden report`): `_collect` reads the registry and the
ledger into an `Inventory`, `summarise` turns it into a `Report` (pure), `render_html`
draws it as one offline HTML file."""

from ._collect import collect, registry_pull_times
from ._history import record_report, report_summaries
from ._html import render_html
from ._model import (
    ImageFact,
    Inventory,
    PullFact,
    PullsSection,
    QuarantineRow,
    Report,
    RetentionPlanSummary,
    RetentionRun,
)
from ._pulls import pull_state, pulls_section
from ._scheduled import PLAN_NOTE, make_report, prefix_globs, report_json, report_keys
from ._summarise import GC_NOTE, NO_TEAM, summarise, unique_bytes

__all__ = [
    "GC_NOTE",
    "NO_TEAM",
    "PLAN_NOTE",
    "ImageFact",
    "Inventory",
    "PullFact",
    "PullsSection",
    "QuarantineRow",
    "Report",
    "RetentionPlanSummary",
    "RetentionRun",
    "collect",
    "make_report",
    "prefix_globs",
    "pull_state",
    "pulls_section",
    "record_report",
    "registry_pull_times",
    "render_html",
    "report_json",
    "report_keys",
    "report_summaries",
    "summarise",
    "unique_bytes",
]
