"""The access event: who pulled or pushed what, how, from where and when.

A slotted frozen dataclass rather than a pydantic model: pulls come by the thousand and
the parsers have already checked every field (`regwarden.jsondoc` paths in the errors),
so the event needs no second validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ..model import Severity

__all__ = [
    "SOURCES",
    "AccessAction",
    "AccessEvent",
    "AccessFinding",
    "DigestState",
    "FindingKind",
]

AccessAction = Literal["pull", "push"]
FindingKind = Literal["blocked-pull", "unexpected-puller", "unexpected-pusher", "pull-rate"]

#: The `source` of an access event, one per parser.
SOURCES = (
    "distribution",
    "harbor",
    "aws.cloudtrail",
    "gcp.auditlog",
    "azure.acr-diagnostics",
)


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """One manifest pull or push as a registry (or its audit log) reported it.

    `digest` is None for a pull by tag that the source did not resolve (CloudTrail's
    `BatchGetImage` by tag): the monitor resolves it from the ledger's tag history.
    `principal` is who did it as the source names them: an IAM role ARN (for an assumed
    role the *role*, `sessionContext.sessionIssuer.arn`, not the session), a service
    account e-mail, a registry username; None when the source names nobody.
    `source_ip` is an address without the port. `event_id` is the sender's id (dedupe of
    redeliveries). `probe`: a manifest HEAD — the client asked whether the manifest is
    there and read nothing; not a pull to count or alert on, but a sign the image is used
    (containerd with pull policy Always asks so, then runs its cached copy).
    """

    source: str
    event_id: str
    action: AccessAction
    registry: str
    repository: str
    digest: str | None
    tag: str | None
    principal: str | None
    principal_type: str | None
    source_ip: str | None
    user_agent: str | None
    time: datetime
    probe: bool = False

    @property
    def reference(self) -> str:
        """`registry/repository@digest` (or `:tag` when no digest is known)."""
        if self.digest is not None:
            return f"{self.registry}/{self.repository}@{self.digest}"
        return f"{self.registry}/{self.repository}:{self.tag}"


@dataclass(frozen=True, slots=True)
class DigestState:
    """What the ledger knows of a digest: its last verdict (`Verdict` value: PASSED,
    FAILED, PENDING, ERROR; None when never judged), whether it is quarantined and where
    (the quarantine location's repository, when moved)."""

    verdict: str | None = None
    quarantined: bool = False
    quarantine_location: str | None = None


@dataclass(frozen=True, slots=True)
class AccessFinding:
    """Why an access is worth an alert; `severity` is what routes match
    (`notifications.routes[].match.severity`)."""

    kind: FindingKind
    severity: Severity
    reason: str
