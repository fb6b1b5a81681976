"""Referrers a tag listing cannot show, read through the OCI 1.1 referrers API.

Registries with the API (Harbor ≥ 2.8, zot, distribution 3) store signatures, attestations
and SBOMs pushed by digest: no tag, and no `sha256-<hex>` tag-schema index either. A
listing built from `tags/list` never sees them, so deleting their subject would leave them
behind and the plan could not explain them. Here, for an OCI registry whose data plane has
the API, each listed manifest that is not itself a referrer (images, indexes and the
children of listed indexes) is asked for its referrers, and so is each referrer found
(one level: a signature on an SBOM). The referrers become records whose `subject` is the
manifest asked about, so the planner makes them follow it.

Orphans need a subject digest to ask about, and a deleted subject is no longer listed.
With a ledger, the digests it saw pushed to the repository that the listing no longer
shows are asked too; a referrer of one that the registry confirms is gone (`HEAD` 404) is
an orphan (its subject is not in the repository); one whose subject still exists untagged
is left alone, as before.

Cost: at most `MAX_LEDGER_ASKED` unlisted ledger digests a run, the most recently first
seen. Whether the registry has the API is probed once per client (`RegistryClient.
supports_referrers_api`), so a registry without it (distribution 2.8, where the tag schema
already covers referrers) pays one request per run; with the API, one request per listed
manifest, per unlisted ledger digest and per referrer found, `concurrency` at a time.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ...errors import NotFound
from ..planning import cosign_subject

MAX_LEDGER_ASKED = 1000
"""Unlisted digests from the ledger asked about per repository and run (newest first)."""

if TYPE_CHECKING:
    from ...oci import Descriptor, RegistryClient
    from ...providers import ListedImage

__all__ = [
    "INDEX_TYPES",
    "Referrers",
    "find_referrers",
    "referrer_listing",
    "subjects_to_ask",
    "tag_schema_subject",
]

#: The OCI annotation for when an artifact was made (what cosign and oras set).
CREATED_ANNOTATION = "org.opencontainers.image.created"
_REFERRERS_TAG = re.compile(r"(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})")
INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)


@dataclass(frozen=True, slots=True)
class Referrers:
    """What the referrers API added to one repository's listing."""

    listing: tuple[ListedImage, ...]
    """One record per referrer not already listed, `subject` set, no tags."""
    asked: int
    """Manifests whose referrers were asked for (listed ones and referrers found)."""
    orphans: int
    """Referrers of subjects the registry no longer holds (found through the ledger)."""
    ledger_asked: int
    """Digests the ledger knows that the listing does not show, asked about too."""

    def note(self) -> str:
        """The line the plan shows for this repository."""
        text = (
            f"listed the referrers of {self.asked} manifests through the referrers API "
            f"(the tag listing does not show them): {len(self.listing)} found"
        )
        if self.ledger_asked:
            text += (
                f"; asked about {self.ledger_asked} digests the ledger saw that are no longer "
                f"listed: {self.orphans} orphaned referrers"
            )
        return text


def tag_schema_subject(item: ListedImage) -> str | None:
    """The subject of an OCI 1.1 referrers tag-schema index (`sha256-<hex>` tag only)."""
    if item.media_type not in INDEX_TYPES or not item.tags:
        return None
    subject: str | None = None
    for tag in item.tags:
        m = _REFERRERS_TAG.fullmatch(tag)
        if m is None:
            return None
        subject = subject or f"{m.group(1)}:{m.group(2)}"
    return subject


def _is_referrer(item: ListedImage) -> bool:
    """A manifest that belongs to another: it names a subject, carries only cosign
    `sha256-<hex>.sig|.att|.sbom` tags, or is a referrers tag-schema index."""
    return (
        item.subject is not None
        or cosign_subject(item.tags) is not None
        or tag_schema_subject(item) is not None
    )


def subjects_to_ask(listing: Sequence[ListedImage]) -> list[str]:
    """The digests whose referrers the listing cannot show: every listed manifest that is
    not itself a referrer, then the children of listed indexes; each once, in order."""
    out: dict[str, None] = {}
    for item in listing:
        if not _is_referrer(item):
            out.setdefault(item.digest, None)
    for item in listing:
        if not _is_referrer(item):
            for child in item.children:
                out.setdefault(child, None)
    return list(out)


def _created(descriptor: Descriptor) -> datetime | None:
    text = descriptor.annotations.get(CREATED_ANNOTATION)
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None  # an unreadable annotation is no age; the record follows its subject
    return when if when.tzinfo is not None else None


def referrer_listing(
    repository: str,
    found: Iterable[tuple[str, Sequence[Descriptor]]],
    known: Collection[str],
) -> list[ListedImage]:
    """Records for referrers not in `known` (digests already listed or added), as
    (subject, referrers) pairs give them: no tags, the descriptor's media type, size and
    artifact type, `created` from the `org.opencontainers.image.created` annotation. A
    digest is added once (the first subject naming it wins); a manifest naming itself is
    skipped. Pure."""
    from ...providers import ListedImage

    seen: set[str] = set()
    out: list[ListedImage] = []
    for subject, descriptors in found:
        for d in descriptors:
            digest = d.digest
            if digest == subject or digest in known or digest in seen:
                continue
            seen.add(digest)
            out.append(
                ListedImage(
                    repository=repository,
                    digest=digest,
                    media_type=d.media_type,
                    tags=(),
                    size=d.size,
                    created=_created(d),
                    subject=subject,
                    artifact_type=d.artifact_type,
                )
            )
    return out


def find_referrers(
    client: RegistryClient,
    repository: str,
    listing: Sequence[ListedImage],
    *,
    ledger_digests: Iterable[str] = (),
    concurrency: int = 4,
) -> Referrers | None:
    """The referrers `listing` does not show, or None when the registry has no referrers
    API (decided by the client's one probe; the tag schema covers those registries).

    A manifest deleted while we ask (NotFound) has no referrers; other registry errors
    propagate, so the run plans nothing rather than plan without them.
    """
    subjects = subjects_to_ask(listing)
    if not subjects or not client.supports_referrers_api(repository, subjects[0]):
        return None
    known: set[str] = {item.digest for item in listing}
    known.update(c for item in listing for c in item.children)

    def ask(digest: str) -> tuple[str, list[Descriptor]]:
        try:
            return digest, client.referrers(repository, digest)
        except NotFound:
            return digest, []

    workers = max(1, concurrency)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        first = referrer_listing(repository, pool.map(ask, subjects), known)
        known.update(r.digest for r in first)

        # subjects that are gone: digests the ledger saw that the listing no longer shows,
        # newest first and at most MAX_LEDGER_ASKED a run (the ledger never forgets; a run
        # catches an orphan soon after its subject goes, so old digests rarely still pay)
        unlisted = [d for d in dict.fromkeys(ledger_digests) if d not in known]
        unlisted = unlisted[:MAX_LEDGER_ASKED]
        orphaned: list[ListedImage] = []
        if unlisted:
            answers = [(d, refs) for d, refs in pool.map(ask, unlisted) if refs]
            gone = list(pool.map(lambda a: client.head_manifest(repository, a[0]), answers))
            orphaned = referrer_listing(
                repository,
                (a for a, head in zip(answers, gone, strict=True) if head is None),
                known,
            )
            known.update(r.digest for r in orphaned)

        # one level down: referrers of the referrers found (a signature on an SBOM)
        found = [*first, *orphaned]
        second = referrer_listing(repository, pool.map(ask, [r.digest for r in found]), known)
    return Referrers(
        listing=(*found, *second),
        asked=len(subjects) + len(found),
        orphans=len(orphaned),
        ledger_asked=len(unlisted),
    )
