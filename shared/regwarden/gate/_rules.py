"""The gate's view of the policy: plain frozen rules, built from the policy file by
`from_policy`. Checks depend on these, not on YAML shapes, so they stay small and pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

from ..model import Severity
from ..quarantine_names import DEFAULT_TEMPLATE


@dataclass(frozen=True, slots=True)
class AllowEntry:
    id: str
    until: date | None
    reason: str


@dataclass(frozen=True, slots=True)
class SignatureRules:
    required: bool = False
    grace_period: timedelta = timedelta(0)
    require: Literal["all", "any"] = "any"
    """all: every configured key, identity and Notation policy must have signed."""
    threshold: int = 1
    """Distinct valid signers needed."""


@dataclass(frozen=True, slots=True)
class VulnerabilityRules:
    enabled: bool = False
    max_severity: Severity | None = None
    """Any finding above this fails."""
    max_counts: dict[Severity, int] = field(default_factory=dict)
    """At most N findings of exactly this severity."""
    max_cvss: float | None = None
    fixable_only: bool = False
    allow: tuple[AllowEntry, ...] = ()
    scan_timeout: timedelta = timedelta(minutes=30)
    max_scan_age: timedelta | None = None
    fail_open: bool = False
    """No scan within the timeout passes (with a warning) instead of failing."""


@dataclass(frozen=True, slots=True)
class TagRules:
    pattern: re.Pattern[str] | None = None
    pattern_name: str = ""
    forbidden: frozenset[str] = frozenset()
    immutable: bool = False


@dataclass(frozen=True, slots=True)
class HygieneRules:
    max_size: int | None = None
    max_layers: int | None = None
    allowed_base_images: tuple[re.Pattern[str], ...] = ()
    required_labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProvenanceRules:
    required: bool = False
    builder_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Promotion:
    tag: str | None = None
    repository: str | None = None


@dataclass(frozen=True, slots=True)
class GateRules:
    mode: Literal["enforce", "audit"] = "enforce"
    team: str | None = None
    signatures: SignatureRules = SignatureRules()
    vulnerabilities: VulnerabilityRules = VulnerabilityRules()
    tags: TagRules = TagRules()
    hygiene: HygieneRules = HygieneRules()
    provenance: ProvenanceRules = ProvenanceRules()
    promotion: Promotion | None = None
    quarantine_strategy: Literal["move", "retag", "lock"] = "move"
    quarantine_repository: str = DEFAULT_TEMPLATE
    settle_window: timedelta = timedelta(minutes=5)
    """An untagged manifest pushed by digest waits max(this, the signature grace period)
    after the repository's last push before it is judged as a stand-alone image."""

    @property
    def settle_wait(self) -> timedelta:
        return max(self.settle_window, self.signatures.grace_period)
