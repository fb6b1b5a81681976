"""Is there a valid, fresh PASSED verdict on this digest? (`regwarden verify --verdict`)

`judge_verdicts` is pure: it takes the signature candidates discovery found on the image
(legacy `.att` layers and bundle referrers), the key, `now` and the longest age allowed.
Every candidate whose statement claims the verdict predicate (read without trust, only to
say why one does not count) is verified with the signature verifier's public API
(`verify_attestations`: signature, statement subject digest, predicate type). Of the
verified ones the newest by `decidedAt` decides: it must say PASSED and be no older than
`max_age`. Anything else is a refusal with its reason: none found, none valid (unsigned,
wrong key, another digest), the newest is FAILED or WARN, stale, or unreadable.

A newer verdict always wins over an older one, even an older PASSED: the gate replaces
its attestation when it decides again, and a PASSED left behind by a crash must not
outvote a later FAILED.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..signatures import (
    DSSE_MEDIA_TYPE,
    CosignPolicy,
    PublicKey,
    SignatureCandidate,
    verify_attestations,
)
from ._predicate import VERDICT_PREDICATE

__all__ = ["VerdictCheck", "VerdictSeen", "judge_verdicts"]

PASSED = "PASSED"


@dataclass(frozen=True, slots=True)
class VerdictSeen:
    """One verdict attestation found on the image."""

    attestation: str
    """The digest of the manifest that carries it (`.att` or referrer)."""
    format: str
    valid: bool
    reason: str
    verdict: str | None = None
    decided_at: datetime | None = None
    policy: str | None = None


@dataclass(frozen=True, slots=True)
class VerdictCheck:
    ok: bool
    reason: str
    newest: VerdictSeen | None
    seen: tuple[VerdictSeen, ...]


def _claimed_predicate(candidate: SignatureCandidate) -> str | None:
    """The predicate type a candidate's statement claims (unverified), or None."""
    annotated = candidate.layer.annotations.get("predicateType")
    if annotated:
        return annotated
    try:
        doc = json.loads(candidate.blob)
        envelope = doc if candidate.layer.media_type == DSSE_MEDIA_TYPE else doc["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"]))
        value = statement.get("predicateType")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _decided_at(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _seen(candidate: SignatureCandidate, result: Any) -> VerdictSeen:
    signature = result.result
    if not signature.verified or result.statement is None:
        return VerdictSeen(candidate.manifest_digest, signature.format, False, signature.reason)
    predicate = result.statement.get("predicate")
    predicate = predicate if isinstance(predicate, dict) else {}
    verdict = predicate.get("verdict")
    decided = _decided_at(predicate.get("decidedAt"))
    policy = predicate.get("policy")
    policy_name = policy.get("name") if isinstance(policy, dict) else None
    if not isinstance(verdict, str) or decided is None:
        return VerdictSeen(
            candidate.manifest_digest,
            signature.format,
            False,
            "signed, but its predicate has no verdict or no decidedAt",
        )
    return VerdictSeen(
        candidate.manifest_digest,
        signature.format,
        True,
        signature.reason,
        verdict=verdict,
        decided_at=decided,
        policy=policy_name if isinstance(policy_name, str) else None,
    )


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def judge_verdicts(
    candidates: Iterable[SignatureCandidate],
    *,
    image_digest: str,
    key: PublicKey,
    now: datetime,
    max_age: timedelta | None,
) -> VerdictCheck:
    """Whether the newest valid verdict attestation on `image_digest` is a fresh PASSED."""
    claimed = [c for c in candidates if _claimed_predicate(c) == VERDICT_PREDICATE]
    if not claimed:
        return VerdictCheck(False, "no verdict attestation found on the image", None, ())
    policy = CosignPolicy(keys=(key,), predicate_types=frozenset({VERDICT_PREDICATE}))
    seen = tuple(
        _seen(candidate, result)
        for candidate in claimed
        for result in verify_attestations([candidate], image_digest=image_digest, policy=policy)
    )
    valid = [s for s in seen if s.valid and s.decided_at is not None]
    if not valid:
        reasons = "; ".join(sorted({s.reason for s in seen})) or "not verifiable"
        return VerdictCheck(
            False,
            f"{len(claimed)} verdict attestation(s) found, none valid with key "
            f"{key.key_id[:12]}: {reasons}",
            None,
            seen,
        )
    newest = max(valid, key=lambda s: (s.decided_at, s.verdict != PASSED))
    assert newest.decided_at is not None
    stamp = newest.decided_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if newest.verdict != PASSED:
        return VerdictCheck(
            False, f"the newest verdict is {newest.verdict} (decided {stamp})", newest, seen
        )
    age = now - newest.decided_at
    if max_age is not None and age > max_age:
        return VerdictCheck(
            False,
            f"the newest verdict is PASSED but stale: decided {stamp}, {_age(age)} ago, "
            f"older than the {_age(max_age)} allowed",
            newest,
            seen,
        )
    return VerdictCheck(
        True, f"PASSED, decided {stamp} ({_age(max(age, timedelta(0)))} ago)", newest, seen
    )
