"""Domain models shared by every provider: events, findings, scan reports, check results
and verdicts. Pure data; no I/O."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .reference import ImageRef

__all__ = [
    "Action",
    "CheckOutcome",
    "CheckResult",
    "EventKind",
    "Finding",
    "ImageEvent",
    "ImageRef",
    "Outcome",
    "ScanReport",
    "Severity",
    "SignatureResult",
    "Verdict",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Severity(enum.IntEnum):
    """Vulnerability severity, ordered lowest to highest so comparisons just work."""

    UNKNOWN = 0
    NEGLIGIBLE = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Accept any scanner's spelling: 'CRITICAL', 'Critical', 'informational', …"""
        key = text.strip().upper()
        aliases = {
            "INFORMATIONAL": "NEGLIGIBLE",
            "INFO": "NEGLIGIBLE",
            "MODERATE": "MEDIUM",
            "IMPORTANT": "HIGH",
            "UNTRIAGED": "UNKNOWN",
            "NONE": "NEGLIGIBLE",
        }
        key = aliases.get(key, key)
        try:
            return cls[key]
        except KeyError:
            valid = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {text!r}; valid: {valid}") from None

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def _coerce(cls, value: object) -> Severity:
        """A Severity from itself, its name (any scanner's spelling) or its number (JSON
        written before severities were names: ledger rows, outbox alerts)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        if isinstance(value, str):
            return cls(int(value)) if value.strip().isdigit() else cls.parse(value)
        raise ValueError(f"got {value!r}, expected a severity name")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """In JSON a severity is its name (`"critical"`), as every channel prints it; a
        model reads the name or the number."""
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            cls._coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="json"),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        return {"type": "string", "enum": [str(s) for s in cls]}


class EventKind(enum.StrEnum):
    PUSHED = "pushed"
    DELETED = "deleted"
    SCANNED = "scanned"
    SIGNED = "signed"  # a signature/attestation/referrer arrived: re-evaluate the subject
    PULLED = "pulled"


class ImageEvent(_Frozen):
    """One registry event, normalised from any source."""

    kind: EventKind
    source: str = Field(description="event source, e.g. 'aws.ecr', 'distribution', 'harbor'")
    image: ImageRef
    time: datetime
    delivery_id: str = Field(description="the sender's id, used to deduplicate deliveries")
    media_type: str | None = None
    user_agent: str | None = None
    actor: str | None = None
    subject_digest: str | None = Field(
        default=None, description="for SIGNED: the digest of the image the signature is for"
    )
    manifest_digest: str | None = Field(
        default=None,
        description="for SIGNED: the digest of the pushed signature or attestation manifest",
    )


class Finding(_Frozen):
    """One vulnerability in one package, normalised across scanners."""

    id: str
    severity: Severity
    package: str = ""
    installed_version: str = ""
    fixed_version: str | None = None
    cvss: float | None = None
    title: str = ""
    url: str | None = None
    exploit_available: bool = False

    @property
    def fixable(self) -> bool:
        return bool(self.fixed_version)


class ScanReport(_Frozen):
    """All findings for one image digest from one scanner run."""

    digest: str
    scanner: str
    source: str
    scanned_at: datetime | None = None
    findings: tuple[Finding, ...] = ()
    note: str = ""
    """What the scan covered, when it is not the whole of the image judged (Artifact
    Analysis scans one platform of a multi-arch index): the verdict's reason shows it."""

    def counts(self) -> dict[Severity, int]:
        out = dict.fromkeys(Severity, 0)
        for f in self.findings:
            out[f.severity] += 1
        return out


class SignatureResult(_Frozen):
    """One signature found for an image, and whether it verified."""

    format: Literal["cosign-legacy", "cosign-bundle", "notation-jws", "notation-cose"]
    digest: str = Field(description="digest of the signature manifest or blob")
    verified: bool
    signer: str | None = Field(default=None, description="key id or certificate identity")
    reason: str = ""


class CheckOutcome(enum.StrEnum):
    PASS = "pass"  # noqa: S105  (an outcome, not a password)
    FAIL = "fail"
    WARN = "warn"
    PENDING = "pending"
    ERROR = "error"
    SKIP = "skip"


class CheckResult(_Frozen):
    """The result of one check with the precise reason."""

    name: str
    outcome: CheckOutcome
    reason: str
    details: dict[str, object] = Field(default_factory=dict)


class Outcome(enum.StrEnum):
    PASSED = "PASSED"
    FAILED = "FAILED"
    PENDING = "PENDING"
    WARN = "WARN"
    ERROR = "ERROR"

    @property
    def exit_code(self) -> int:
        return {"PASSED": 0, "WARN": 0, "FAILED": 1, "PENDING": 1, "ERROR": 3}[self.value]


class Verdict(_Frozen):
    """What the gate decided for one image digest, and why."""

    image: ImageRef
    outcome: Outcome
    mode: Literal["enforce", "audit"] = "enforce"
    checks: tuple[CheckResult, ...] = ()
    evaluated_at: datetime
    team: str | None = None

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.outcome is CheckOutcome.FAIL)

    @property
    def policy_outcome(self) -> Outcome:
        """What the policy decided, whatever the mode did about it: FAILED for an `audit`
        verdict with a failed check (its outcome is WARN, as audit acts on nothing), else
        the outcome. The ledger keeps this one, so what reads it later (the access
        monitor's blocked pulls, rollback's PASSED digests, the report) sees an audit
        repository's failures as failures; alerts and exit codes keep `outcome`."""
        if self.outcome is Outcome.WARN and self.mode == "audit" and self.failed:
            return Outcome.FAILED
        return self.outcome


class Action(_Frozen):
    """Something regwarden did (or would do) to an image."""

    kind: Literal["quarantine", "release", "promote", "tag", "untag", "delete", "rollback", "none"]
    image: ImageRef
    detail: str = ""
    dry_run: bool = False
