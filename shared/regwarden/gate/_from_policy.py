"""From one repository's effective policy to the gate's rules: `gate_rules(effective)`.

Pure: the policy models are already validated and compiled, so this only changes shape.
An absent section becomes the rule type's disabled default (its check is skipped).
"""

from __future__ import annotations

import re

from ..policy import (
    EffectiveRepositoryPolicy,
    Hygiene,
    Promotion,
    Provenance,
    Signatures,
    Tags,
    Vulnerabilities,
)
from ._rules import (
    AllowEntry,
    GateRules,
    HygieneRules,
    ProvenanceRules,
    SignatureRules,
    TagRules,
    VulnerabilityRules,
)
from ._rules import Promotion as PromotionRule

__all__ = ["SEMVER_TAG", "gate_rules"]

_NUMBER = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"

#: `tags.pattern: semver` as a regex: MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] with an optional
#: leading `v`, exactly as `regwarden.policy.is_semver_tag` decides (anchored, so it gives the
#: same answer whether the check searches or matches).
SEMVER_TAG = re.compile(
    rf"\A[vV]?{_NUMBER}\.{_NUMBER}\.{_NUMBER}"
    rf"(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?"
    rf"(?:\+{_BUILD_ID}(?:\.{_BUILD_ID})*)?\Z"
)


def gate_rules(effective: EffectiveRepositoryPolicy) -> GateRules:
    """The gate's rules for one repository's effective policy."""
    return GateRules(
        mode=effective.mode,
        team=effective.team,
        signatures=_signatures(effective.signatures),
        vulnerabilities=_vulnerabilities(effective.vulnerabilities),
        tags=_tags(effective.tags),
        hygiene=_hygiene(effective.hygiene),
        provenance=_provenance(effective.provenance),
        promotion=_promotion(effective.promotion, effective.repository),
        quarantine_strategy=effective.quarantine.strategy,
        quarantine_repository=effective.quarantine.repository,
        settle_window=effective.settle_window,
    )


def _signatures(section: Signatures | None) -> SignatureRules:
    if section is None:
        return SignatureRules()
    return SignatureRules(
        required=section.required,
        grace_period=section.grace_period,
        require=section.require,
        threshold=section.threshold,
    )


def _vulnerabilities(section: Vulnerabilities | None) -> VulnerabilityRules:
    if section is None:
        return VulnerabilityRules()
    return VulnerabilityRules(
        enabled=True,
        max_severity=section.max_severity,
        max_counts=section.max_counts.limits() if section.max_counts is not None else {},
        max_cvss=section.max_cvss,
        fixable_only=section.fixable_only,
        allow=tuple(AllowEntry(id=a.id, until=a.until, reason=a.reason) for a in section.allow),
        scan_timeout=section.scan_timeout,
        max_scan_age=section.max_scan_age,
        fail_open=section.fail_open,
    )


def _tags(section: Tags | None) -> TagRules:
    if section is None:
        return TagRules()
    pattern: re.Pattern[str] | None = None
    name = ""
    if section.pattern is not None:
        if section.pattern.kind == "semver":
            pattern, name = SEMVER_TAG, "semver"
        else:
            pattern, name = section.pattern.regex, "regex"
    return TagRules(
        pattern=pattern,
        pattern_name=name,
        forbidden=frozenset(section.forbidden),
        immutable=section.immutable,
    )


def _hygiene(section: Hygiene | None) -> HygieneRules:
    if section is None:
        return HygieneRules()
    return HygieneRules(
        max_size=section.max_size,
        max_layers=section.max_layers,
        allowed_base_images=tuple(glob.regex for glob in section.allowed_base_images),
        required_labels=section.required_labels,
    )


def _provenance(section: Provenance | None) -> ProvenanceRules:
    if section is None:
        return ProvenanceRules()
    return ProvenanceRules(required=section.required, builder_ids=section.builder_ids)


def _promotion(section: Promotion | None, repository: str) -> PromotionRule | None:
    if section is None:
        return None
    return PromotionRule(tag=section.tag, repository=section.render(repository))
