"""The report's data: what `_collect` reads (`Inventory`) and what `_summarise` makes of
it (`Report`). Pure pydantic models; times are passed in, never read from the clock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AgeSection",
    "Bucket",
    "GroupBytes",
    "HygieneSection",
    "ImageFact",
    "ImageRow",
    "Inventory",
    "PrincipalPulls",
    "PullFact",
    "PullGroup",
    "PulledImage",
    "PullsSection",
    "QuarantineRow",
    "Report",
    "RetentionPlanSummary",
    "RetentionRun",
    "SecuritySection",
    "SeverityCounts",
    "StorageSection",
    "TeamSummary",
    "TrendPoint",
    "UnknownPulls",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImageFact(_Frozen):
    """One manifest or index in the registry, as `_collect` read it."""

    repository: str
    digest: str
    team: str | None = None
    kind: str = "image"
    """`image` (a manifest or an index) or `artifact` (a signature, attestation or SBOM)."""
    tags: tuple[str, ...] = ()
    blobs: dict[str, int] = Field(default_factory=dict)
    """Every blob the image references (config and layers, an index's children's too) →
    its size: unique storage is the union of these."""
    layers: int = 0
    created: datetime | None = None
    first_seen: datetime | None = None
    last_pulled: datetime | None = None
    subject: str | None = None
    """An artifact's subject digest (cosign's `sha256-HEX.sig` tag or the manifest's
    `subject`): an artifact whose subject is gone is orphaned."""
    signed: bool | None = None
    """A signature exists in the registry for this digest; None: not looked for."""
    verdict: str | None = None
    """The ledger's last verdict (PASSED, WARN, FAILED, PENDING), None if never judged."""
    verdict_at: datetime | None = None
    findings: dict[str, int] | None = None
    """The last verdict's findings by severity name (`{"critical": 1}`); None: the ledger
    keeps none for it (judged without a scan report, or before verdicts kept them)."""
    base_name: str | None = None
    """`org.opencontainers.image.base.name` from the manifest's annotations."""
    max_scan_age_s: float | None = None
    """The policy's `vulnerabilities.maxScanAge` for its repository, in seconds."""
    registry_last_pulled: datetime | None = None
    """The registry's own last-pulled time where it keeps one (ECR's
    `lastRecordedPullTime`); `last_pulled` is the ledger's, from the access stream."""


class PullFact(_Frozen):
    """The ledger's pull tally of one image by one principal (`Ledger.pull_tallies`)."""

    repository: str
    digest: str
    principal: str
    """Who pulled; "" when the events named nobody."""
    count: int
    last_pulled: datetime


class QuarantineRow(_Frozen):
    repository: str
    digest: str
    team: str | None = None
    strategy: str
    reason: str
    quarantined_at: datetime
    released_at: datetime | None = None
    released_because: str | None = None
    """Who released it and why, as the release action recorded them (`who: why`)."""


class RetentionRun(_Frozen):
    run_id: str
    at: datetime
    status: str
    deleted: int
    bytes_freed: int


class RetentionPlanSummary(_Frozen):
    images_deleted: int
    bytes_freed: int
    images_kept: int
    repositories: int
    tripped: bool


class Inventory(_Frozen):
    """Everything the report is drawn from."""

    registry: str
    images: tuple[ImageFact, ...] = ()
    quarantines: tuple[QuarantineRow, ...] = ()
    retention_runs: tuple[RetentionRun, ...] = ()
    retention_plan: RetentionPlanSummary | None = None
    previous: tuple[dict[str, Any], ...] = ()
    """Summaries of earlier reports (`Report.summary()`), oldest first."""
    pull_times_known: bool = False
    pulls: tuple[PullFact, ...] = ()
    """The ledger's pull tallies of every repository read (one read per repository)."""
    pull_tracking: dict[str, datetime | None] = Field(default_factory=dict)
    """Repository → when the ledger began tracking its pulls (None: never)."""
    registry_pull_times: bool = False
    """The registry keeps last-pulled times itself (ECR): `registry_last_pulled` is complete
    from the image's push on, whatever the ledger's tracking says."""
    notes: tuple[str, ...] = ()


# -- the report ---------------------------------------------------------------------------


class GroupBytes(_Frozen):
    name: str
    bytes: int
    """Unique bytes: a blob shared by two images of the group counted once."""
    images: int


class TrendPoint(_Frozen):
    at: datetime
    bytes: int
    images: int


class ImageRow(_Frozen):
    repository: str
    digest: str
    team: str | None = None
    tags: tuple[str, ...] = ()
    bytes: int = 0
    layers: int = 0
    age_days: float | None = None
    detail: str = ""


class StorageSection(_Frozen):
    unique_bytes: int
    naive_bytes: int
    """The sum of every image's own size: what a tally without sharing would say."""
    unique_blobs: int
    by_team: tuple[GroupBytes, ...]
    by_repository: tuple[GroupBytes, ...]
    """The top N repositories by unique bytes."""
    trend: tuple[TrendPoint, ...]
    """Earlier reports' totals, oldest first, then this one."""
    note: str


class Bucket(_Frozen):
    label: str
    count: int


class AgeSection(_Frozen):
    ages: tuple[Bucket, ...]
    stale_days: int
    pull_times_known: bool
    stale: tuple[ImageRow, ...]
    untagged: tuple[ImageRow, ...]
    orphaned: tuple[ImageRow, ...]
    retention_plan: RetentionPlanSummary | None


class SeverityCounts(_Frozen):
    """Findings by severity of one team or repository, from its images' last verdicts."""

    name: str
    images: int
    """Images whose last verdict read a scan report (those the counts are from)."""
    counts: dict[str, int]
    """Severity name → findings, worst first, every severity (0 where none)."""
    total: int


class SecuritySection(_Frozen):
    signed: int
    verified: int
    """Signed and the last verdict passed (PASSED or WARN): the gate verified it."""
    unsigned: int
    unknown: int
    verdicts: dict[str, int]
    """Images by their last verdict; `none`: never judged."""
    findings_by_severity: dict[str, int] | None
    """Findings by severity over every image's last verdict, worst first; None: no image's
    last verdict has findings in the ledger (none judged with a scan report)."""
    findings_images: int = 0
    """Images whose last verdict read a scan report (the findings are theirs)."""
    findings_by_team: tuple[SeverityCounts, ...] = ()
    findings_by_repository: tuple[SeverityCounts, ...] = ()
    """The top N repositories, worst first (most critical, then high, …)."""
    past_max_scan_age: tuple[ImageRow, ...]
    quarantines: tuple[QuarantineRow, ...]


class HygieneSection(_Frozen):
    latest_in_use: tuple[ImageRow, ...]
    non_semver_tags: int
    non_semver_examples: tuple[str, ...]
    largest: tuple[ImageRow, ...]
    base_images: dict[str, int]


class PulledImage(_Frozen):
    repository: str
    digest: str
    team: str | None = None
    tags: tuple[str, ...] = ()
    pulls: int
    """Pulls the ledger recorded (since its tracking began)."""
    last_pulled: datetime | None
    principals: int
    """How many principals pulled it ("" — unnamed — counts as one)."""


class PullGroup(_Frozen):
    name: str
    pulls: int
    images: int
    """Images with at least one recorded pull."""
    last_pulled: datetime | None = None


class PrincipalPulls(_Frozen):
    principal: str
    """Who pulled (an IAM role ARN, a service account, a user); "" when unnamed."""
    pulls: int
    images: int
    last_pulled: datetime
    repositories: tuple[PullGroup, ...]
    """The repositories it pulls most, top N."""


class UnknownPulls(_Frozen):
    """A repository with images whose "not pulled in N days" cannot be answered: the ledger
    has not tracked its pulls for N days (nor since those images were pushed)."""

    repository: str
    team: str | None = None
    images: int
    tracking_since: datetime | None
    """None: pull tracking never began for it."""


class PullsSection(_Frozen):
    stale_days: int
    registry_pull_times: bool
    tracked_repositories: int
    """Repositories whose pulls the ledger tracks."""
    total_pulls: int
    most_pulled: tuple[PulledImage, ...]
    """Top N images by recorded pulls."""
    by_team: tuple[PullGroup, ...]
    by_repository: tuple[PullGroup, ...]
    """Top N repositories by recorded pulls."""
    not_pulled: tuple[ImageRow, ...]
    """Not pulled within `stale_days` where the pull record covers them, top N oldest."""
    not_pulled_count: int
    unknown: tuple[UnknownPulls, ...]
    """Per repository, images whose pull state is unknown (tracking too recent): the top N
    repositories by such images."""
    unknown_count: int
    principals: tuple[PrincipalPulls, ...]
    """Top N principals by pulls, with the repositories each pulls."""


class TeamSummary(_Frozen):
    team: str
    images: int
    bytes: int
    repositories: int
    quarantined: int
    unsigned: int


class Report(_Frozen):
    registry: str
    generated_at: datetime
    images: int
    repositories: int
    teams: tuple[TeamSummary, ...]
    storage: StorageSection
    age: AgeSection
    security: SecuritySection
    hygiene: HygieneSection
    pulls: PullsSection | None = None
    """None: the report was made from an inventory without the access stream's data."""
    retention_history: tuple[RetentionRun, ...]
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """What the ledger keeps of this report for the next one's trends: small, JSON."""
        return {
            "registry": self.registry,
            "at": self.generated_at.isoformat(),
            "images": self.images,
            "bytes": self.storage.unique_bytes,
            "by_team": {g.name: g.bytes for g in self.storage.by_team},
            "by_repository": {g.name: g.bytes for g in self.storage.by_repository},
            "findings": self.security.findings_by_severity,
        }
