"""What must never be deleted, whatever the rules say. The caller gathers it (inventory of
running workloads, ACR locks, the quarantine ledger); this module only holds it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from ...reference import ImageRef
from ._records import to_epoch

__all__ = ["NO_PROTECTIONS", "Protections", "protections_from_refs"]


@dataclass(frozen=True, slots=True, eq=False)
class Protections:
    """Digests and tags one repository must keep.

    `in_use`: digests running somewhere (an index digest protects its children too).
    `in_use_tags`: tags of this repository that running workloads reference; the image
    carrying the tag right now is kept. `locked`: digests locked against deletion.
    `quarantined`: digest → when it was quarantined (datetime, epoch seconds or None when
    unknown); kept until released (dropped from the map by the caller) or, with a
    `quarantineExpired` rule, until it expires.
    """

    in_use: frozenset[str] = frozenset()
    in_use_tags: frozenset[str] = frozenset()
    locked: frozenset[str] = frozenset()
    quarantined: Mapping[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_use", frozenset(self.in_use))
        object.__setattr__(self, "in_use_tags", frozenset(self.in_use_tags))
        object.__setattr__(self, "locked", frozenset(self.locked))
        raw: Mapping[str, datetime | float | None] = self.quarantined
        object.__setattr__(
            self, "quarantined", MappingProxyType({d: to_epoch(t) for d, t in raw.items()})
        )

    def __bool__(self) -> bool:
        return bool(self.in_use or self.in_use_tags or self.locked or self.quarantined)

    def merge(self, other: Protections) -> Protections:
        """Both sets of protections; the later quarantine time wins when both know one."""
        quarantined = dict(self.quarantined)
        for digest, since in other.quarantined.items():
            mine = quarantined.get(digest)
            if digest not in quarantined or since is None:
                quarantined[digest] = since
            elif mine is not None:
                quarantined[digest] = max(mine, since)
        return Protections(
            in_use=self.in_use | other.in_use,
            in_use_tags=self.in_use_tags | other.in_use_tags,
            locked=self.locked | other.locked,
            quarantined=quarantined,
        )


NO_PROTECTIONS = Protections()


def protections_from_refs(
    refs: Iterable[str | ImageRef], *, registry: str | None = None
) -> dict[str, Protections]:
    """In-use references (`reg.io/team/api:1.2`, `team/api@sha256:…`) → protections per
    repository. A reference without tag or digest means `:latest`, as docker reads it; one
    with both is protected by digest. With `registry`, references to other registries are
    skipped. A reference that does not parse raises `InvalidReference`: a bad inventory
    entry must never silently drop a protection."""
    digests: dict[str, set[str]] = {}
    tags: dict[str, set[str]] = {}
    for ref in refs:
        parsed = ref if isinstance(ref, ImageRef) else ImageRef.parse(ref)
        if registry is not None and parsed.registry != registry:
            continue
        if parsed.digest:
            digests.setdefault(parsed.repository, set()).add(parsed.digest)
        else:
            tags.setdefault(parsed.repository, set()).add(parsed.tag or "latest")
    return {
        repo: Protections(
            in_use=frozenset(digests.get(repo, ())), in_use_tags=frozenset(tags.get(repo, ()))
        )
        for repo in sorted(digests.keys() | tags.keys())
    }
