"""The one error type of the Notation verifier."""

from __future__ import annotations

from ...errors import VerificationError


class NotationError(VerificationError):
    """A Notation signature is unusable (malformed, unsupported) or failed verification."""
