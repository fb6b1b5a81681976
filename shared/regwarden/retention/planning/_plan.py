"""The result of planning: one decision per digest, with the rule and reason behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = ["Decision", "GuardTrip", "RegistryPlan", "RepositoryPlan"]

Role = Literal["image", "child", "referrer", "orphan"]
"""`image`: judged by the rules (indexes included). `child`: an untagged manifest of an
index in the repository; it follows its index. `referrer`: a signature, attestation or
SBOM whose subject is in the repository; it follows its subject. `orphan`: a referrer
whose subject is not in the repository."""


class Decision(NamedTuple):
    """What happens to one digest and why. `rule` is the policy key that decided it
    (`mostRecent`, `untagged`, …) or a protection (`inUse`, `locked`, `quarantined`,
    `childOfKept`, `referrerOfKept`, `subjectOfKept`, `childOfDeleted`,
    `referrerOfDeleted`, `guard`, `default`, or `ageUnknown`: an age rule would have judged
    the image but its age is not known)."""

    digest: str
    action: Literal["keep", "delete"]
    rule: str
    reason: str
    tags: tuple[str, ...]
    size: int
    time: float | None
    """The age anchor, epoch seconds: the push (or ledger first-seen) time; with
    `ageFrom: created`, the config's `created` where known. None: unknown."""
    role: Role


@dataclass(frozen=True, slots=True)
class GuardTrip:
    """A plan selected more than a guard allows, so it deletes nothing."""

    scope: Literal["repository", "run"]
    selected: int
    population: int
    limit: int
    """The number of deletions the guard allowed."""
    guard: str
    """`maxDeletes 100`, `maxShare 0.5` or `run maxDeletes 1000`."""
    bytes: int
    """What the plan would have freed."""

    @property
    def message(self) -> str:
        return (
            f"guard tripped ({self.guard}): {self.selected} of {self.population} selected for "
            f"deletion, limit {self.limit}; nothing will be deleted"
        )


@dataclass(frozen=True, slots=True)
class RepositoryPlan:
    """Decisions for every digest of one repository, newest first (ties by digest)."""

    repository: str
    decisions: tuple[Decision, ...]
    warnings: tuple[str, ...] = ()
    trip: GuardTrip | None = None
    delete_order: tuple[str, ...] = ()
    """The digests to delete, each after everything that refers to it (referrers before
    their subject, an index before its children), as registries require."""
    images_kept: int = 0
    images_deleted: int = 0
    bytes_kept: int = 0
    bytes_freed: int = 0
    """Sum of the manifests' reported sizes; shared layers mean a registry's garbage
    collection may free less."""

    @property
    def tripped(self) -> bool:
        return self.trip is not None

    @property
    def deletions(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action == "delete")

    def decision(self, digest: str) -> Decision:
        for d in self.decisions:
            if d.digest == digest:
                return d
        raise KeyError(f"got digest {digest}, expected one of {len(self.decisions)} in the plan")


@dataclass(frozen=True, slots=True)
class RegistryPlan:
    """Independent repository plans (sorted by repository) plus a run-wide guard."""

    plans: tuple[RepositoryPlan, ...]
    skipped: tuple[str, ...] = ()
    """Repositories that no retention rules apply to."""
    trip: GuardTrip | None = None

    @property
    def tripped(self) -> bool:
        return self.trip is not None or any(p.tripped for p in self.plans)

    @property
    def images_kept(self) -> int:
        return sum(p.images_kept for p in self.plans)

    @property
    def images_deleted(self) -> int:
        return sum(p.images_deleted for p in self.plans)

    @property
    def bytes_kept(self) -> int:
        return sum(p.bytes_kept for p in self.plans)

    @property
    def bytes_freed(self) -> int:
        return sum(p.bytes_freed for p in self.plans)

    def plan(self, repository: str) -> RepositoryPlan:
        for p in self.plans:
            if p.repository == repository:
                return p
        valid = ", ".join(p.repository for p in self.plans[:10])
        raise KeyError(f"got repository {repository!r}, expected one of: {valid}")
