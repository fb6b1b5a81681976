"""The alert: one message that says what happened, why, to which image, what was done,
and how to undo it. Channels only render it."""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ..model import Finding, Outcome, Severity
from ..reference import ImageRef


class Alert(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    time: datetime
    image: ImageRef = Field(description="the image, by digest")
    tags: tuple[str, ...] = ()
    team: str | None = None
    outcome: Outcome
    severity: Severity = Severity.UNKNOWN
    action: str = Field(default="none", description="quarantine, release, promote, rollback, none")
    summary: str
    reasons: tuple[str, ...] = ()
    top_findings: tuple[Finding, ...] = ()
    state: str | None = Field(default=None, description="what state the image is in, if unusual")
    release_command: str | None = None

    @property
    def repository(self) -> str:
        return self.image.repository

    @property
    def dedup_key(self) -> str:
        """Same digest, same verdict, same action, same state → same alert: repeated pushes
        don't repeat it, while each new state of a half-done action is told once."""
        text = f"{self.image.name}@{self.image.digest}|{self.outcome}|{self.action}"
        if self.state:
            text += f"|{self.state}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def event_id(self) -> str:
        """Stable across redeliveries (the CloudEvents `id`): receivers de-duplicate on it."""
        return self.dedup_key

    @property
    def title(self) -> str:
        return f"{self.outcome.value}: {self.image.repository} ({self.action})"


def finding_line(f: Finding) -> str:
    fix = f"fixed in {f.fixed_version}" if f.fixed_version else "no fix yet"
    pkg = f"{f.package} {f.installed_version}".strip()
    return f"{f.id} ({f.severity}) in {pkg}: {fix}"
