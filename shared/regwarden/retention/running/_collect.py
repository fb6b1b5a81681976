"""From a registry listing to the planner's records: the edge where listings meet the core.

`records_from_listing` is pure (listing + ledger times → records and warnings);
`collect_records` adds the I/O (the provider's `list_images`, the ledger's times) and
reports how long the listing and the conversion took, separately.

What a listing does not say directly, and how it is filled in:
- **Signatures, attestations, SBOMs.** cosign's tag schema (`sha256-<hex>.sig|.att|.sbom`)
  is recognised by the planner from the tags. The OCI 1.1 referrers tag schema
  (`sha256-<hex>`, an index listing the subject's referrers, what registries without the
  referrers API hold) becomes a record whose subject is that digest and whose children are
  the referrers; the referrer manifests, which carry no tag, get records of their own with
  the same subject, so they follow their subject.
- **Index children.** Distribution lists tagged manifests only, so the untagged platform
  manifests of a listed index are added from the index (they follow it). ECR lists them.
- **Referrers a listing cannot show.** Registries with the OCI 1.1 referrers API (Harbor
  ≥ 2.8, zot) keep referrers untagged and without a tag-schema index; for a generic OCI
  registry whose data plane has the API, each listed manifest's referrers (and theirs,
  one level) are read from it and become records with that subject (`_referrers`); so
  are those of digests the ledger saw that are no longer listed, when the subject is
  gone (orphans). The probe for the API is one request per client, so distribution 2.8
  pays one per run.
- **Referrers a listing shows without their subject.** ECR lists OCI 1.1 referrers
  (cosign bundles, Notation signatures, SBOMs) as untagged artifacts and does not say
  whose they are. Treated as untagged images, an `untagged` rule would delete the
  signatures of kept images; so the manifest of every untagged non-image artifact is read
  to learn its subject (one lookup each; none when there are no such artifacts).
- **Untagged manifests a tag listing cannot show.** On a registry without a manifest
  listing (no `CAP_MANIFEST_LISTING`: the Distribution API lists tags only), the digests
  the ledger saw pushed (by digest, or left behind by an overwritten tag) that the
  listing does not show are read from the registry, one request each, and those still
  there are added, untagged (`_ledger_digests`). ECR lists every manifest itself.
- **Times.** Registries that keep no push or pull times (distribution) get the ledger's
  first-seen and last-pulled times from registry events (a digest only the tag history
  names: its first sighting there). The image config's `created` is kept on the record;
  the planner ages by it only with `ageFrom: created`. Otherwise the age is unknown.
- **How far back pulls go.** The ledger records when it began tracking a repository's
  pulls (`pull_tracking_since`); the plan judges "not pulled" only where tracking covers
  the question (`PullTracking`): a registry that keeps pull times itself (ECR,
  `CAP_PULL_TIMES`) covers them from its own start; elsewhere a repository the ledger
  never tracked has unknown pull state, whatever pulls were recorded. Pull counts are
  the sums of the ledger's pull tallies (no registry keeps counts).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from ...errors import NotFound
from ..planning import NO_PULL_TRACKING, ImageRecord, PullTracking, to_epoch
from ._ledger_digests import known_digests, ledger_manifests
from ._referrers import INDEX_TYPES, find_referrers, tag_schema_subject

if TYPE_CHECKING:
    from ...oci import RegistryClient
    from ...providers import ListedImage, Registry
    from ...store import PullTally

__all__ = ["Collected", "TimesLedger", "collect_records", "records_from_listing"]

_IMAGE_CONFIG_SUFFIXES = ("image.config.v1+json", "container.image.v1+json")


class TimesLedger(Protocol):
    """The ledger methods `collect_records` uses (every `store.Ledger` has them)."""

    def image_times(
        self, registry: str, repository: str
    ) -> dict[str, tuple[datetime, datetime | None]]: ...

    def tag_history(self, registry: str, repository: str) -> list[tuple[str, str, datetime]]: ...

    def pull_tallies(self, registry: str, repository: str) -> list[PullTally]: ...

    def pull_tracking_since(self, registry: str, repository: str) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Collected:
    """The records of one repository, with notes for the plan and how long it took."""

    repository: str
    records: list[ImageRecord]
    warnings: tuple[str, ...]
    listing_s: float
    """Registry (and ledger) I/O: listing manifests, reading configs."""
    build_s: float
    """Turning the listing into records (CPU only)."""
    locked: frozenset[str] = frozenset()
    """Digests the registry refuses to delete (`ListedImage.locked`): never planned for
    deletion, and named in the plan as locked on the registry."""
    pull_tracking: PullTracking = NO_PULL_TRACKING
    """How far back the records' pull data goes (see the module docstring)."""


def _newest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def records_from_listing(
    listing: Sequence[ListedImage],
    *,
    times: Mapping[str, tuple[datetime, datetime | None]] | None = None,
    pull_counts: Mapping[str, int] | None = None,
) -> tuple[list[ImageRecord], list[str]]:
    """Provider records (one per listed manifest) → planner records, plus warnings.

    `times` is the ledger's digest → (first seen, last pulled) for the repository; the
    first-seen time stands in for a push time the registry does not keep, and the later of
    the two pull times wins. `pull_counts`: digest → pulls the ledger counted, where it
    counts them (a digest it has none for: 0); None: no counts.
    """
    times = times or {}
    counts = pull_counts
    out: list[ImageRecord] = []
    listed = {item.digest for item in listing}
    added: set[str] = set()
    from_ledger = 0
    no_push = 0
    for item in listing:
        pushed = to_epoch(item.pushed)
        last_pulled = to_epoch(item.last_pulled)
        seen = times.get(item.digest)
        if pushed is None:
            no_push += 1
            if seen is not None:
                pushed = to_epoch(seen[0])
                from_ledger += 1
        if seen is not None and seen[1] is not None:
            last_pulled = _newest(last_pulled, to_epoch(seen[1]))
        # Where the registry keeps push times, `created` is the push time again; only a
        # config's own `created` is worth keeping as the fallback age.
        created = to_epoch(item.created) if item.pushed is None else None
        subject = item.subject
        referrers_of = None if subject is not None else tag_schema_subject(item)
        if referrers_of is not None:
            subject = referrers_of
        out.append(
            ImageRecord(
                item.digest,
                item.tags,
                pushed,
                last_pulled,
                int(item.size or 0),
                item.media_type,
                item.children,
                subject,
                created,
                None if counts is None else counts.get(item.digest, 0),
            )
        )
        # Children the listing does not show (distribution lists tagged manifests only).
        for child in item.children:
            if child in listed or child in added or child == item.digest:
                continue
            added.add(child)
            child_seen = times.get(child)
            child_pushed = pushed
            if child_seen is not None and item.pushed is None:
                child_pushed = to_epoch(child_seen[0])
            out.append(
                ImageRecord(
                    child,
                    (),
                    child_pushed,
                    None if child_seen is None else to_epoch(child_seen[1]),
                    0,  # the index's size already counts its children
                    "",
                    (),
                    referrers_of,  # a referrers index lists referrers of its subject
                    created,
                    None if counts is None else counts.get(child, 0),
                )
            )
    warnings: list[str] = []
    if no_push and from_ledger:
        warnings.append(
            f"the registry keeps no push times: used the ledger's first-seen time for "
            f"{from_ledger} of {no_push} manifests"
        )
    if added:
        warnings.append(
            f"{len(added)} untagged manifests added from the indexes that list them "
            "(the registry lists tagged manifests only)"
        )
    return out, warnings


def _subject_unknown(item: ListedImage) -> bool:
    """An untagged artifact (not an image, not an index) whose subject the listing omits."""
    if item.tags or item.subject is not None or item.media_type in INDEX_TYPES:
        return False
    kind = item.artifact_type
    return bool(kind) and not str(kind).endswith(_IMAGE_CONFIG_SUFFIXES)


def _with_subjects(
    registry: Registry, repository: str, listing: Sequence[ListedImage], concurrency: int
) -> tuple[list[ListedImage], int]:
    """The listing with the subjects of untagged artifacts filled in from their manifests;
    an artifact deleted meanwhile is dropped. Other registry errors propagate."""
    unknown = [i for i, item in enumerate(listing) if _subject_unknown(item)]
    if not unknown:
        return list(listing), 0

    def look(i: int) -> tuple[int, ListedImage | None]:
        try:
            found = registry.image_details(repository, listing[i].digest).record
        except NotFound:
            return i, None
        return i, replace(listing[i], subject=found.subject)

    out: list[ListedImage | None] = list(listing)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for i, item in pool.map(look, unknown):
            out[i] = item
    return [item for item in out if item is not None], len(unknown)


def _referrers_client(registry: Registry) -> RegistryClient | None:
    """The OCI data plane to ask the referrers API, for registries declaring
    `referrers-api` (ECR lists its referrers itself); None for a registry without one."""
    from ...providers import CAP_REFERRERS_API

    if CAP_REFERRERS_API not in registry.capabilities:
        return None
    return registry.data_plane()


def collect_records(
    registry: Registry,
    repository: str,
    *,
    ledger: TimesLedger | None = None,
    registry_name: str | None = None,
    concurrency: int = 4,
) -> Collected:
    """List one repository and build its records. `registry_name` is the ledger's key for
    the registry (what events name it: the reference's registry); default `registry.host`.

    On a registry without a manifest listing, the untagged manifests the ledger knows are
    added (see `_ledger_digests`); on a registry declaring `referrers-api`,
    referrers the tag listing cannot show are added (see `_referrers`); the probe for the
    API costs one request per client."""
    from ...providers import CAP_MANIFEST_LISTING

    t0 = time.perf_counter()
    listing, looked_up = _with_subjects(
        registry, repository, registry.list_images(repository), concurrency
    )
    name = registry_name or registry.host
    times = ledger.image_times(name, repository) if ledger is not None else None
    tracking, counts = _pull_data(registry, ledger, name, repository)
    from_ledger = None
    if ledger is not None and CAP_MANIFEST_LISTING not in registry.capabilities:
        history = ledger.tag_history(name, repository)
        times = known_digests(times or {}, history)
        shown = {item.digest for item in listing}
        shown.update(c for item in listing for c in item.children)
        from_ledger = ledger_manifests(
            registry, repository, times, history, shown, concurrency=concurrency
        )
        listing = [*listing, *from_ledger.listing]
    client = _referrers_client(registry)
    found = (
        find_referrers(
            client,
            repository,
            listing,
            ledger_digests=sorted(times, key=lambda d: times[d][0], reverse=True) if times else (),
            concurrency=concurrency,
        )
        if client is not None
        else None
    )
    if found is not None:
        listing = [*listing, *found.listing]
    listing_s = time.perf_counter() - t0
    c0 = time.process_time()
    records, warnings = records_from_listing(listing, times=times, pull_counts=counts)
    build_s = time.process_time() - c0
    if from_ledger is not None and from_ledger.checked:
        warnings.append(from_ledger.note())
    if looked_up:
        warnings.append(
            f"read the manifests of {looked_up} untagged artifacts to learn their subjects "
            "(the registry's listing does not say)"
        )
    if found is not None:
        warnings.append(found.note())
    return Collected(
        repository=repository,
        records=records,
        warnings=tuple(warnings),
        listing_s=listing_s,
        build_s=build_s,
        locked=frozenset(item.digest for item in listing if item.locked),
        pull_tracking=tracking,
    )


def _pull_data(
    registry: Registry, ledger: TimesLedger | None, name: str, repository: str
) -> tuple[PullTracking, dict[str, int] | None]:
    """How far back the repository's pull data goes, and the ledger's pull counts by digest
    (None when it has neither counts nor a tracking record: no counts to judge by)."""
    from ...providers import CAP_PULL_TIMES

    registry_times = CAP_PULL_TIMES in registry.capabilities
    if ledger is None:
        return PullTracking(None, registry_times), None
    began = ledger.pull_tracking_since(name, repository)
    tallies = ledger.pull_tallies(name, repository)
    tracking = PullTracking(to_epoch(began), registry_times)
    if began is None and not tallies:
        return tracking, None
    counts: dict[str, int] = {}
    for t in tallies:
        counts[t.digest] = counts.get(t.digest, 0) + t.count
    return tracking, counts
