"""The `lock` quarantine: the registry's own per-manifest locks (ACR's changeable attributes).

A hold (a PENDING verdict) sets `write=false, delete=false` on the image and, for an index,
on every manifest below it: nothing can overwrite or delete them, and the gate can still
read them to judge again. A FAILED verdict also sets `read=false` (nobody can pull it);
on a held image that is a second step of the same action (an escalation). Where the
registry's own quarantine policy is on (ACR's `quarantineState`), FAILED also marks each
manifest `Failed`, and a release or a PASSED verdict marks it `Passed`.

Everything the writes change is recorded before the first of them, in the action's state
under "lock": each digest's prior attributes, the manifests themselves (media type and
base64 bytes, so re-evaluation and release never read a locked manifest), the child list
and the level reached. Each PATCH's progress is recorded before the next one goes out (the
last one's with the action's finish: `_progress`), so an attempt killed between two of
them resumes where it stopped (a PATCH repeated is harmless). Release puts
back exactly the prior attributes, and leaves (and notes) a digest whose attributes are no
longer what the lock set: someone changed them since, and their change stands.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from ..errors import UsageError
from ..oci import Manifest
from ..providers import CAP_LOCK, Lockable, ManifestAttributes, Registry
from ..reference import ImageRef
from ..store import ActionRecord, Ledger, QuarantineRecord
from ._progress import Progress

__all__ = [
    "LEVELS",
    "describe_lock",
    "escalate",
    "lock",
    "lockable",
    "mark_passed",
    "plan_lock",
    "release_lock",
    "stored_manifests",
]

LEVELS = ("hold", "failed")
"""`hold`: write and delete locked; `failed`: read locked too."""


def lockable(registry: Registry) -> Lockable:
    """`registry` as a Lockable; a UsageError where it declares no manifest locks."""
    if CAP_LOCK not in registry.capabilities or not isinstance(registry, Lockable):
        raise UsageError(
            f"quarantine strategy 'lock' needs a registry with manifest locks (ACR); "
            f"{registry.host} ({registry.kind}) has none",
            hint="use quarantine strategy 'move' or 'retag' for this registry",
        )
    return registry


def _attrs(a: ManifestAttributes) -> dict[str, bool]:
    return {"write": a.write, "delete": a.delete, "read": a.read, "list": a.list}


def plan_lock(
    registry: Registry, image: ImageRef, manifest: Manifest | None, *, hold: bool
) -> dict[str, Any]:
    """The state a new lock action starts from (only reads): what `lock` will write and
    what it must restore. `manifest`: the image's digest-verified manifest, if read."""
    assert image.digest is not None
    locks = lockable(registry)
    client = registry.data_plane()
    top = manifest or client.get_manifest(image.repository, image.digest)
    tree = client.index_tree(image.repository, top) if top.is_index else {}
    children = [d for d in tree if d != image.digest]
    digests = [image.digest, *children]
    every = {image.digest: top, **tree}
    # One read per digest: it gives the registry's quarantine state with the attributes.
    read = {d: locks.manifest_attributes(image.repository, d) for d in digests}
    prior = {d: _attrs(a) for d, a in read.items()}
    return {
        "children": children,
        "tags": [],  # a lock takes no tag away: nothing for release to put back
        "lock": {
            "level": "hold" if hold else "failed",
            "digests": digests,
            "prior": prior,
            "manifests": {
                d: {"media_type": m.media_type, "raw": base64.b64encode(m.raw).decode()}
                for d, m in every.items()
            },
            "registry_quarantine": read[image.digest].quarantine_state is not None,
            "locked": [],
            "read_locked": [],
            "marked": [],
        },
    }


def _details(state: Mapping[str, Any], *, passed: bool, reason: str) -> dict[str, Any]:
    """`quarantineDetails`: the state, why, and the verdict's outcome and failing checks."""
    verdict = state.get("verdict") if isinstance(state.get("verdict"), dict) else {}
    assert isinstance(verdict, dict)
    checks = [
        {"name": c.get("name"), "outcome": c.get("outcome"), "reason": c.get("reason")}
        for c in verdict.get("checks") or ()
        if isinstance(c, dict) and c.get("outcome") not in ("pass", "skip")
    ]
    return {
        "state": "scan passed" if passed else "quarantined by regwarden",
        "reason": reason,
        "verdict": {"outcome": verdict.get("outcome"), "checks": checks},
    }


def lock(registry: Registry, image: ImageRef, progress: Progress, *, reason: str) -> None:
    """Drive the lock recorded in `progress.state` to its level (resuming where it
    stopped), each PATCH's progress noted for the ledger before the next (the last goes
    with the caller's finishing record: `quarantine` finishes the action next)."""
    locks = lockable(registry)
    plan = progress.state["lock"]
    repo = image.repository
    read_too = plan["level"] == "failed"
    for digest in plan["digests"]:
        if digest in plan["locked"] and (not read_too or digest in plan["read_locked"]):
            continue
        prior = plan["prior"][digest]
        progress.before_write()
        locks.set_manifest_attributes(
            repo, digest, write=False, delete=False, read=False if read_too else prior["read"]
        )
        if digest not in plan["locked"]:
            plan["locked"].append(digest)
        if read_too:
            plan["read_locked"].append(digest)
        progress.note()
    progress.note("locked")
    if read_too and plan.get("registry_quarantine"):
        details = _details(progress.state, passed=False, reason=reason)
        for digest in plan["digests"]:
            if digest in plan["marked"]:
                continue
            progress.before_write()
            locks.set_quarantine_state(repo, digest, "Failed", details)
            plan["marked"].append(digest)
            progress.note()
        progress.note("marked")


def escalate(state: dict[str, Any], context: Mapping[str, Any] | None) -> bool:
    """Turn a finished hold into a FAILED lock (read too): True if `state` was a hold.
    The new verdict and alert (`context`) replace the hold's, for whoever resumes it."""
    plan = state.get("lock")
    if not isinstance(plan, dict) or plan.get("level") != "hold":
        return False
    plan["level"] = "failed"
    state.update(context or {})
    state["step"] = "escalating"
    state["notes"] = [*state.get("notes", []), "hold escalated: reads disabled"]
    return True


def release_lock(
    registry: Registry,
    image: ImageRef,
    quarantine_state: Mapping[str, Any],
    progress: Progress,
    *,
    reason: str,
) -> list[str]:
    """Restore each locked digest's prior attributes (`progress.state["restored"]` records
    those done, for a resumed release, noted before the next write as `lock` notes its
    own); notes for the digests left as someone set them."""
    locks = lockable(registry)
    plan = quarantine_state.get("lock") or {}
    repo = image.repository
    read_locked = set(plan.get("read_locked", ()))
    notes: list[str] = []
    restored: list[str] = progress.state.setdefault("restored", [])
    left: list[str] = progress.state.setdefault("left", [])
    with progress.recorded_on_error():
        for digest in plan.get("locked", ()):
            if digest in restored or digest in left:
                continue
            prior = plan["prior"][digest]
            expected = ManifestAttributes(
                write=False,
                delete=False,
                read=False if digest in read_locked else prior["read"],
                list=prior["list"],
            )
            current = locks.manifest_attributes(repo, digest)
            if current == ManifestAttributes(**prior):
                restored.append(digest)  # restored by an attempt whose record was lost
            elif current != expected:
                left.append(digest)
            else:
                progress.before_write()
                locks.set_manifest_attributes(repo, digest, **prior)
                restored.append(digest)
            progress.note()
        notes += [f"{d}: attributes changed since the lock; left as they are" for d in left]
        if plan.get("registry_quarantine"):
            details = _details(quarantine_state, passed=True, reason=reason)
            marked: list[str] = progress.state.setdefault("marked", [])
            for digest in plan.get("digests", ()):
                if digest in marked:
                    continue
                progress.before_write()
                locks.set_quarantine_state(repo, digest, "Passed", details)
                marked.append(digest)
                progress.note()
    return notes


def mark_passed(
    registry: Registry, image: ImageRef, verdict: Mapping[str, Any], *, children: tuple[str, ...]
) -> bool:
    """Where the registry's quarantine policy holds `image` (and its children) in a state
    other than `Passed`, mark them `Passed`: a PASSED verdict is the scan result the
    policy waits for. True if anything was marked."""
    assert image.digest is not None
    locks = lockable(registry)
    state = locks.quarantine_state(image.repository, image.digest)
    if state is None or state == "Passed":
        return False
    details = _details({"verdict": dict(verdict)}, passed=True, reason="verdict PASSED")
    for digest in (*children, image.digest):  # the index last: its children pull first
        locks.set_quarantine_state(image.repository, digest, "Passed", details)
    return True


def stored_manifests(
    ledger: Ledger,
    image: ImageRef,
    *,
    held: tuple[QuarantineRecord | None] | None = None,
    looked: tuple[ActionRecord | None] | None = None,
) -> dict[str, Manifest]:
    """The manifests a standing `lock` quarantine of `image` recorded (digest-verified
    again), so a read-locked image is judged without pulling it; empty otherwise.
    `held`, `looked`: the digest's quarantine record and its quarantine action's record
    as the caller read them (`(None,)`: none), not read again; a `looked` record without
    a lock plan is read again (it may predate the lock)."""
    from ._quarantine import action_key

    if image.digest is None:
        return {}
    if held is None:
        held = (ledger.quarantined(image.registry, image.repository, image.digest),)
    standing = held[0]
    if standing is None or standing.released_at is not None or standing.strategy != "lock":
        return {}
    record = looked[0] if looked is not None else None
    if record is None or not isinstance(record.state.get("lock"), dict):
        record = ledger.action(action_key("quarantine", image.with_tag(None)))
    plan = record.state.get("lock") if record is not None else None
    if not isinstance(plan, dict):
        return {}
    return {
        digest: Manifest.parse(
            base64.b64decode(entry["raw"]), media_type=entry["media_type"], digest=digest
        )
        for digest, entry in (plan.get("manifests") or {}).items()
    }


def describe_lock(state: Mapping[str, Any]) -> str:
    """Where a lock stands, in words (see `describe_state`)."""
    plan = state.get("lock") or {}
    digests = list(plan.get("digests", ()))
    level = plan.get("level")
    locked = [d for d in digests if d in plan.get("locked", ())]
    read = [d for d in digests if d in plan.get("read_locked", ())]
    what = f"{len(digests)} manifest{'s' if len(digests) != 1 else ''}"
    if not locked:
        return f"nothing locked yet of {what}; the image can still be overwritten or deleted"
    if level == "failed" and len(read) < len(digests):
        return (
            f"write and delete locked on {len(locked)} of {what}; reads disabled on "
            f"{len(read)} of them only: the image may still be pullable"
        )
    if len(locked) < len(digests):
        return f"write and delete locked on {len(locked)} of {what} only"
    if level == "failed":
        marked = len(plan.get("marked", ()))
        tail = (
            f"; marked Failed in the registry's quarantine on {marked} of {len(digests)}"
            if plan.get("registry_quarantine")
            else ""
        )
        return f"locked ({what}): no write, delete or read{tail}"
    return f"held ({what}): no write or delete; still readable"
