"""The policy file's `retention` section → the planner's rule types. The only place that
knows both shapes; the planner never sees YAML models, the policy never sees planner rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import PolicyError
from ._rules import (
    DeleteOlderThan,
    DeleteOrphans,
    DeleteQuarantineExpired,
    DeleteRule,
    DeleteUntagged,
    Guard,
    KeepMostRecent,
    KeepPullCount,
    KeepPulledWithin,
    KeepPushedWithin,
    KeepRule,
    KeepSemver,
    KeepTagMatches,
    RetentionRules,
)

if TYPE_CHECKING:
    from ...policy import EffectiveRepositoryPolicy, Retention

__all__ = ["retention_rules", "rules_from_section"]


def retention_rules(effective: EffectiveRepositoryPolicy) -> RetentionRules | None:
    """The rules for one repository's effective policy; None when it has no `retention`
    section (the repository is skipped: nothing is deleted)."""
    section = effective.retention
    if section is None:
        return None
    try:
        return rules_from_section(section)
    except PolicyError as exc:  # pragma: no cover - the policy models check the same bounds
        path = effective.path("retention")
        raise PolicyError(f"{path}: {exc.message}") from None


def rules_from_section(section: Retention) -> RetentionRules:
    """`Retention` (YAML model) → `RetentionRules`, rule order preserved (the first rule that
    keeps or selects an image explains it)."""
    from ... import policy as p

    keep: list[KeepRule] = []
    for rule in section.keep:
        if isinstance(rule, p.KeepMostRecent):
            spec = rule.spec
            keep.append(KeepMostRecent(spec.count, by=spec.by, tagged_only=spec.tagged_only))
        elif isinstance(rule, p.KeepSemver):
            s = rule.semver
            keep.append(
                KeepSemver(
                    majors=s.majors,
                    minors_per_major=s.minors_per_major,
                    patches_per_minor=s.patches_per_minor,
                    prereleases=s.prereleases,
                )
            )
        elif isinstance(rule, p.KeepPulledWithin):
            pulled = rule.spec
            keep.append(KeepPulledWithin(pulled.within, unknown=pulled.unknown))
        elif isinstance(rule, p.KeepTagMatches):
            tags = rule.spec
            keep.append(
                KeepTagMatches(
                    include=tags.include.pattern if tags.include is not None else None,
                    exclude=tags.exclude.pattern if tags.exclude is not None else None,
                )
            )
        elif isinstance(rule, p.KeepPushedWithin):
            keep.append(KeepPushedWithin(rule.pushed_within))
        elif isinstance(rule, p.KeepPullCount):
            keep.append(KeepPullCount(rule.pull_count.min, unknown=rule.pull_count.unknown))
        else:  # pragma: no cover - the discriminated union admits nothing else
            raise PolicyError(f"retention keep: got {type(rule).__name__}, not a known rule")
    delete: list[DeleteRule] = []
    for drule in section.delete:
        if isinstance(drule, p.DeleteUntagged):
            delete.append(DeleteUntagged(drule.untagged.older_than))
        elif isinstance(drule, p.DeleteOlderThan):
            # "delete tagged older than": untagged images are the `untagged` rule's
            delete.append(DeleteOlderThan(drule.older_than, tagged_only=True))
        elif isinstance(drule, p.DeleteOrphans):
            delete.append(DeleteOrphans(drule.orphans.older_than))
        elif isinstance(drule, p.DeleteQuarantineExpired):
            delete.append(DeleteQuarantineExpired(drule.quarantine_expired.after))
        else:  # pragma: no cover
            raise PolicyError(f"retention delete: got {type(drule).__name__}, not a known rule")
    guard = Guard(max_deletes=section.guard.max_deletes, max_share=section.guard.max_share)
    return RetentionRules(
        keep=tuple(keep), delete=tuple(delete), guard=guard, age_from=section.age_from
    )
