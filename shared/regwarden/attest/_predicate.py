"""The verdict predicate: what regwarden decided about one image digest, as in-toto.

`build_predicate` is pure (the decision's time is `now`); the statement around it is the
writers' (`signatures._sign.in_toto_statement`), whose subject is `REG/REPO` with the
image's sha256. Field names are camelCase JSON so admission policies (Kyverno JMESPath,
policy-controller CUE/Rego) read them as written in the docs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..gate import Facts
from ..model import Verdict

__all__ = ["VERDICT_PREDICATE", "PolicyIdentity", "build_predicate", "policy_identity"]

from ..signatures import VERDICT_PREDICATE


@dataclass(frozen=True, slots=True)
class PolicyIdentity:
    """Which policy decided: a name people recognise and a digest that tells two policies
    apart whatever file or secret they came from."""

    name: str
    digest: str


def policy_identity(document: Any, name: str) -> PolicyIdentity:
    """The identity of a loaded policy: sha256 over its canonical JSON (defaults filled in,
    keys sorted), so the same rules give the same digest on every replica."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return PolicyIdentity(
        name=name, digest="sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    )


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_predicate(
    verdict: Verdict, facts: Facts, policy: PolicyIdentity, *, now: datetime
) -> dict[str, Any]:
    """The predicate of a verdict attestation (pure)."""
    image = verdict.image
    signatures = [
        {"format": s.format, "signer": s.signer, "digest": s.digest}
        for s in facts.signatures
        if s.verified
    ]
    scans = [
        {
            "source": s.source,
            "scanner": s.scanner,
            "scannedAt": _stamp(s.scanned_at) if s.scanned_at is not None else None,
            "counts": {sev.name: n for sev, n in s.counts().items()},
        }
        for s in facts.scans
    ]
    return {
        "verdict": verdict.outcome.value,
        "decidedAt": _stamp(now),
        "image": {
            "registry": image.registry,
            "repository": image.repository,
            "digest": image.digest,
        },
        "policy": {"name": policy.name, "digest": policy.digest},
        "regwarden": {"version": __version__},
        "checks": [
            {"name": c.name, "outcome": c.outcome.value, "reason": c.reason} for c in verdict.checks
        ],
        "evidence": {"signatures": signatures, "scans": scans},
    }
