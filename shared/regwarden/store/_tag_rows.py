"""What a ledger that keeps one row per (tag, digest) sighting derives from those rows —
shared by the DynamoDB and Firestore ledgers, whose rows differ only in how they are read
(`_tag_rows`) and in how a sighting's time is stored (ISO text or a datetime, both of
which order correctly)."""

from __future__ import annotations

from typing import Any


class TagRowQueries:
    """`previous_digest`, `tags_for` and `tag_digests` over `_tag_rows`."""

    def _tag_rows(self, registry: str, repository: str, tag: str | None) -> list[Any]:
        """(tag, digest, seen at) of the tag history, oldest first (`tag` None: every
        tag of the repository)."""
        raise NotImplementedError

    def previous_digest(
        self, registry: str, repository: str, tag: str, *, before: str
    ) -> str | None:
        """The digest `tag` pointed at before it moved to `before`, if regwarden saw it."""
        others = [r for r in self._tag_rows(registry, repository, tag) if r[1] != before]
        return str(others[-1][1]) if others else None

    def tags_for(self, registry: str, repository: str, digest: str) -> list[str]:
        """Tags whose most recent push (as regwarden saw it) was this digest."""
        return _latest_tags(self._tag_rows(registry, repository, None), digest)

    def tag_digests(self, registry: str, repository: str, tag: str) -> list[str]:
        """Every digest `tag` has pointed at, oldest first."""
        return [d for _, d, _ in self._tag_rows(registry, repository, tag)]

    def tags_for_push(
        self, registry: str, repository: str, digest: str, tag: str | None
    ) -> tuple[list[str], list[str]]:
        """`tags_for` and `tag_digests` from one read of the repository's rows (ordered as
        one tag's alone are: by time, then digest)."""
        rows = self._tag_rows(registry, repository, None)
        history = [d for t, d, _ in rows if t == tag] if tag is not None else []
        return _latest_tags(rows, digest), history


def _latest_tags(rows: list[Any], digest: str) -> list[str]:
    """The tags among `rows` (tag, digest, seen at) whose latest sighting is `digest`."""
    latest: dict[str, Any] = {}
    for tag, _, seen in rows:
        latest[tag] = max(latest.get(tag, seen), seen)
    return sorted({t for t, d, seen in rows if d == digest and seen == latest[t]})
