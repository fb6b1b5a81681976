"""Retention planning: pure rules, records and the planner (no I/O, no clock: `now` is an
argument). Every name the running side or callers use is exported here."""

from ._plan import Decision, GuardTrip, RegistryPlan, RepositoryPlan
from ._planner import plan_registry, plan_repository
from ._policy import retention_rules, rules_from_section
from ._protections import NO_PROTECTIONS, Protections, protections_from_refs
from ._records import ImageRecord, cosign_subject, from_ecr_image, to_epoch
from ._render import plan_markdown, plan_table, plan_to_dict
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
from ._semver import SemverKey, parse_semver
from ._view import COMPLETE_PULLS, NO_PULL_TRACKING, PullTracking

__all__ = [
    "COMPLETE_PULLS",
    "NO_PROTECTIONS",
    "NO_PULL_TRACKING",
    "Decision",
    "DeleteOlderThan",
    "DeleteOrphans",
    "DeleteQuarantineExpired",
    "DeleteRule",
    "DeleteUntagged",
    "Guard",
    "GuardTrip",
    "ImageRecord",
    "KeepMostRecent",
    "KeepPullCount",
    "KeepPulledWithin",
    "KeepPushedWithin",
    "KeepRule",
    "KeepSemver",
    "KeepTagMatches",
    "Protections",
    "PullTracking",
    "RegistryPlan",
    "RepositoryPlan",
    "RetentionRules",
    "SemverKey",
    "cosign_subject",
    "from_ecr_image",
    "parse_semver",
    "plan_markdown",
    "plan_registry",
    "plan_repository",
    "plan_table",
    "plan_to_dict",
    "protections_from_refs",
    "retention_rules",
    "rules_from_section",
    "to_epoch",
]
