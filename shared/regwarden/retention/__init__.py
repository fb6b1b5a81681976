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

from ._collect import Collected, collect_records, records_from_listing
from ._execute import (
    AdaptiveLimiter,
    ApplyResult,
    Failure,
    RepositoryResult,
    apply,
    deletion_key,
)
from ._fanout import (
    RetentionOutcome,
    RetentionRuntime,
    fan_out,
    recheck_in_use,
    run_retention,
    work,
)
from ._inventory import (
    INVENTORIES,
    KUBERNETES_KINDS,
    InUse,
    InventoryContext,
    InventoryReader,
    gather_in_use,
    images_from_ecs_task,
    images_from_pod,
    images_from_workload,
    in_use_protections,
    parse_ref_lines,
    read_location,
    refs_from_aws,
    refs_from_ecs,
    refs_from_kubernetes,
    refs_from_lambda,
)
from ._plan import Decision, GuardTrip, RegistryPlan, RepositoryPlan
from ._planner import plan_registry, plan_repository
from ._policy import retention_rules, rules_from_section
from ._progress import LineProgress, NoProgress, Progress, RichProgress, progress_for
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
from ._run import (
    Deletion,
    RepositoryWork,
    RunLedger,
    RunPlan,
    load_run,
    new_run_id,
    plan_run,
    quarantine_protections,
    save_run,
    select_repositories,
    work_from_plan,
)
from ._semver import SemverKey, parse_semver

__all__ = [
    "INVENTORIES",
    "KUBERNETES_KINDS",
    "NO_PROTECTIONS",
    "AdaptiveLimiter",
    "ApplyResult",
    "Collected",
    "Decision",
    "DeleteOlderThan",
    "DeleteOrphans",
    "DeleteQuarantineExpired",
    "DeleteRule",
    "DeleteUntagged",
    "Deletion",
    "Failure",
    "Guard",
    "GuardTrip",
    "ImageRecord",
    "InUse",
    "InventoryContext",
    "InventoryReader",
    "KeepMostRecent",
    "KeepPullCount",
    "KeepPulledWithin",
    "KeepPushedWithin",
    "KeepRule",
    "KeepSemver",
    "KeepTagMatches",
    "LineProgress",
    "NoProgress",
    "Progress",
    "Protections",
    "RegistryPlan",
    "RepositoryPlan",
    "RepositoryResult",
    "RepositoryWork",
    "RetentionOutcome",
    "RetentionRules",
    "RetentionRuntime",
    "RichProgress",
    "RunLedger",
    "RunPlan",
    "SemverKey",
    "apply",
    "collect_records",
    "cosign_subject",
    "deletion_key",
    "fan_out",
    "from_ecr_image",
    "gather_in_use",
    "images_from_ecs_task",
    "images_from_pod",
    "images_from_workload",
    "in_use_protections",
    "load_run",
    "new_run_id",
    "parse_ref_lines",
    "parse_semver",
    "plan_markdown",
    "plan_registry",
    "plan_repository",
    "plan_run",
    "plan_table",
    "plan_to_dict",
    "progress_for",
    "protections_from_refs",
    "quarantine_protections",
    "read_location",
    "recheck_in_use",
    "records_from_listing",
    "refs_from_aws",
    "refs_from_ecs",
    "refs_from_kubernetes",
    "refs_from_lambda",
    "retention_rules",
    "rules_from_section",
    "run_retention",
    "save_run",
    "select_repositories",
    "to_epoch",
    "work",
    "work_from_plan",
]
