"""One error hierarchy for regwarden, split by phase.

Every error carries a message a user can act on and the CLI exit code it maps to:
2 = usage or configuration, 1 = policy says no, 3 = infrastructure.

    RegwardenError
    ├── UsageError                  bad flags, malformed input (exit 2)
    │   ├── InvalidReference        an image reference that does not parse
    │   ├── PolicyError             the policy file is invalid (load time)
    │   ├── IntakeError             an event payload that is malformed or unknown
    │   └── NotImplementedYet       a command or provider that is not built yet
    ├── VerificationError           a requirement is not met (exit 1)
    └── RegistryError               registry or cloud I/O failed (exit 3)
        ├── DigestMismatch          content does not hash to the digest it was asked for (exit 1)
        ├── NotFound                manifest, blob or repository absent (exit 2)
        ├── AuthError               credentials refused
        ├── Unsupported             the registry cannot do this operation (exit 2)
        ├── LimitExceeded           content past a limit regwarden keeps (permanent: ERROR)
        └── DeadlineExceeded        a registry call did not finish within its deadline
"""

from __future__ import annotations

from typing import ClassVar


class RegwardenError(Exception):
    """Base class: a message for humans plus the CLI exit code."""

    exit_code: ClassVar[int] = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} (hint: {self.hint})"


class UsageError(RegwardenError):
    """The user asked for something malformed or impossible."""

    exit_code = 2


class InvalidReference(UsageError):
    """An image reference does not follow the distribution reference grammar."""

    def __init__(self, reference: str, reason: str) -> None:
        super().__init__(f"invalid image reference {reference!r}: {reason}")
        self.reference = reference
        self.reason = reason


class PolicyError(UsageError):
    """The policy file is invalid; `problems` lists (path, message) pairs."""

    def __init__(self, message: str, *, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class IntakeError(UsageError):
    """An event payload is malformed or of an unknown kind."""


class NotImplementedYet(UsageError):
    """A command or provider that regwarden does not provide yet."""


class VerificationError(RegwardenError):
    """A verification requirement is not met; fail closed."""

    exit_code = 1


class RegistryError(RegwardenError):
    """Talking to a registry or cloud API failed (after retries)."""

    exit_code = 3

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class DigestMismatch(RegistryError):
    """Fetched content does not hash to the digest it was addressed by."""

    exit_code = 1

    def __init__(self, *, expected: str, got: str, what: str) -> None:
        super().__init__(f"digest mismatch for {what}: expected {expected}, got {got}")
        self.expected = expected
        self.got = got


class NotFound(RegistryError):
    """The manifest, blob, tag or repository does not exist (a bad reference, exit 2)."""

    exit_code = 2


class AuthError(RegistryError):
    """The registry refused our credentials (or we had none)."""


class Unsupported(RegistryError):
    """The registry does not support this operation (e.g. tag deletion on distribution 2.8)."""

    exit_code = 2


class EvidenceUnavailable(RegistryError):
    """Evidence for a verdict (signatures, a scan source, an attestation) could not be
    gathered: the verdict is ERROR, the event is retried, and nothing is acted on."""


class LimitExceeded(RegistryError):
    """The registry's content goes past a limit regwarden keeps (nesting depth, children of
    an index, size of a manifest or config). Permanent: the verdict is ERROR at once, with an
    alert, never a pass; raised before any write."""


class HostNotAllowed(IntakeError):
    """An event names a registry host that the configuration does not list: it is
    rejected and the host is never contacted."""


class DeadlineExceeded(RegistryError):
    """A registry call (connect, headers and body, with its retries) did not finish within
    its overall deadline. Transient: the event is retried like any other registry failure."""


class ActionIncomplete(RegistryError):
    """An action stopped half-way on its last attempt: its ERROR verdict and alert are
    committed, the recovery sweep keeps driving it to its end, and the event is
    dead-lettered (never acknowledged as handled while the image is half-done)."""
