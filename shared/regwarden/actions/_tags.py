"""Which tags a quarantine takes away, and where a tag goes back to.

Both come from facts: the tags are what the registry holds for the digest now (the ledger
only knows the pushes regwarden saw), and a roll-back target is a digest the tag pointed at
before, whose last verdict was PASSED and which the registry still has.
"""

from __future__ import annotations

from ..providers import Registry
from ..quarantine_names import is_quarantine_tag
from ..reference import ImageRef
from ..store import Ledger


def current_tags(
    registry: Registry, image: ImageRef, given: tuple[str, ...]
) -> tuple[tuple[str, ...], list[str]]:
    """(deployable tags of `image` now, notes): every tag the registry holds for the digest,
    plus each tag the caller named that the registry does not list for it, unless that tag
    now names another digest (taking it away would hit someone else's image)."""
    assert image.digest is not None
    held = set(registry.tags_of(image.repository, image.digest))
    notes: list[str] = []
    for tag in sorted(set(given) - held):
        if is_quarantine_tag(tag):
            continue
        now = registry.resolve(image.repository, tag)
        if now not in (None, image.digest):
            notes.append(f"tag {tag!r} now points at {now}; left alone")
            continue
        # absent now (removed, or a listing that lags): kept, so release restores it
        held.add(tag)
    return tuple(sorted(t for t in held if not is_quarantine_tag(t))), notes


def rollback_targets(
    registry: Registry, ledger: Ledger, image: ImageRef, tags: tuple[str, ...]
) -> tuple[dict[str, str], list[str]]:
    """tag → the most recent earlier digest that PASSED and still exists; notes say why
    each candidate passed over was skipped, and why a tag has no target."""
    assert image.digest is not None
    targets: dict[str, str] = {}
    notes: list[str] = []
    for tag in tags:
        history = ledger.tag_digests(image.registry, image.repository, tag)
        # newest first; a digest the tag named twice counts once
        candidates = [d for d in dict.fromkeys(reversed(history)) if d != image.digest]
        if not candidates:
            notes.append(f"tag {tag!r}: no earlier digest known; not rolled back")
            continue
        for digest in candidates:
            verdict = ledger.last_verdict(image.registry, image.repository, digest)
            if verdict != "PASSED":
                notes.append(f"tag {tag!r}: skipped {digest}: it is {verdict or 'unverified'}")
                continue
            if registry.resolve(image.repository, digest) is None:
                notes.append(f"tag {tag!r}: skipped {digest}: PASSED but gone from the registry")
                continue
            targets[tag] = digest
            break
        else:
            notes.append(f"tag {tag!r}: no earlier PASSED digest still exists; not rolled back")
    return targets, notes
