"""The one error type of `regwarden.scanning`."""

from __future__ import annotations

from ..errors import IntakeError

__all__ = ["ScanFormatError"]


class ScanFormatError(IntakeError):
    """A scan report is malformed or of an unknown format; the message names the path."""
