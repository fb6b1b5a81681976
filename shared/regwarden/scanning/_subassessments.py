"""Defender for Containers' sub-assessments → regwarden's models, and the Azure Resource
Graph (KQL) queries that select them. Pure: no I/O, no clock.

Rows are what Resource Graph's `POST /providers/Microsoft.ResourceGraph/resources` answers
(`resultFormat: objectArray`) for `securityresources` of type
`microsoft.security/assessments/subassessments` under the container registry assessment
(key `c0b7cfc6-3172-465a-b378-53c7ff2cc0d5`, "Azure registry container images should have
vulnerabilities resolved"); the shape is MicrosoftDocs/azure-docs `articles/defender-for-
cloud/subassessment-rest-api.md` (the handbook's events reference §3.2):

    properties.id                                        the CVE
    properties.status.code                               Healthy | Unhealthy | NotApplicable
    properties.additionalData.vulnerabilityDetails       severity (Title-case), cvss, references,
                                                         exploitabilityAssessment
    properties.additionalData.softwareDetails            packageName, version, fixedVersion,
                                                         fixStatus (Unknown | FixAvailable |
                                                         NoFixAvailable | Scheduled | WontFix)
    properties.additionalData.artifactDetails            registryHost, repositoryName, digest
    properties.additionalData.cvssV30Score
    properties.timeGenerated

Every value put into a query is a KQL string literal made by `kql_string` (backslash and
double quote escaped, control characters refused), never text pasted into the query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from ..jsondoc import Node
from ..model import Finding, Severity
from ._common import checked_digest, clip, make_finding
from ._errors import ScanFormatError

__all__ = [
    "ASSESSMENT_KEY",
    "HEALTHY",
    "UNSPECIFIED_FIX",
    "changed_query",
    "findings_of",
    "image_of_row",
    "image_query",
    "kql_string",
    "scanned_at",
]

ASSESSMENT_KEY = "c0b7cfc6-3172-465a-b378-53c7ff2cc0d5"
"""Defender for Cloud's assessment of Azure Container Registry images (events.md §3.2)."""
HEALTHY = "Healthy"
FIX_AVAILABLE = "FixAvailable"
UNSPECIFIED_FIX = "an unspecified version"
"""The fixed version of a finding Defender marks FixAvailable without naming the version
(`fixedVersion: ""`, as in the recorded row): it is fixable all the same."""

_ARTIFACT = "properties.additionalData.artifactDetails"
_LABEL = "Defender sub-assessments"

_RESOURCE_TYPE = "AzureContainerRegistryVulnerability"
_KEY_OF_ID = r'@"(?i)providers/Microsoft.Security/assessments/([^/]*)"'


def _base() -> list[str]:
    """The selection every query starts with: the documented query, a condition a line."""
    return [
        "securityresources",
        f"| where type =~ {kql_string('microsoft.security/assessments/subassessments')}",
        f"| where properties.additionalData.assessedResourceType == {kql_string(_RESOURCE_TYPE)}",
        f"| extend assessmentKey = extract({_KEY_OF_ID}, 1, id)",
        f"| where assessmentKey == {kql_string(ASSESSMENT_KEY)}",
    ]


def kql_string(value: str) -> str:
    """`value` as a double-quoted KQL string literal. Backslash and `"` are escaped (KQL's
    escapes in "…" literals); a control character (a line break could end the literal in
    some tools) is refused rather than guessed at."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"refusing a control character in a query value: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def image_query(registry_host: str, repository: str, digest: str) -> str:
    """The sub-assessments of one image: its registry (host compared case-insensitively, as
    host names are), repository and digest; ordered by id so pages are stable."""
    checked_digest(digest, what="image digest")
    return "\n".join(
        [
            *_base(),
            f"| where {_ARTIFACT}.registryHost =~ {kql_string(registry_host)}",
            f"| where {_ARTIFACT}.repositoryName == {kql_string(repository)}",
            f"| where {_ARTIFACT}.digest == {kql_string(digest)}",
            "| order by id asc",
        ]
    )


def changed_query(since: datetime) -> str:
    """The images whose sub-assessments were generated after `since`: one row each,
    `registryHost`, `repositoryName`, `digest`."""
    if since.tzinfo is None:
        raise ValueError(f"got naive datetime {since.isoformat()}, expected a timezone-aware one")
    stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "\n".join(
        [
            *_base(),
            f"| where todatetime(properties.timeGenerated) > datetime({stamp})",
            f"| extend registryHost = tostring({_ARTIFACT}.registryHost)",
            f"| extend repositoryName = tostring({_ARTIFACT}.repositoryName)",
            f"| extend digest = tostring({_ARTIFACT}.digest)",
            "| distinct registryHost, repositoryName, digest",
            "| order by registryHost asc, repositoryName asc, digest asc",
        ]
    )


def _rows(rows: Iterable[Mapping[str, object]]) -> list[Node]:
    return Node(list(rows), "", label=_LABEL, error=ScanFormatError).array()


def _severity(text: str | None) -> Severity | None:
    if text is None:
        return None
    try:
        return Severity.parse(text)  # Title-case; "None" is negligible, as Harbor's
    except ValueError:
        return Severity.UNKNOWN


def _artifact_matches(artifact: Node, host: str, repository: str, digest: str) -> bool:
    return (
        (artifact.field("registryHost").opt_text() or "").lower() == host.lower()
        and artifact.field("repositoryName").opt_text() == repository
        and artifact.field("digest").opt_text() == digest
    )


def findings_of(
    rows: Iterable[Mapping[str, object]], *, registry_host: str, repository: str, digest: str
) -> list[Finding]:
    """One finding per sub-assessment that is not Healthy (Unhealthy, and NotApplicable:
    an exemption or a disabled assessment in Defender does not make the package safe;
    regwarden's own exceptions are the policy's). Every row must be about the image asked
    for: a row of another image is an error, never merged."""
    out: list[Finding] = []
    for row in _rows(rows):
        properties = row.field("properties")
        extra = properties.field("additionalData")
        artifact = extra.field("artifactDetails")
        if not _artifact_matches(artifact, registry_host, repository, digest):
            artifact.fail(f"the artifact {registry_host}/{repository}@{digest}")
        status = properties.field("status")
        code = status.field("code").opt_text() if status.present else None
        if code == HEALTHY:
            continue
        vulnerability = extra.field("vulnerabilityDetails")
        software = extra.field("softwareDetails")
        cve = properties.field("id").opt_text() or (
            vulnerability.field("cveId").opt_text() if vulnerability.present else None
        )
        if cve is None:
            properties.field("id").fail("the vulnerability id")
        severity = (
            _severity(vulnerability.field("severity").opt_text()) if vulnerability.present else None
        )
        if severity is None and status.present:
            severity = _severity(status.field("severity").opt_text())
        out.append(
            make_finding(
                row,
                id=cve,
                severity=severity or Severity.UNKNOWN,
                package=(software.field("packageName").opt_text() or "")
                if software.present
                else "",
                installed_version=(software.field("version").opt_text() or "")
                if software.present
                else "",
                fixed_version=_fix(software),
                cvss=_score(extra, vulnerability),
                title=clip(properties.field("description").opt_text()),
                url=_url(vulnerability),
                exploit_available=_exploit(vulnerability),
            )
        )
    return out


def _fix(software: Node) -> str | None:
    """The fixed version when Defender says a fix is available (its version may be empty:
    then UNSPECIFIED_FIX); None for every other fixStatus."""
    if not software.present or software.field("fixStatus").opt_text() != FIX_AVAILABLE:
        return None
    return software.field("fixedVersion").opt_text() or UNSPECIFIED_FIX


def _score(extra: Node, vulnerability: Node) -> float | None:
    score = extra.field("cvssV30Score").opt_number(low=0, high=10)
    if score is not None or not vulnerability.present:
        return score
    cvss = vulnerability.field("cvss")
    if not cvss.present:
        return None
    v3 = cvss.field("3.0")
    return v3.field("base").opt_number(low=0, high=10) if v3.present else None


def _url(vulnerability: Node) -> str | None:
    if not vulnerability.present:
        return None
    references = vulnerability.field("references").opt_array()
    return references[0].field("link").opt_text() if references else None


def _exploit(vulnerability: Node) -> bool:
    if not vulnerability.present:
        return False
    assessment = vulnerability.field("exploitabilityAssessment")
    if not assessment.present:
        return False
    keys = ("exploitStepsPublished", "exploitStepsVerified", "isInExploitKit")
    return any(assessment.field(k).value is True for k in keys)


def scanned_at(rows: Iterable[Mapping[str, object]]) -> datetime | None:
    """When Defender last reported on the image: the latest `timeGenerated` of its rows."""
    stamps = [row.field("properties").field("timeGenerated").opt_timestamp() for row in _rows(rows)]
    present = [s for s in stamps if s is not None]
    return max(present) if present else None


def image_of_row(row: Mapping[str, object]) -> tuple[str, str, str]:
    """(registry host, repository, digest) of a `changed_query` row."""
    node = Node(dict(row), "", label=_LABEL, error=ScanFormatError)
    host = node.field("registryHost").text().lower()
    repository = node.field("repositoryName").text()
    digest = checked_digest(node.field("digest").text(), what="digest")
    return host, repository, digest
