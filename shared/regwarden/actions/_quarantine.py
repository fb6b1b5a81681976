"""Quarantine and release, resumable and audited.

`move`  copies the image to the quarantine repository, then deletes it from the source.
        The ledger records the intent before the first write; a retry resumes from the
        last completed step, never starts over and never leaves a half-move unreported.
`retag` adds `quarantined-<short digest>` (keeping the image reachable by digest), then
        removes or rolls back each deployable tag.
`lock`  is ACR's read/write lock on the manifest; it lives in the ACR provider.

Tag roll-back: when the push moved tag T from digest P to the quarantined digest, T goes
back to P if P is still present and its last verdict was PASSED. If P is unknown, nothing
is guessed; the outcome says so.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime

from ..errors import NotFound, UsageError
from ..oci import Manifest
from ..providers import Registry
from ..reference import ImageRef, short_digest
from ..store import Ledger, QuarantineRecord

QUARANTINE_TAG_PREFIX = "quarantined-"
STRATEGIES = ("move", "retag", "lock")


@dataclass(frozen=True, slots=True)
class QuarantineOutcome:
    strategy: str
    location: str
    """Repository the image now lives in."""
    removed_tags: tuple[str, ...]
    rolled_back: dict[str, str] = field(default_factory=dict)
    """tag → previous digest it was returned to."""
    notes: tuple[str, ...] = ()
    already_done: bool = False


def quarantine_tag(digest: str) -> str:
    return f"{QUARANTINE_TAG_PREFIX}{short_digest(digest)}"


def quarantine_repository(template: str, repository: str) -> str:
    return template.replace("{repository}", repository)


def _action_key(kind: str, image: ImageRef) -> str:
    return f"{kind}:{image.registry}/{image.repository}@{image.digest}"


def _rollback_targets(
    registry: Registry, ledger: Ledger, image: ImageRef, tags: tuple[str, ...]
) -> tuple[dict[str, str], list[str]]:
    """Tags whose previous digest is known, present and PASSED → that digest."""
    assert image.digest is not None
    targets: dict[str, str] = {}
    notes: list[str] = []
    for tag in tags:
        prev = ledger.previous_digest(image.registry, image.repository, tag, before=image.digest)
        if prev is None:
            notes.append(f"tag {tag!r}: no earlier digest known; not rolled back")
            continue
        verdict = ledger.last_verdict(image.registry, image.repository, prev)
        if verdict != "PASSED":
            notes.append(
                f"tag {tag!r}: previous digest {prev} is {verdict or 'unverified'}; not rolled back"
            )
            continue
        if registry.resolve(image.repository, prev) is None:
            notes.append(f"tag {tag!r}: previous digest {prev} is gone; not rolled back")
            continue
        targets[tag] = prev
    return targets, notes


def quarantine(
    registry: Registry,
    ledger: Ledger,
    *,
    image: ImageRef,
    tags: tuple[str, ...],
    strategy: str,
    repository_template: str,
    reason: str,
    now: datetime,
    rollback: bool = True,
    manifest: Manifest | None = None,
) -> QuarantineOutcome:
    """Quarantine `image` (by digest). Idempotent: a repeat call finishes or reports.
    `manifest`: the image's digest-verified manifest, if the caller read it already."""
    if image.digest is None:
        raise UsageError(f"quarantine needs a digest, got {image}")
    if strategy not in STRATEGIES:
        raise UsageError(
            f"unknown quarantine strategy {strategy!r}; valid: {', '.join(STRATEGIES)}"
        )
    if strategy == "lock":
        raise UsageError("quarantine strategy 'lock' needs a registry with manifest locks (ACR)")
    key = _action_key("quarantine", image)
    deployable = tuple(t for t in tags if not t.startswith(QUARANTINE_TAG_PREFIX))
    qrepo = (
        quarantine_repository(repository_template, image.repository)
        if strategy == "move"
        else image.repository
    )
    record = ledger.begin_action(
        key,
        registry=image.registry,
        repository=image.repository,
        digest=image.digest,
        kind="quarantine",
        reason=reason,
        state={"strategy": strategy, "step": "start", "tags": list(deployable), "location": qrepo},
        now=now,
    )
    if record.status == "done":
        return QuarantineOutcome(
            strategy,
            str(record.state["location"]),
            tuple(record.state["tags"]),
            dict(record.state.get("rolled_back", {})),
            already_done=True,
        )
    state = dict(record.state)
    deployable = tuple(state["tags"])  # the tags as first seen: a retry must not lose them
    targets, notes = (
        _rollback_targets(registry, ledger, image, deployable) if rollback else ({}, [])
    )

    def step(name: str) -> None:
        state["step"] = name
        ledger.finish_action(key, status="intent", state=state)

    ledger.record_quarantine(
        QuarantineRecord(
            registry=image.registry,
            repository=image.repository,
            digest=image.digest,
            strategy=strategy,
            location=qrepo,
            tags=deployable,
            reason=reason,
            quarantined_at=now,
            released_at=None,
        )
    )
    qtag = quarantine_tag(image.digest)
    if strategy == "move":
        if state["step"] == "start":
            registry.copy(image.repository, image.digest, qrepo, qtag, manifest=manifest)
            step("copied")
        if state["step"] == "copied":
            for tag, prev in targets.items():  # re-point first: no window without the tag
                registry.add_tag(image.repository, prev, tag)
            state["rolled_back"] = targets
            step("rolled-back")
        if state["step"] == "rolled-back":
            # NotFound: deleted by an earlier attempt whose acknowledgement was lost
            with contextlib.suppress(NotFound):
                registry.delete(image.repository, image.digest)
            step("deleted")
    else:  # retag
        if state["step"] == "start":
            registry.add_tag(image.repository, image.digest, qtag)
            step("tagged")
        if state["step"] == "tagged":
            for tag in deployable:
                if tag in targets:
                    registry.add_tag(image.repository, targets[tag], tag)
                else:
                    registry.remove_tag(image.repository, tag)
            state["rolled_back"] = targets
            step("untagged")
    ledger.finish_action(key, status="done", state=state)
    return QuarantineOutcome(strategy, qrepo, deployable, targets, tuple(notes))


def describe_state(ledger: Ledger, image: ImageRef) -> str:
    """Where a quarantine of `image` stands, in words, for an alert after retries ran out."""
    record = ledger.action(_action_key("quarantine", image))
    if record is None:
        return "no quarantine was started"
    step = record.state.get("step")
    loc = record.state.get("location")
    return {
        "start": f"nothing changed yet; the image is still in {image.repository}",
        "copied": f"copied to {loc} but still present (and deployable) in {image.repository}",
        "rolled-back": f"copied to {loc}, tags rolled back, still present in {image.repository}",
        "deleted": f"moved to {loc}",
        "tagged": f"tagged {quarantine_tag(image.digest or '')}; deployable tags still present",
        "untagged": "deployable tags removed",
    }.get(str(step), f"unknown step {step!r}")


@dataclass(frozen=True, slots=True)
class ReleaseOutcome:
    restored_tags: tuple[str, ...]
    skipped: tuple[str, ...]
    location: str


def release(
    registry: Registry,
    ledger: Ledger,
    *,
    image: ImageRef,
    reason: str,
    now: datetime,
) -> ReleaseOutcome:
    """Restore exactly what quarantine changed, from the ledger; audited."""
    if image.digest is None:
        raise UsageError(f"release needs a digest, got {image}", hint="use REPO@sha256:…")
    rec = ledger.quarantined(image.registry, image.repository, image.digest)
    if rec is None:
        raise UsageError(f"{image} is not quarantined according to the ledger")
    if rec.released_at is not None:
        return ReleaseOutcome((), (), rec.repository)
    key = _action_key("release", image) + f"#{rec.quarantined_at.isoformat()}"
    quarantine_state = ledger.action(_action_key("quarantine", image))
    rolled: dict[str, str] = dict(
        (quarantine_state.state if quarantine_state else {}).get("rolled_back", {})
    )
    ledger.begin_action(
        key,
        registry=image.registry,
        repository=image.repository,
        digest=image.digest,
        kind="release",
        reason=reason,
        state={"tags": list(rec.tags)},
        now=now,
    )
    qtag = quarantine_tag(image.digest)
    restored: list[str] = []
    skipped: list[str] = []
    if rec.strategy == "move":
        registry.copy(rec.location, image.digest, image.repository, None)
    for tag in rec.tags:
        if tag in rolled:
            # We moved this tag back to an older digest; only undo that if nobody moved it since.
            current = registry.resolve(image.repository, tag)
            if current not in (None, rolled[tag]):
                skipped.append(f"{tag} (now points at {current})")
                continue
        registry.add_tag(image.repository, image.digest, tag)
        restored.append(tag)
    if rec.strategy == "move":
        with contextlib.suppress(NotFound):
            registry.delete(rec.location, image.digest)
    else:
        with contextlib.suppress(NotFound):
            registry.remove_tag(image.repository, qtag)
    ledger.mark_released(image.registry, image.repository, image.digest, now=now)
    ledger.finish_action(key, status="done", state={"restored": restored, "skipped": skipped})
    return ReleaseOutcome(tuple(restored), tuple(skipped), image.repository)
