"""Retention: pure rules and a planner that says, for every digest, keep or delete and why.

    rules = RetentionRules(
        keep=(KeepMostRecent(10), KeepSemver(majors=3, minors_per_major=2)),
        delete=(DeleteUntagged(timedelta(days=7)), DeleteOlderThan(timedelta(days=180))),
        guard=Guard(max_deletes=500, max_share=0.5),
    )
    plan = plan_repository("team/api", records, rules, now=now, protections=protections)

KEEP always wins; images in use, locked or quarantined are never deleted; an index keeps
its children and an image its signatures, attestations and SBOMs; deleting an image
deletes them too. A plan over its guard deletes nothing. No I/O and no clock here:
listing, in-use inventory and deleting live at the edges.
"""

from ._plan import Decision, GuardTrip, RegistryPlan, RepositoryPlan
from ._planner import plan_registry, plan_repository
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

__all__ = [
    "NO_PROTECTIONS",
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
    "to_epoch",
]
