"""The alert: one message that says what happened, why, to which image, what was done,
and how to undo it. Channels only render it."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..model import Finding, Outcome, Severity
from ..reference import ImageRef


class AccessAlertDetail(BaseModel):
    """Who accessed the image, how and from where (an access alert's own part).

    The opening alert of a window has `count` 1 and `summary` False; the summary sent when
    the window closes has `summary` True, `count` the accesses counted after the opening one
    (which alerted on its own) and `window_end` when it closed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    finding: str = Field(
        description="blocked-pull, unexpected-puller, unexpected-pusher or pull-rate"
    )
    access: Literal["pull", "push"]
    principal: str | None = None
    principal_type: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    source: str = Field(description="where the event came from: distribution, harbor, …")
    reference: str = Field(description="the image as accessed (e.g. the quarantine location)")
    count: int = Field(default=1, ge=1)
    summary: bool = False
    window_start: datetime
    window_end: datetime | None = None
    last_seen: datetime | None = None

    @property
    def who(self) -> str:
        return self.principal or "an anonymous client"


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
    kind: Literal["verdict", "access"] = "verdict"
    """`access`: a pull or push worth telling (`access` says who, how, from where)."""
    access: AccessAlertDetail | None = None

    @property
    def repository(self) -> str:
        return self.image.repository

    @property
    def dedup_key(self) -> str:
        """Same digest, same verdict, same action, same state → same alert: repeated pushes
        don't repeat it, while each new state of a half-done action is told once."""
        if self.access is not None:
            # one alert per window (its opened_at), and one summary when it closes
            a = self.access
            text = (
                f"access|{self.image.name}@{self.image.digest}|{a.finding}|{a.principal or ''}"
                f"|{a.window_start.isoformat()}|{'summary' if a.summary else 'open'}"
            )
            return hashlib.sha256(text.encode()).hexdigest()[:32]
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
        if self.access is not None:
            a = self.access
            head = "summary" if a.summary else a.finding
            return f"ACCESS {head}: {self.image.repository} ({a.access} by {a.who})"
        return f"{self.outcome.value}: {self.image.repository} ({self.action})"


def finding_line(f: Finding) -> str:
    fix = f"fixed in {f.fixed_version}" if f.fixed_version else "no fix yet"
    pkg = f"{f.package} {f.installed_version}".strip()
    return f"{f.id} ({f.severity}) in {pkg}: {fix}"
