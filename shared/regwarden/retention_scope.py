"""What a scheduled retention run covers and may do, read the same way by the GCP and
Azure retention functions (each names its registry and its in-use inventories).

A module of its own, outside `regwarden.retention`, as `report_scope` is outside
`regwarden.report`: a function's settings load before (and without) the planner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from .warm import env_choice, env_int, env_prefixes, env_required

__all__ = ["RETENTION_MODES", "RetentionScope"]

RETENTION_MODES = ("plan", "apply")
"""`plan` (report only, the default) or `apply` (delete)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionScope:
    """The retention functions' configuration (fan-out and worker), read once per cold
    start. An unknown mode is an error, never a guess: only `apply` deletes. Each cloud's
    settings extend it with their inventories' default."""

    registry: str
    """The registry host the fan-out lists and the worker accepts."""
    mode: str = "plan"
    prefixes: tuple[str, ...] = ("",)
    """Repository name prefixes in scope; `""` is every repository."""
    inventory: str
    """Where in-use images are found: the cloud's own inventory, or `policy` only."""
    concurrency: int = 4
    """Deletions in flight per worker call."""
    budget: int = 480
    """Seconds a worker call may spend; it starts no deletion in its last 30."""

    @property
    def apply(self) -> bool:
        return self.mode == "apply"

    @classmethod
    def read(cls, env: Mapping[str, str], *, registry: str, inventories: tuple[str, ...]) -> Self:
        """`REGWARDEN_RETENTION_REGISTRY` (required; `registry` says what it should be),
        `RETENTION_MODE` (plan), `REGWARDEN_RETENTION_PREFIXES` (every repository),
        `REGWARDEN_RETENTION_INVENTORY` (the first of `inventories`),
        `REGWARDEN_RETENTION_CONCURRENCY` (4), `REGWARDEN_RETENTION_BUDGET` (480)."""
        from .intake import parse_host

        host = env_required(env, "REGWARDEN_RETENTION_REGISTRY", registry)
        return cls(
            registry=parse_host(host, what="REGWARDEN_RETENTION_REGISTRY"),
            mode=env_choice(env, "RETENTION_MODE", RETENTION_MODES),
            prefixes=env_prefixes(env, "REGWARDEN_RETENTION_PREFIXES"),
            inventory=env_choice(env, "REGWARDEN_RETENTION_INVENTORY", inventories),
            concurrency=env_int(env, "REGWARDEN_RETENTION_CONCURRENCY", 4, least=1),
            budget=env_int(env, "REGWARDEN_RETENTION_BUDGET", 480, least=1),
        )
