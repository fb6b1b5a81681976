"""What the gate does to images: quarantine, release, promote."""

from ._lock import mark_passed, stored_manifests
from ._promote import PromoteOutcome, promote
from ._quarantine import (
    STRATEGIES,
    QuarantineOutcome,
    ReleaseOutcome,
    action_key,
    describe_state,
    quarantine,
    recorded_outcome,
    release,
)

__all__ = [
    "STRATEGIES",
    "PromoteOutcome",
    "QuarantineOutcome",
    "ReleaseOutcome",
    "action_key",
    "describe_state",
    "mark_passed",
    "promote",
    "quarantine",
    "recorded_outcome",
    "release",
    "stored_manifests",
]
