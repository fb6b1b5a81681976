"""Quarantine and release, resumable and audited, acting on the registry's current state.

`move`  copies the image to the quarantine repository, then deletes it from the source.
`retag` adds `quarantined-<short digest>` (keeping the image reachable by digest), then
        removes or rolls back each deployable tag.
`lock`  sets the registry's own locks on the manifest and, for an index, each manifest
        below it (ACR's writeEnabled/deleteEnabled, and readEnabled for FAILED): see
        `_lock`. A hold (`hold=True`, a PENDING verdict) leaves it readable; a later
        FAILED escalates the same action.

The tags taken away are every tag the registry holds for the digest at the start (read
from the provider: regwarden may never have seen the push that made them), plus the tags
the caller names that the registry does not list for it, unless such a tag now names
another digest. They are written to the ledger (the action's state and the quarantine
record) before the first registry write, so a resumed attempt and release use exactly
that list, however much of it an earlier attempt already removed.

An index is one unit. `move` copies it with its children (the copy carries them) and
deletes the index, then each child, from the source, except a child that another index
in the repository still lists or that has tags of its own: that one stays (the outcome's
notes say why). The children are recorded in the action's state with the tags, so a
resumed attempt and release know them without reading the moved index. Release copies
the index back (its missing children come with it) and deletes index and children from
the quarantine repository under the same rule. `retag` of an index needs nothing more:
tags name the index, never its children, so removing the index's tags leaves nothing
deployable by tag, while the children stay pullable by digest, as the index itself does.

Tag roll-back: a tag goes back to the most recent digest in its history (as the ledger
saw pushes) whose last verdict was PASSED and which the registry still has. Candidates
passed over are named in the notes with the reason; with none, nothing is guessed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import NotFound, UsageError
from ..oci import Manifest
from ..providers import Registry
from ..quarantine_names import quarantine_tag, render
from ..reference import ImageRef
from ..store import ActionRecord, Ledger, QuarantineRecord
from ._children import children_of, children_to_keep
from ._lock import describe_lock, escalate, lock, lockable, plan_lock, release_lock
from ._progress import Progress
from ._tags import current_tags, rollback_targets

STRATEGIES = ("move", "retag", "lock")

__all__ = [
    "STRATEGIES",
    "QuarantineOutcome",
    "ReleaseOutcome",
    "describe_state",
    "quarantine",
    "release",
]


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
    children: tuple[str, ...] = ()
    """An index's children (moved with it, except those in `kept_children`)."""
    kept_children: dict[str, str] = field(default_factory=dict)
    """child → why it stayed in the source repository."""


def action_key(kind: str, image: ImageRef) -> str:
    """The ledger key of `kind` ('quarantine', 'release') on `image` (by digest)."""
    return f"{kind}:{image.registry}/{image.repository}@{image.digest}"


_action_key = action_key


def recorded_outcome(state: Mapping[str, Any], *, already_done: bool) -> QuarantineOutcome:
    """What a quarantine did, as its ledger record's state says."""
    return QuarantineOutcome(
        str(state["strategy"]),
        str(state["location"]),
        tuple(state["tags"]),
        dict(state.get("rolled_back", {})),
        tuple(state.get("notes", ())),
        already_done=already_done,
        children=tuple(state.get("children", ())),
        kept_children=dict(state.get("kept_children", {})),
    )


def _start(
    registry: Registry,
    ledger: Ledger,
    key: str,
    *,
    image: ImageRef,
    tags: tuple[str, ...],
    strategy: str,
    qrepo: str,
    reason: str,
    now: datetime,
    manifest: Manifest | None,
    context: dict[str, Any] | None = None,
    looked: tuple[ActionRecord | None] | None = None,
) -> ActionRecord:
    """The action's record: an unfinished one as it stands, else a new intent whose state
    holds everything the writes will change (and the caller's `context`: the verdict and
    alert, so whoever resumes the intent can finish it without judging again). Everything
    here only reads the registry. `looked`: the record as the caller just read it (not read
    again: should another attempt have begun it since, `begin_action` returns theirs)."""
    existing = ledger.action(key) if looked is None else looked[0]
    if existing is not None:
        return existing
    assert image.digest is not None
    # A lock takes no tag away (plan_lock records none): the registry's tags go unread.
    deployable, notes = current_tags(registry, image, tags) if strategy != "lock" else ((), [])
    children = children_of(registry, image, manifest) if strategy == "move" else ()
    state: dict[str, Any] = {
        "strategy": strategy,
        "step": "start",
        "tags": list(deployable),
        "location": qrepo,
        "children": list(dict.fromkeys(children)),
        "notes": notes,
        **(context or {}),
    }
    return ledger.begin_action(
        key,
        registry=image.registry,
        repository=image.repository,
        digest=image.digest,
        kind="quarantine",
        reason=reason,
        state=state,
        now=now,
    )


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
    context: dict[str, Any] | None = None,
    hold: bool = False,
    looked: tuple[ActionRecord | None] | None = None,
) -> QuarantineOutcome:
    """Quarantine `image` (by digest). Idempotent: a repeat call finishes or reports, and
    an unfinished intent is resumed from its recorded state (the arguments are then only
    used if no intent exists). `tags`: the tags the caller knows for it (the registry's own
    are added). `manifest`: the image's digest-verified manifest, if the caller read it
    already. `context`: stored with a new intent (see `_start`). `hold`: a PENDING hold
    (`lock` only: the image stays readable); without it, a finished `lock` hold is
    escalated to a full lock, with `context` as its verdict and alert. `looked`: the
    action's record as the caller read it (`(None,)`: none), not read again — should
    another attempt have begun it since, `begin_action` returns theirs."""
    if image.digest is None:
        raise UsageError(f"quarantine needs a digest, got {image}")
    if strategy not in STRATEGIES:
        raise UsageError(
            f"unknown quarantine strategy {strategy!r}; valid: {', '.join(STRATEGIES)}"
        )
    key = _action_key("quarantine", image)
    if strategy == "lock":
        lockable(registry)  # refused before anything is read or recorded
        if looked is None:
            looked = (ledger.action(key),)
        if looked[0] is None:  # what the writes change, recorded before them
            planned = plan_lock(registry, image, manifest, hold=hold)
            context = {**(context or {}), **planned}
    qrepo = (
        render(repository_template, image.repository) if strategy == "move" else image.repository
    )
    record = _start(
        registry,
        ledger,
        key,
        image=image,
        tags=tags,
        strategy=strategy,
        qrepo=qrepo,
        reason=reason,
        now=now,
        manifest=manifest,
        context=context,
        looked=looked,
    )
    state = dict(record.state)
    if record.status == "done":
        if hold or state.get("strategy") != "lock" or not escalate(state, context):
            return recorded_outcome(record.state, already_done=True)
        ledger.finish_action(key, status="intent", state=state)  # resumable as any intent
    state.setdefault("notes", [])
    deployable = tuple(state["tags"])  # as first read: a retry must not lose them
    qrepo = str(state["location"])
    strategy = str(state["strategy"])
    reason = record.reason

    # noted, and written before the next registry write or with the finish (`_progress`)
    progress = Progress(state, lambda s: ledger.finish_action(key, status="intent", state=s))

    if "children" not in state:  # an intent recorded before children were
        moving = strategy == "move"
        state["children"] = list(children_of(registry, image, manifest)) if moving else []
        progress.note()
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

    def plan_rollback() -> dict[str, str]:
        """Roll-back targets, decided once and recorded before any tag moves."""
        if "rolled_back" not in state:
            targets, notes = (
                rollback_targets(registry, ledger, image, deployable) if rollback else ({}, [])
            )
            state["rolled_back"] = targets
            state["notes"] = [*state["notes"], *notes]
            progress.note()
        return dict(state["rolled_back"])

    with progress.recorded_on_error():
        qtag = quarantine_tag(image.digest)
        if strategy == "move":
            if state["step"] == "start":
                progress.before_write()
                registry.copy(image.repository, image.digest, qrepo, qtag, manifest=manifest)
                progress.note("copied")
            if state["step"] == "copied":
                for tag, prev in plan_rollback().items():  # re-point first: no window without it
                    progress.before_write()
                    registry.add_tag(image.repository, prev, tag)
                progress.note("rolled-back")
            if state["step"] == "rolled-back":
                progress.before_write()
                # NotFound: deleted by an earlier attempt whose acknowledgement was lost
                with contextlib.suppress(NotFound):
                    registry.delete(image.repository, image.digest)  # the index before its children
                progress.note("deleted")
            children = tuple(state["children"])
            if state["step"] == "deleted" and children:
                kept = children_to_keep(registry, image.repository, image.digest, children)
                state["kept_children"] = kept
                progress.note()
                for child in children:
                    if child not in kept:
                        progress.before_write()
                        with contextlib.suppress(NotFound):
                            registry.delete(image.repository, child)
                state["notes"] = [
                    *state["notes"],
                    *(f"child {c} stays in {image.repository}: {why}" for c, why in kept.items()),
                ]
                progress.note("children-deleted")
        elif strategy == "lock":
            lock(registry, image, progress, reason=reason)
        else:  # retag
            if state["step"] == "start":
                progress.before_write()
                registry.add_tag(image.repository, image.digest, qtag)
                progress.note("tagged")
            if state["step"] == "tagged":
                targets = plan_rollback()
                done = list(state.get("untagged", []))
                for tag in deployable:
                    if tag in done:
                        continue
                    progress.before_write()
                    if tag in targets:
                        registry.add_tag(image.repository, targets[tag], tag)
                    else:
                        # NotFound: removed by an earlier attempt, or absent from the start
                        with contextlib.suppress(NotFound):
                            registry.remove_tag(image.repository, tag)
                    done.append(tag)
                    state["untagged"] = done
                    progress.note()
                progress.note("untagged")
    ledger.finish_action(key, status="done", state=state)
    return recorded_outcome(state, already_done=False)


def describe_state(ledger: Ledger, image: ImageRef) -> str:
    """Where a quarantine of `image` stands, in words, for an alert after retries ran out."""
    record = ledger.action(_action_key("quarantine", image))
    if record is None:
        return "no quarantine was started"
    state = record.state
    if state.get("strategy") == "lock":
        return describe_lock(state)
    step = state.get("step")
    loc = state.get("location")
    repo = image.repository
    children = list(state.get("children", ()))
    kept = dict(state.get("kept_children", {}))
    with_children = f" with its {len(children)} children" if children else ""
    if step == "tagged":
        left = [t for t in state.get("tags", ()) if t not in state.get("untagged", ())]
        return f"tagged {quarantine_tag(image.digest or '')}; " + (
            f"deployable tags still present: {', '.join(left)}"
            if left
            else "deployable tags removed"
        )
    if step == "deleted" and children:
        return (
            f"index moved to {loc}{with_children}; the children may still be in {repo} "
            "(pullable by digest, not by tag)"
        )
    if step == "rolled-back":
        rolled = dict(state.get("rolled_back", {}))
        left = [t for t in state.get("tags", ()) if t not in rolled]
        return (
            f"copied to {loc}{with_children}"
            + (f", tags rolled back ({', '.join(sorted(rolled))})" if rolled else "")
            + f", still present in {repo}"
            + (f" and deployable as {', '.join(left)}" if left else "")
        )
    if step == "children-deleted":
        stays = "".join(f"; child {c} stays in {repo} ({why})" for c, why in kept.items())
        return f"moved to {loc}{with_children}{stays}"
    return {
        "start": f"nothing changed yet; the image is still in {repo}",
        "copied": f"copied to {loc}{with_children} but still present (and deployable) in {repo}",
        "deleted": f"moved to {loc}",
        "untagged": "deployable tags removed",
    }.get(str(step), f"unknown step {step!r}")


@dataclass(frozen=True, slots=True)
class ReleaseOutcome:
    restored_tags: tuple[str, ...]
    skipped: tuple[str, ...]
    location: str
    notes: tuple[str, ...] = ()


def release(
    registry: Registry,
    ledger: Ledger,
    *,
    image: ImageRef,
    reason: str,
    now: datetime,
    by: str | None = None,
) -> ReleaseOutcome:
    """Restore exactly what quarantine changed, from the ledger; audited. Idempotent: a
    repeat after a failure finishes the job. `by`: who released it (the operator), kept in
    the release action's state as `by` beside its reason (`quarantine show`)."""
    if image.digest is None:
        raise UsageError(f"release needs a digest, got {image}", hint="use REPO@sha256:…")
    rec = ledger.quarantined(image.registry, image.repository, image.digest)
    if rec is None:
        raise UsageError(f"{image} is not quarantined according to the ledger")
    if rec.released_at is not None:
        return ReleaseOutcome((), (), rec.repository)
    key = _action_key("release", image) + f"#{rec.quarantined_at.isoformat()}"
    action = ledger.action(_action_key("quarantine", image))
    quarantine_state = action.state if action else {}
    rolled: dict[str, str] = dict(quarantine_state.get("rolled_back", {}))
    children = tuple(quarantine_state.get("children", ()))
    if rec.strategy == "lock":
        begun = ledger.begin_action(
            key,
            registry=image.registry,
            repository=image.repository,
            digest=image.digest,
            kind="release",
            reason=reason,
            state={"tags": list(rec.tags), "children": list(children), **_by(by)},
            now=now,
        )
        progress = Progress(
            dict(begun.state), lambda s: ledger.finish_action(key, status="intent", state=s)
        )
        left = release_lock(registry, image, quarantine_state, progress, reason=reason)
        # done before released: a retry after a lost write finds the record and ends here
        ledger.finish_action(key, status="done", state=progress.state)
        ledger.mark_released(image.registry, image.repository, image.digest, now=now)
        return ReleaseOutcome((), (), image.repository, tuple(left))
    begun = ledger.begin_action(
        key,
        registry=image.registry,
        repository=image.repository,
        digest=image.digest,
        kind="release",
        reason=reason,
        state={"tags": list(rec.tags), "children": list(children), **_by(by)},
        now=now,
    )
    qtag = quarantine_tag(image.digest)
    restored: list[str] = []
    skipped: list[str] = []
    notes: list[str] = []
    if rec.strategy == "move":
        registry.copy(rec.location, image.digest, image.repository, None)  # children come too
    for tag in rec.tags:
        # Only undo our own change: a tag someone moved since stays where they put it.
        current = registry.resolve(image.repository, tag)
        if current not in (None, image.digest, rolled.get(tag)):
            skipped.append(f"{tag} (now points at {current})")
            continue
        registry.add_tag(image.repository, image.digest, tag)
        restored.append(tag)
    if rec.strategy == "move":
        with contextlib.suppress(NotFound):
            registry.delete(rec.location, image.digest)  # the index before its children
        kept = children_to_keep(registry, rec.location, image.digest, children)
        for child in children:
            if child in kept:
                notes.append(f"child {child} stays in {rec.location}: {kept[child]}")
                continue
            with contextlib.suppress(NotFound):
                registry.delete(rec.location, child)
    else:
        with contextlib.suppress(NotFound):
            registry.remove_tag(image.repository, qtag)
    ledger.mark_released(image.registry, image.repository, image.digest, now=now)
    ledger.finish_action(
        key,
        status="done",
        # who released it stays on the record (a resumed release keeps the first one's)
        state={
            "restored": restored,
            "skipped": skipped,
            "children": list(children),
            **_by(begun.state.get("by")),
        },
    )
    return ReleaseOutcome(tuple(restored), tuple(skipped), image.repository, tuple(notes))


def _by(operator: object) -> dict[str, str]:
    return {"by": operator} if isinstance(operator, str) and operator else {}
