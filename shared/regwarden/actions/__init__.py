"""What the gate does to images: quarantine, release, promote."""

from ._promote import PromoteOutcome, promote
from ._quarantine import (
    QUARANTINE_TAG_PREFIX,
    STRATEGIES,
    QuarantineOutcome,
    ReleaseOutcome,
    action_key,
    describe_state,
    quarantine,
    quarantine_repository,
    quarantine_tag,
    release,
)

__all__ = [
    "QUARANTINE_TAG_PREFIX",
    "STRATEGIES",
    "PromoteOutcome",
    "QuarantineOutcome",
    "ReleaseOutcome",
    "action_key",
    "describe_state",
    "promote",
    "quarantine",
    "quarantine_repository",
    "quarantine_tag",
    "release",
]
