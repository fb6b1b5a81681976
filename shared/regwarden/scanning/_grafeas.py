"""Artifact Analysis (Grafeas v1) occurrences → regwarden's models. Pure: no I/O, no clock.

Occurrences come in as JSON-shaped mappings in the REST API's spelling (camelCase, enums
by name): what `GET /v1/projects/P/occurrences` answers, and what the client's
`Occurrence.to_dict(..., preserving_proto_field_name=False, use_integers_for_enums=False)`
gives back. Field names from grafeas `grafeas/v1/{grafeas,vulnerability,discovery,
package,severity}.proto`.

- `discovery_state`: the DISCOVERY occurrences of one image → PENDING / SUCCEEDED / FAILED
- `vulnerability_findings`: VULNERABILITY occurrences → one `Finding` per package issue
- `parse_occurrence_notification`: a `container-analysis-occurrences-v1` message's data
- `resource_url` / `image_of_resource_uri`: image ↔ the occurrences' `resourceUri`

Proto3 leaves a field at its default out of the JSON (`SEVERITY_UNSPECIFIED`, a `false`
`fixAvailable`, a `0` score): absent and default read the same here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..errors import IntakeError, InvalidReference
from ..jsondoc import Node, load_json
from ..model import EventKind, Finding, ImageEvent, Severity
from ..reference import ImageRef
from ._common import checked_digest, clip, make_finding
from ._errors import ScanFormatError
from ._model import ScanStatus

__all__ = [
    "DISCOVERY",
    "EVENT_SOURCE",
    "FAILED_STATUSES",
    "NOTICE_LABEL",
    "PENDING_STATUSES",
    "SUCCESS_STATUSES",
    "TRIGGER_KINDS",
    "VULNERABILITY",
    "DiscoveryState",
    "OccurrenceNotice",
    "discovery_state",
    "image_of_resource_uri",
    "parse_occurrence_notification",
    "resource_url",
    "scan_event",
    "vulnerability_findings",
]

VULNERABILITY = "VULNERABILITY"
DISCOVERY = "DISCOVERY"
TRIGGER_KINDS = frozenset({VULNERABILITY, DISCOVERY})
"""Occurrence kinds whose change can change a verdict; BUILD, ATTESTATION, SBOM… cannot."""
EVENT_SOURCE = "gcp.containeranalysis"

SUCCESS_STATUSES = frozenset({"FINISHED_SUCCESS", "COMPLETE"})  # one enum value, two names
PENDING_STATUSES = frozenset({"PENDING", "SCANNING", "ANALYSIS_STATUS_UNSPECIFIED"})
"""No finished scan yet: the gate holds the image PENDING until `scanTimeout`. An absent
status is proto3's UNSPECIFIED: nothing is known yet."""
FAILED_STATUSES = frozenset({"FINISHED_FAILED", "FINISHED_UNSUPPORTED"})
# Any other status (one Google adds later) is a failed scan too: never read as clean.

_ANALYSIS_STATUS_NUMBERS = {
    0: "ANALYSIS_STATUS_UNSPECIFIED",
    1: "PENDING",
    2: "SCANNING",
    3: "FINISHED_SUCCESS",
    4: "FINISHED_FAILED",
    5: "FINISHED_UNSUPPORTED",
}
_VULN_NOTE_ID = "PACKAGE_VULNERABILITY"
"""The note of Artifact Analysis's vulnerability scan (`projects/goog-analysis/notes/…`,
or regional `projects/goog-analysis/locations/L/notes/…`): other DISCOVERY notes (an SBOM
export, …) do not say whether the vulnerability scan finished."""

#: grafeas `Severity` → regwarden's; UNSPECIFIED (0) says nothing and falls through.
_SEVERITIES: dict[str, Severity | None] = {
    "SEVERITY_UNSPECIFIED": None,
    "MINIMAL": Severity.NEGLIGIBLE,
    "LOW": Severity.LOW,
    "MEDIUM": Severity.MEDIUM,
    "HIGH": Severity.HIGH,
    "CRITICAL": Severity.CRITICAL,
}
_SEVERITY_NUMBERS = dict(enumerate(_SEVERITIES))
_VERSION_KINDS = {0: "VERSION_KIND_UNSPECIFIED", 1: "NORMAL", 2: "MINIMUM", 3: "MAXIMUM"}
UNSPECIFIED_FIX = "an unspecified version"
"""`fixed_version` when Artifact Analysis says a fix exists but names no version: the
finding stays fixable (a `fixableOnly` policy counts it)."""

_OCCURRENCES_LABEL = "Artifact Analysis occurrences"
NOTICE_LABEL = "Artifact Analysis occurrence notification"
_OCCURRENCE_NAME = re.compile(r"projects/[^/\s]+/(?:locations/[^/\s]+/)?occurrences/[^/\s]+")


# -- images and resource URLs ---------------------------------------------------------------


def resource_url(host: str, repository: str, digest: str) -> str:
    """`https://HOST/REPOSITORY@DIGEST`: the `resourceUri` Artifact Analysis files an
    image's occurrences under (`us-docker.pkg.dev`, repository `PROJECT/REPO/IMAGE`)."""
    checked_digest(digest, what="image digest")
    return f"https://{host}/{repository}@{digest}"


def image_of_resource_uri(uri: str) -> str | None:
    """`HOST/REPOSITORY@sha256:…` for an occurrence's `resourceUri` naming a container image
    by digest (`https://` optional: occurrences written through the API may omit it); None
    for anything else (a Maven or npm package, a tag, a bare path, a project)."""
    text = uri.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
            break
    host = text.split("/", 1)[0]
    if "/" not in text or ("." not in host and ":" not in host):
        return None  # no registry host: not an image in a registry
    try:
        ref = ImageRef.parse(text)
    except InvalidReference:
        return None
    if ref.digest is None or ref.tag is not None or ref.registry != host.lower():
        return None
    return f"{ref.registry}/{ref.repository}@{ref.digest}"


# -- discovery --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiscoveryState:
    """How Artifact Analysis's scan of one image stands."""

    status: ScanStatus
    """SUCCEEDED (read the vulnerabilities), PENDING (no result yet) or FAILED."""
    analysis_status: str | None
    """`discovery.analysisStatus` as sent (the deciding one); None: no DISCOVERY occurrence."""
    detail: str = ""
    """`discovery.analysisStatusError.message`, when the scan failed and Google said why."""
    scanned_at: datetime | None = None
    """`discovery.lastScanTime` (else the occurrence's `updateTime`) of a finished scan."""


def _root(value: object, label: str) -> Node:
    return Node(value, "", label=label, error=ScanFormatError)


def _enum(node: Node, numbers: Mapping[int, str]) -> str | None:
    """An enum by name (the REST API's default) or number (`enum-encoding=int`)."""
    if not node.present:
        return None
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        name = numbers.get(node.value)
        if name is None:
            node.fail("one of " + ", ".join(numbers.values()))
        return name
    return node.text().strip().upper()


def _note_id(occurrence: Node) -> str:
    note = occurrence.field("noteName").opt_text() or ""
    return note.rsplit("/", 1)[-1]


def _check_resource(occurrence: Node, expected: str | None) -> None:
    if expected is None:
        return
    got = occurrence.field("resourceUri")
    if got.present and got.text() != expected:
        got.fail(f"the requested image's resourceUri {expected}")


def discovery_state(
    occurrences: Iterable[Mapping[str, Any]], *, resource: str | None = None
) -> DiscoveryState:
    """The DISCOVERY occurrences of one image → how its scan stands.

    None of them: PENDING (Artifact Analysis writes one when the scan is queued; until then
    nothing is known). Those of the vulnerability scan's note (`…/notes/PACKAGE_VULNERABILITY`)
    decide when present, else all of them; several are read most cautiously: any failed →
    FAILED, else any unfinished → PENDING, else SUCCEEDED. `resource`: every occurrence
    must be about it.
    """
    nodes = _root(list(occurrences), _OCCURRENCES_LABEL).array()
    for node in nodes:
        node.mapping()
        _check_resource(node, resource)
        kind = node.field("kind").opt_text()
        if kind is not None and kind.upper() != DISCOVERY:
            node.field("kind").fail(repr(DISCOVERY))
    if not nodes:
        return DiscoveryState(ScanStatus.PENDING, None)
    scan_notes = [n for n in nodes if _note_id(n) == _VULN_NOTE_ID]
    deciding = scan_notes or nodes
    states: list[tuple[str, Node]] = []
    for node in deciding:
        discovery = node.field("discovery")
        status_node = discovery.field("analysisStatus") if discovery.present else discovery
        status = _enum(status_node, _ANALYSIS_STATUS_NUMBERS) or "ANALYSIS_STATUS_UNSPECIFIED"
        states.append((status, node))
    for status, node in states:
        if status not in SUCCESS_STATUSES and status not in PENDING_STATUSES:
            discovery = node.field("discovery")
            error = discovery.field("analysisStatusError") if discovery.present else discovery
            detail = error.field("message").opt_text() if error.present else None
            return DiscoveryState(ScanStatus.FAILED, status, detail or "")
    for status, _node in states:
        if status in PENDING_STATUSES:
            return DiscoveryState(ScanStatus.PENDING, status)
    times = [_scan_time(node) for _, node in states]
    known = [t for t in times if t is not None]
    return DiscoveryState(ScanStatus.SUCCEEDED, states[0][0], scanned_at=max(known, default=None))


def _scan_time(occurrence: Node) -> datetime | None:
    discovery = occurrence.field("discovery")
    when = discovery.field("lastScanTime").opt_timestamp() if discovery.present else None
    return when or occurrence.field("updateTime").opt_timestamp()


# -- vulnerabilities --------------------------------------------------------------------------


def _severity(node: Node) -> Severity | None:
    name = _enum(node, _SEVERITY_NUMBERS)
    if name is None:
        return None
    if name not in _SEVERITIES:
        node.fail("a severity, one of " + ", ".join(_SEVERITIES))
    return _SEVERITIES[name]


def _version(node: Node) -> str:
    """A grafeas `Version` as text: `fullName`, else `[epoch:]name[-revision]`."""
    if not node.present:
        return ""
    full = node.field("fullName").opt_text()
    if full:
        return full
    name = node.field("name").opt_text() or ""
    if not name:
        return ""
    revision = node.field("revision").opt_text()
    epoch = node.field("epoch")
    prefix = f"{epoch.integer(minimum=0)}:" if epoch.present and epoch.value else ""
    return f"{prefix}{name}" + (f"-{revision}" if revision else "")


def _flag(node: Node) -> bool | None:
    if not node.present:
        return None
    if not isinstance(node.value, bool):
        node.fail("true or false")
    return node.value


def _fix(issue: Node, vulnerability: Node) -> str | None:
    """The fixed version, or None when there is no fix: `fixedVersion.kind: MAXIMUM` is
    grafeas's "no version fixes it"; `fixAvailable: false` says the same."""
    fixed = issue.field("fixedVersion")
    kind = _enum(fixed.field("kind"), _VERSION_KINDS) if fixed.present else None
    if kind == "MAXIMUM":
        return None
    available = _flag(issue.field("fixAvailable"))
    if available is None:
        available = _flag(vulnerability.field("fixAvailable"))
    if available is False:
        return None
    text = _version(fixed)
    if text:
        return text
    return UNSPECIFIED_FIX if available else None


def _score(vulnerability: Node) -> float | None:
    """`cvssScore`, else the CVSS v3 then v2 base score; a 0 is proto3's "not set"."""
    candidates = [vulnerability.field("cvssScore")]
    for key in ("cvssv3", "cvssV2"):
        holder = vulnerability.field(key)
        if holder.present:
            candidates.append(holder.field("baseScore"))
    for node in candidates:
        score = node.opt_number(low=0.0, high=10.0)
        if score:
            return score
    return None


def _vulnerability_id(occurrence: Node, vulnerability: Node) -> str:
    note = _note_id(occurrence)
    if note:
        return note  # projects/goog-vulnz/notes/CVE-2023-4911 → CVE-2023-4911
    short = vulnerability.field("shortDescription").opt_text()
    if short:
        return short.strip()
    occurrence.fail("an occurrence with a noteName or vulnerability.shortDescription")


def vulnerability_findings(
    occurrences: Iterable[Mapping[str, Any]], *, resource: str | None = None
) -> list[Finding]:
    """VULNERABILITY occurrences → findings, one per package issue (one without a package
    when an occurrence lists none).

    Severity: the package issue's `effectiveSeverity` (the distribution's own rating), else
    the occurrence's `effectiveSeverity`, else its `severity` (the note's, from NVD); an
    unspecified one at every level is UNKNOWN. MINIMAL is NEGLIGIBLE. `resource`: every
    occurrence must be about it (a finding for another image is an error, never merged).
    """
    out: list[Finding] = []
    for node in _root(list(occurrences), _OCCURRENCES_LABEL).array():
        node.mapping()
        _check_resource(node, resource)
        kind = node.field("kind").opt_text()
        if kind is not None and kind.upper() != VULNERABILITY:
            node.field("kind").fail(repr(VULNERABILITY))
        vulnerability = node.field("vulnerability")
        if not vulnerability.present:
            vulnerability.fail("the occurrence's vulnerability details")
        vulnerability.mapping()
        vuln_id = _vulnerability_id(node, vulnerability)
        overall = _severity(vulnerability.field("effectiveSeverity")) or _severity(
            vulnerability.field("severity")
        )
        score = _score(vulnerability)
        short = vulnerability.field("shortDescription").opt_text()
        title = short if short and short.strip() != vuln_id else None
        title = title or clip(vulnerability.field("longDescription").opt_text())
        urls = vulnerability.field("relatedUrls").opt_array()
        url = urls[0].field("url").opt_text() if urls else None
        issues = vulnerability.field("packageIssue").opt_array()
        if not issues:
            out.append(
                make_finding(
                    vulnerability,
                    id=vuln_id,
                    severity=overall or Severity.UNKNOWN,
                    fixed_version=_fix(vulnerability, vulnerability),
                    cvss=score,
                    title=clip(title),
                    url=url,
                )
            )
            continue
        for issue in issues:
            issue.mapping()
            severity = _severity(issue.field("effectiveSeverity")) or overall
            out.append(
                make_finding(
                    issue,
                    id=vuln_id,
                    severity=severity or Severity.UNKNOWN,
                    package=issue.field("affectedPackage").opt_text() or "",
                    installed_version=_version(issue.field("affectedVersion")),
                    fixed_version=_fix(issue, vulnerability),
                    cvss=score,
                    title=clip(title),
                    url=url,
                )
            )
    return out


# -- the occurrence stream ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OccurrenceNotice:
    """One `container-analysis-occurrences-v1` message: an occurrence was created or
    updated. It names no image: `image_of_occurrence` fetches the occurrence to find it."""

    name: str
    """`projects/P/occurrences/ID`."""
    kind: str
    """grafeas `NoteKind` by name: VULNERABILITY, DISCOVERY, BUILD, …"""
    notification_time: datetime

    @property
    def triggers(self) -> bool:
        """Whether this change can change a verdict (VULNERABILITY or DISCOVERY)."""
        return self.kind in TRIGGER_KINDS


def parse_occurrence_notification(data: bytes) -> OccurrenceNotice:
    """`{"name", "kind", "notificationTime"}` (the Pub/Sub message's data, decoded from
    base64) → an `OccurrenceNotice`. Malformed input raises IntakeError naming the field."""
    root = load_json(data, label=NOTICE_LABEL, error=IntakeError)
    root.mapping()
    name_node = root.field("name")
    name = name_node.text().strip()
    if not _OCCURRENCE_NAME.fullmatch(name):
        name_node.fail("an occurrence name like projects/PROJECT/occurrences/ID")
    kind = root.field("kind").text().strip().upper()
    when = root.field("notificationTime").timestamp()
    return OccurrenceNotice(name=name, kind=kind, notification_time=when)


def scan_event(image_ref: str | ImageRef, notice: OccurrenceNotice, message_id: str) -> ImageEvent:
    """The SCANNED event for the image an occurrence notice is about (`image_ref` from
    `image_of_occurrence`, by digest): the pipeline re-evaluates the image, reading
    Artifact Analysis afresh. The Pub/Sub message id is the delivery id."""
    try:
        image = image_ref if isinstance(image_ref, ImageRef) else ImageRef.parse(image_ref)
    except InvalidReference as exc:
        raise IntakeError(f"invalid {NOTICE_LABEL}'s image: {exc}") from None
    if image.digest is None:
        raise IntakeError(
            f"invalid {NOTICE_LABEL}'s image: got {image}, expected a reference by digest"
        )
    if not message_id.strip():
        raise IntakeError(f"invalid {NOTICE_LABEL}: got an empty message id, expected one")
    try:
        return ImageEvent(
            kind=EventKind.SCANNED,
            source=EVENT_SOURCE,
            image=image.with_tag(None),
            time=notice.notification_time,
            delivery_id=message_id,
        )
    except ValidationError as exc:
        raise IntakeError(
            f"invalid {NOTICE_LABEL}: cannot build an event ({exc.errors()[0]['msg']})"
        ) from None
