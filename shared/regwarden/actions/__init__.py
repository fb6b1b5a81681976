"""What the gate does to images: quarantine, release, promote."""

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
    "promote",
    "quarantine",
    "recorded_outcome",
    "release",
]
