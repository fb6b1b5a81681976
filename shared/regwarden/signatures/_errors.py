"""Errors of the signatures package.

    VerificationError (regwarden.errors)
    └── SignatureFormatError      input is structurally unusable (not a bad signature)
        └── KeyFormatError        a key (PEM, encrypted cosign key, KMS answer) is unusable

A signature that simply does not verify is never an exception: verifiers return one
`SignatureResult` per signature with `verified=False` and the precise reason.
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import VerificationError


class SignatureFormatError(VerificationError):
    """Signature material (manifest, payload, bundle, envelope) is structurally unusable."""


class KeyFormatError(SignatureFormatError):
    """A key cannot be loaded: malformed PEM, unsupported algorithm, or wrong password."""

    exit_code: ClassVar[int] = 2
