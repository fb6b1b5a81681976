"""Manifests a tag listing cannot show, found through the ledger.

A registry without a manifest listing (the Distribution API: `tags/list` only; no
`CAP_MANIFEST_LISTING`) never shows an untagged manifest: one pushed by digest, or the
old digest a tag pointed at before it was overwritten. Without them an `untagged` rule
does nothing there, and an orphan's subject cannot be seen to be gone.

The ledger saw both from registry events: `image_times` holds every digest pushed to the
repository, `tag_history` every tag → digest it saw. Each digest the ledger knows that the
listing does not show is read from the registry (one manifest GET each, `concurrency` at a
time): gone (404) means it is no longer there and is left out; present, it becomes a
record, untagged, with what its manifest says. A GET rather than a HEAD, for the same one
request: a HEAD cannot tell a signature (a manifest with a `subject`) or an index (its
children) from an image, and an `untagged` rule must never delete a kept image's
signature or the platform images of an index it keeps. Its age is the ledger's first-seen
time; no config is read, so `ageFrom: created` does not apply to these.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ...errors import NotFound

if TYPE_CHECKING:
    from ...oci import Manifest
    from ...providers import ListedImage, Registry

__all__ = ["FromLedger", "known_digests", "ledger_manifests", "listed_from_manifest"]


@dataclass(frozen=True, slots=True)
class FromLedger:
    """What the ledger added to one repository's listing."""

    listing: tuple[ListedImage, ...]
    """One record per manifest the ledger knows that the registry still holds."""
    checked: int
    """Digests the ledger knows that the listing did not show, read from the registry."""
    overwritten: int
    """Of those added, how many a tag once pointed at (left behind when it moved)."""

    @property
    def gone(self) -> int:
        return self.checked - len(self.listing)

    def note(self) -> str:
        """The line the plan shows for this repository."""
        added = len(self.listing)
        return (
            f"the registry lists tagged manifests only: read {self.checked} digests the ledger "
            f"saw pushed that the listing does not show; {added} still there were added "
            f"({self.overwritten} left behind by an overwritten tag, "
            f"{added - self.overwritten} pushed by digest), {self.gone} no longer there"
        )


def known_digests(
    times: Mapping[str, tuple[datetime, datetime | None]],
    history: Sequence[tuple[str, str, datetime]],
) -> dict[str, tuple[datetime, datetime | None]]:
    """The ledger's digest → (first seen, last pulled), with digests only the tag history
    names added at their first sighting. Pure."""
    out = dict(times)
    for _, digest, seen in history:
        known = out.get(digest)
        if known is None or seen < known[0]:
            out[digest] = (seen, None if known is None else known[1])
    return out


def listed_from_manifest(repository: str, manifest: Manifest) -> ListedImage:
    """A listing record for a manifest read by digest: untagged, no times (the ledger's
    come later), children of an index, the subject a referrer names. Pure."""
    from ...providers import ListedImage

    data = manifest.data
    config = data.get("config")
    config = config if isinstance(config, dict) else {}
    # config and layers: what an image costs; an index's platform images count their own
    size = int(config.get("size") or 0)
    for entry in data.get("layers") or []:
        if isinstance(entry, dict):
            size += int(entry.get("size") or 0)
    children: tuple[str, ...] = ()
    if manifest.is_index:
        children = tuple(
            str(e["digest"])
            for e in data.get("manifests") or []
            if isinstance(e, dict) and "digest" in e
        )
    subject = data.get("subject")
    return ListedImage(
        repository=repository,
        digest=manifest.digest,
        media_type=manifest.media_type,
        tags=(),
        size=size,
        children=children,
        subject=str(subject["digest"]) if isinstance(subject, dict) else None,
        artifact_type=data.get("artifactType") or config.get("mediaType"),
    )


def _reader(registry: Registry, repository: str) -> Callable[[str], ListedImage | None]:
    """One request per digest: the data plane's manifest GET; a registry without a data
    plane (a test double) answers through `image_details`. None: the registry no longer
    holds it. Other registry errors propagate: the run plans nothing rather than plan on a
    partial view."""
    try:
        client = registry.data_plane()
    except NotImplementedError:

        def details(digest: str) -> ListedImage | None:
            try:
                return registry.image_details(repository, digest).record
            except NotFound:
                return None

        return details

    def read(digest: str) -> ListedImage | None:
        try:
            return listed_from_manifest(repository, client.get_manifest(repository, digest))
        except NotFound:
            return None

    return read


def ledger_manifests(
    registry: Registry,
    repository: str,
    known: Mapping[str, tuple[datetime, datetime | None]],
    history: Sequence[tuple[str, str, datetime]],
    shown: Collection[str],
    *,
    concurrency: int = 4,
) -> FromLedger:
    """Records for the digests in `known` that `shown` (the listing and the children of
    listed indexes) lacks and the registry still holds, newest first seen first."""
    unlisted = sorted((d for d in known if d not in shown), key=lambda d: known[d][0])
    unlisted.reverse()
    if not unlisted:
        return FromLedger((), 0, 0)
    read = _reader(registry, repository)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        found = [item for item in pool.map(read, unlisted) if item is not None]
    once_tagged = {digest for _, digest, _ in history}
    return FromLedger(
        listing=tuple(found),
        checked=len(unlisted),
        overwritten=sum(1 for item in found if item.digest in once_tagged),
    )
