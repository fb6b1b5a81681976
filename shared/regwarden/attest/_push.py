"""Push regwarden's verdict attestation for an image, replacing the one before it, as a
resumable ledger intent (the pattern of `actions._quarantine`).

One action record per image, `verdict-attestation:REG/REPO@DIGEST`. Its state says what
stands on the registry (`pushed`: format, manifest digest, tag), for which verdict and
when it was decided, and every digest regwarden ever wrote for it (`history`, bounded):
the intake recognises its own pushes by those digests, so they never re-evaluate the
image (`is_own_push`).

Order of writes, so that a crash never leaves a valid PASSED attestation on an image whose
latest verdict is not PASSED:

1. the intent is recorded, with the manifests about to be written (`next.planned`);
2. when a PASSED attestation is superseded by another verdict, it is removed first
   (`step: remove`: the `.att` tag loses its verdict layers or goes, the manifests are
   deleted by digest, the referrers index forgets the bundle) and the step is recorded;
3. the new attestation is pushed; what it replaced (any other verdict) is removed after,
   so a cluster never sees no attestation at all while a PASSED one is renewed;
4. the record is `done`.

Any later evaluation of the image finds an unfinished intent and finishes step 2 before
anything else (`step` stays `remove` until the removal is recorded).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ..actions import action_key
from ..errors import NotFound
from ..oci import OCI_INDEX, Descriptor, RegistryClient, index_of, referrers_tag
from ..reference import ImageRef
from ..signatures import (
    ANNOTATION_PREDICATE_TYPE,
    SignedArtifact,
    attest_bundle,
    attest_legacy,
    digest_of,
    existing_attachment,
    go_json,
    publish,
    signature_tag,
)
from ..store import Ledger
from ._predicate import VERDICT_PREDICATE
from ._signer import Signer

__all__ = [
    "ACTION_KIND",
    "AttestFormat",
    "Recorded",
    "attest_verdict",
    "attestation_key",
    "finish_removal",
    "is_own_push",
    "recorded_attestation",
    "retire_attestation",
]

ACTION_KIND = "verdict-attestation"
AttestFormat = Literal["legacy", "bundle", "both"]
_HISTORY = 64
"""Digests remembered per image: enough for late notifications of pushes long replaced."""
_ZERO_TIME = "0001-01-01T00:00:00Z"
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def attestation_key(image: ImageRef) -> str:
    """The ledger key of the verdict attestation of `image` (by digest)."""
    return action_key(ACTION_KIND, image.with_tag(None))


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the ledger says stands for an image."""

    status: str
    verdict: str | None
    decided_at: str | None
    pushed: tuple[Mapping[str, Any], ...]
    history: frozenset[str]


def recorded_attestation(ledger: Ledger, image: ImageRef) -> Recorded | None:
    record = ledger.action(attestation_key(image))
    if record is None:
        return None
    state = record.state
    return Recorded(
        status=record.status,
        verdict=state.get("verdict"),
        decided_at=state.get("decidedAt"),
        pushed=tuple(state.get("pushed", ())),
        history=frozenset(state.get("history", ())),
    )


def is_own_push(ledger: Ledger, image: ImageRef, manifest_digest: str) -> bool:
    """Whether regwarden wrote `manifest_digest` as (part of) the verdict attestation of
    `image`: an attestation manifest or the referrers index it updated."""
    found = recorded_attestation(ledger, image)
    return found is not None and manifest_digest in found.history


def _formats(fmt: AttestFormat) -> tuple[str, ...]:
    return ("legacy", "bundle") if fmt == "both" else (fmt,)


def _verdict_layer(layer: Mapping[str, Any]) -> bool:
    annotations = layer.get("annotations")
    return isinstance(annotations, dict) and (
        annotations.get(ANNOTATION_PREDICATE_TYPE) == VERDICT_PREDICATE
    )


def _without_verdicts(raw: bytes, tag: str) -> SignedArtifact | None:
    """The `.att` manifest `raw` without regwarden's verdict layers (others' attestations
    stay, in cosign's layout); None when nothing else is left."""
    doc = json.loads(raw)
    layers = [layer for layer in doc.get("layers", []) if not _verdict_layer(layer)]
    if not layers:
        return None
    config = go_json(
        {
            "architecture": "",
            "created": _ZERO_TIME,
            "history": [{"created": _ZERO_TIME} for _ in layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
            "config": {},
        }
    )
    media_type = str(doc.get("mediaType", _OCI_MANIFEST))
    manifest = go_json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": str(doc.get("config", {}).get("mediaType", _OCI_CONFIG)),
                "size": len(config),
                "digest": digest_of(config),
            },
            "layers": layers,
        }
    )
    return SignedArtifact(
        manifest=manifest, media_type=media_type, blobs={digest_of(config): config}, tag=tag
    )


def _delete(client: RegistryClient, repo: str, digest: str) -> None:
    with contextlib.suppress(NotFound):  # gone already: a retry, or deleted by a person
        client.delete_manifest(repo, digest)


def _unindex(client: RegistryClient, repo: str, subject: str, digest: str) -> str | None:
    """Drop `digest` from the referrers tag schema's index of `subject`, if it lists it;
    the digest of the index written, if one was."""
    tag = referrers_tag(subject)
    try:
        listed = client.get_manifest(repo, tag, accept=(OCI_INDEX,)).manifests
    except NotFound:
        return None
    kept = [d for d in listed if d.digest != digest]
    if len(kept) == len(listed):
        return None
    return client.put_manifest(repo, tag, index_of(kept), OCI_INDEX)


def _remove(
    client: RegistryClient,
    image: ImageRef,
    entries: Sequence[Mapping[str, Any]],
    *,
    keep: frozenset[str] = frozenset(),
) -> list[str]:
    """Take the attestation manifests `entries` off the registry (idempotent); the digests
    of the manifests written meanwhile (a `.att` with others' layers, a referrers index)."""
    repo = image.repository
    assert image.digest is not None
    written: list[str] = []
    for entry in entries:
        digest = str(entry.get("digest"))
        if digest in keep or entry.get("format") == "referrers-index":
            continue
        if entry.get("format") == "legacy":
            # whatever the `.att` tag holds now (someone may have appended to our manifest):
            # its verdict layers go, others' attestations stay
            tag = signature_tag(image.digest, "att")
            current = client.head_manifest(repo, tag)
            if current is not None and current.digest not in keep:
                raw = client.get_manifest(repo, tag).raw
                if any(_verdict_layer(layer) for layer in json.loads(raw).get("layers", [])):
                    rest = _without_verdicts(raw, tag)
                    if rest is not None:
                        written.append(publish(client, repo, rest))
                    else:
                        _delete(client, repo, current.digest)
        else:
            index = _unindex(client, repo, image.digest, digest)
            if index is not None:
                written.append(index)
        _delete(client, repo, digest)
    return written


def _artifacts(
    client: RegistryClient,
    image: ImageRef,
    subject: Descriptor,
    predicate: Mapping[str, Any],
    signer: Signer,
    formats: Sequence[str],
    now: datetime,
) -> list[tuple[str, SignedArtifact]]:
    repo = image.repository
    assert image.digest is not None
    out: list[tuple[str, SignedArtifact]] = []
    for fmt in formats:
        if fmt == "legacy":
            tag = signature_tag(image.digest, "att")
            existing = existing_attachment(client, repo, tag)
            base = _without_verdicts(existing, tag) if existing is not None else None
            artifact = attest_legacy(
                image_digest=image.digest,
                repository=f"{image.registry}/{repo}",
                key=signer,
                predicate_type=VERDICT_PREDICATE,
                predicate=predicate,
                existing_manifest=base.manifest if base is not None else None,
            )
            # the base's config is not pushed: the new manifest carries its own
        else:
            artifact = attest_bundle(
                subject=subject.to_dict(),
                key=signer,
                predicate_type=VERDICT_PREDICATE,
                predicate=predicate,
                created=now,
            )
        out.append((fmt, artifact))
    return out


def attest_verdict(
    client: RegistryClient,
    ledger: Ledger,
    *,
    image: ImageRef,
    subject: Descriptor,
    predicate: Mapping[str, Any],
    signer: Signer,
    fmt: AttestFormat = "legacy",
    now: datetime,
) -> list[str]:
    """Attest `predicate` (a verdict of `image`, by digest) and retire the one before it.
    Returns notes for the alert. Raises RegistryError with the intent left to resume."""
    assert image.digest is not None
    artifacts = _artifacts(client, image, subject, predicate, signer, _formats(fmt), now)
    return _replace(
        client,
        ledger,
        image,
        verdict=str(predicate["verdict"]),
        decided=str(predicate["decidedAt"]),
        artifacts=artifacts,
        now=now,
    )


def retire_attestation(
    client: RegistryClient, ledger: Ledger, *, image: ImageRef, now: datetime
) -> list[str]:
    """Take the standing verdict attestation of `image` off the registry: the policy no
    longer attests its verdict (a PASSED image turned FAILED where only PASSED is
    attested, or `attest` was removed), so no stale PASSED may stay."""
    return _replace(client, ledger, image, verdict=None, decided=None, artifacts=[], now=now)


def finish_removal(client: RegistryClient, ledger: Ledger, *, image: ImageRef) -> bool:
    """The recovery sweep's part: an intent stopped in its removal step (retries ran out
    while a superseded PASSED was being taken off) is finished — the removal only, as the
    new verdict's attestation needs its evaluation, which the next event of the image
    brings. True when there was such a removal to finish."""
    key = attestation_key(image)
    record = ledger.action(key)
    if record is None or record.status != "intent" or record.state.get("step") != "remove":
        return False
    state = dict(record.state)
    written = _remove(client, image, state.get("pushed", []))
    state["history"] = [*state.get("history", []), *written][-_HISTORY:]
    state.update(pushed=[], verdict=None, decidedAt=None, step="done")
    state.pop("next", None)
    ledger.finish_action(key, status="done", state=state)
    return True


def _replace(
    client: RegistryClient,
    ledger: Ledger,
    image: ImageRef,
    *,
    verdict: str | None,
    decided: str | None,
    artifacts: Sequence[tuple[str, SignedArtifact]],
    now: datetime,
) -> list[str]:
    assert image.digest is not None
    key = attestation_key(image)
    record = ledger.action(key)
    state: dict[str, Any] = dict(record.state) if record is not None else {}
    state.setdefault("pushed", [])
    state.setdefault("history", [])
    planned = [a.digest for _, a in artifacts]
    unfinished_removal = (
        record is not None and record.status == "intent" and state.get("step") == "remove"
    )
    downgrade = unfinished_removal or (state.get("verdict") == "PASSED" and verdict != "PASSED")
    state["history"] = [*state["history"], *planned][-_HISTORY:]
    state["next"] = {"verdict": verdict, "decidedAt": decided, "planned": planned}
    state["step"] = "remove" if downgrade else "push"
    if record is None:
        ledger.begin_action(
            key,
            registry=image.registry,
            repository=image.repository,
            digest=image.digest,
            kind=ACTION_KIND,
            reason=f"verdict {verdict}" if verdict else "retire the verdict attestation",
            state=state,
            now=now,
        )
    else:
        ledger.finish_action(key, status="intent", state=state)
    notes: list[str] = []
    if downgrade:
        # the removal's own writes are told by their digests only after they are made:
        # the image's evaluation lock holds their notifications until the ledger has them
        written = _remove(client, image, state["pushed"])
        state["history"] = [*state["history"], *written][-_HISTORY:]
        if state.get("verdict") == "PASSED":
            notes.append("superseded PASSED verdict attestation removed")
        state.update(pushed=[], verdict=None, decidedAt=None, step="push")
        ledger.finish_action(key, status="intent", state=state)
    pushed: list[dict[str, Any]] = []
    for fmt_name, artifact in artifacts:
        digest = publish(client, image.repository, artifact)
        entry: dict[str, Any] = {"format": fmt_name, "digest": digest}
        if artifact.tag is not None:
            entry["tag"] = artifact.tag
        pushed.append(entry)
        if artifact.subject is not None:  # the tag schema's index, if the registry has one
            index = client.head_manifest(image.repository, referrers_tag(image.digest))
            if index is not None:
                pushed.append({"format": "referrers-index", "digest": index.digest})
                state["history"] = [*state["history"], index.digest][-_HISTORY:]
                ledger.finish_action(key, status="intent", state=state)
    new = frozenset(str(e["digest"]) for e in pushed)
    written = _remove(client, image, state["pushed"], keep=new)
    if state.get("pushed") and not pushed:
        notes.append(f"verdict attestation {state.get('verdict')} removed")
    state["history"] = [*state["history"], *written][-_HISTORY:]
    state.update(pushed=pushed, verdict=verdict, decidedAt=decided, step="done")
    state.pop("next", None)
    ledger.finish_action(key, status="done", state=state)
    if verdict is not None:
        formats = ", ".join(sorted({name for name, _ in artifacts}))
        notes.append(f"verdict attestation {verdict} ({formats})")
    return notes
