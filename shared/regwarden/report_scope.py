"""What a scheduled report covers, read the same way by every cloud's report function.

A module of its own, outside `regwarden.report`: the report functions' modules load with
their cloud's entry point (GCP's `main.py` imports every function's module), so what they
need at import must not bring the report's models and renderer with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .warm import env_int, env_prefixes

__all__ = ["ReportScope", "prefix_globs"]


def prefix_globs(prefixes: Sequence[str]) -> tuple[str, ...]:
    """fnmatch globs over repository names for name prefixes (`*` crosses `/`); `""`
    among them is every repository (no glob)."""
    return () if "" in prefixes else tuple(f"{p}*" for p in prefixes)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportScope:
    """Which repositories a scheduled report covers and where its objects go under the
    bucket or container. Each cloud's settings extend it with their registry and storage."""

    prefix: str = "reports/"
    """Key prefix of every report object (ends with `/`, or empty)."""
    repositories: tuple[str, ...] = ("",)
    """Repository name prefixes in scope; `""` is every repository."""
    top: int = 10
    stale_days: int = 90

    @property
    def globs(self) -> tuple[str, ...]:
        """fnmatch globs over repository names: each prefix and everything below it."""
        return prefix_globs(self.repositories)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ReportScope:
        """`REGWARDEN_REPORT_PREFIX` (`reports/`), `REGWARDEN_REPORT_PREFIXES` (every
        repository), `REGWARDEN_REPORT_TOP` (10), `REGWARDEN_REPORT_STALE_DAYS` (90)."""
        prefix = (env.get("REGWARDEN_REPORT_PREFIX") or "reports/").strip().strip("/")
        return ReportScope(
            prefix=f"{prefix}/" if prefix else "",
            repositories=env_prefixes(env, "REGWARDEN_REPORT_PREFIXES"),
            top=env_int(env, "REGWARDEN_REPORT_TOP", 10, least=1),
            stale_days=env_int(env, "REGWARDEN_REPORT_STALE_DAYS", 90, least=1),
        )
