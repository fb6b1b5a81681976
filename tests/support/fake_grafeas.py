"""A loopback stand-in for Artifact Analysis's Grafeas v1 REST API (the occurrences the
`artifact-analysis` scan source and `on_scan` read).

Routes, from the REST transport's URL templates (grafeas `grafeas_v1/services/grafeas/
transports/rest_base.py`):

- `GET /v1/projects/P/occurrences?filter=…&pageSize=N&pageToken=T` (ListOccurrences):
  `{"occurrences": [...], "nextPageToken": "…"}` (`grafeas_v1/types/grafeas.py`
  `ListOccurrencesResponse`; the token is left out on the last page, as proto3 JSON leaves
  out an empty string). `pageSize` defaults to 20 and is capped at 1000, as the API
  documents. The filter understands the forms regwarden sends — `kind="KIND"`,
  `resourceUrl="URL"`, and both joined with ` AND ` — and answers 400 INVALID_ARGUMENT
  for anything else, so a changed filter cannot silently match everything.
- `GET /v1/projects/P/occurrences/ID` (GetOccurrence): the `Occurrence`, or 404.

Occurrence shapes (camelCase, enums by name, default values left out) from `grafeas_v1/
types/grafeas.py` (`Occurrence`), `vulnerability.py` (`VulnerabilityOccurrence`,
`PackageIssue`), `package.py` (`Version`, kind MAXIMUM = no fix), `cvss.py`, `discovery.py`
(`DiscoveryOccurrence.analysisStatus`, `lastScanTime`), and the recorded sample in the
handbook's events reference §2.3. The discovery note is Artifact Analysis's own,
`projects/goog-analysis/notes/PACKAGE_VULNERABILITY`; vulnerability notes are
`projects/goog-vulnz/notes/CVE-…`.

`notifications` holds what each change would publish on `container-analysis-occurrences-v1`
(`{"name", "kind", "notificationTime"}`, the sample in §2.3).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from support.google_fake import GoogleFake, Reply, Request, google_error

__all__ = ["DISCOVERY_NOTE", "FakeGrafeas"]

DISCOVERY_NOTE = "projects/goog-analysis/notes/PACKAGE_VULNERABILITY"
VULNZ_NOTES = "projects/goog-vulnz/notes/"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 1000

_TERM = re.compile(r'\s*(kind|resourceUrl)\s*=\s*"([^"\\]*)"\s*')
_FINISHED = frozenset({"FINISHED_SUCCESS", "COMPLETE", "FINISHED_FAILED", "FINISHED_UNSUPPORTED"})


def _timestamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _project(resource_uri: str) -> str:
    """`https://HOST/PROJECT/…` → PROJECT: an image's occurrences live in its project."""
    path = resource_uri.split("://", 1)[-1]
    parts = path.split("/")
    if len(parts) < 3:
        raise ValueError(f"resource URI {resource_uri!r}: expected https://HOST/PROJECT/...")
    return parts[1]


def _version(text: str) -> dict[str, Any]:
    name, _, revision = text.partition("-")
    out: dict[str, Any] = {"name": name, "kind": "NORMAL", "fullName": text}
    if revision:
        out["revision"] = revision
    return out


class FakeGrafeas(GoogleFake):
    """Occurrences by project; `add_vulnerability` / `set_discovery` change them as
    Artifact Analysis would, each change recorded in `notifications`."""

    def __init__(self, *, now: datetime | None = None) -> None:
        super().__init__()
        self.now = now or datetime(2026, 1, 1, tzinfo=UTC)
        """The time stamped on every change (createTime, updateTime, lastScanTime,
        notificationTime)."""
        self.occurrences: dict[str, dict[str, Any]] = {}
        """By name (`projects/P/occurrences/ID`), in creation order."""
        self.notifications: list[dict[str, Any]] = []
        base = r"/v1/projects/(?P<project>[^/]+)/occurrences"
        self.route("GET", base, self._list)
        self.route("GET", base + r"/(?P<id>[^/]+)", self._get)

    # -- test API ----------------------------------------------------------------------------

    def add_occurrence(self, project: str, body: dict[str, Any]) -> str:
        """Store `body` (an Occurrence, any kind) under a new name; returns the name."""
        with self.lock:
            name = f"projects/{project}/occurrences/{uuid.uuid4()}"
            stamp = _timestamp(self.now)
            occurrence = {"name": name, **body, "createTime": stamp, "updateTime": stamp}
            self.occurrences[name] = occurrence
            self._notify(occurrence)
            return name

    def add_vulnerability(
        self,
        resource_uri: str,
        cve: str,
        severity: str,
        *,
        package: str,
        version: str,
        fixed: str | None = None,
        cvss: float | None = None,
        effective: str | None = None,
    ) -> str:
        """A VULNERABILITY occurrence for `cve` in `package` at `version`. `severity` is the
        note's (NVD) severity; `effective` the distribution's, set on the occurrence and its
        package issue (absent when None, as an UNSPECIFIED enum is). `fixed` None: no fix
        (`fixedVersion.kind: MAXIMUM`, `fixAvailable` false and so left out)."""
        issue: dict[str, Any] = {
            "affectedCpeUri": "cpe:/o:debian:debian_linux:12",
            "affectedPackage": package,
            "affectedVersion": _version(version),
            "fixedCpeUri": "cpe:/o:debian:debian_linux:12",
            "fixedPackage": package,
            "fixedVersion": _version(fixed) if fixed else {"kind": "MAXIMUM"},
            "packageType": "OS",
            "fileLocation": [{"filePath": "/var/lib/dpkg/status"}],
        }
        vulnerability: dict[str, Any] = {
            "type": "OS",
            "severity": severity,
            "packageIssue": [issue],
            "shortDescription": cve,
            "longDescription": f"NIST vectors: CVSS:3.1/AV:N for {cve}",
            "relatedUrls": [{"url": f"https://security-tracker.debian.org/tracker/{cve}"}],
        }
        if fixed:
            issue["fixAvailable"] = True
            vulnerability["fixAvailable"] = True
        if effective is not None:
            issue["effectiveSeverity"] = effective
            vulnerability["effectiveSeverity"] = effective
        if cvss is not None:
            vulnerability["cvssScore"] = cvss
            vulnerability["cvssVersion"] = "CVSS_VERSION_3"
            vulnerability["cvssv3"] = {"baseScore": cvss, "attackVector": "ATTACK_VECTOR_NETWORK"}
        return self.add_occurrence(
            _project(resource_uri),
            {
                "resourceUri": resource_uri,
                "noteName": VULNZ_NOTES + cve,
                "kind": "VULNERABILITY",
                "vulnerability": vulnerability,
            },
        )

    def set_discovery(self, resource_uri: str, status: str) -> str:
        """Create or update the image's DISCOVERY occurrence with `analysisStatus` `status`
        (PENDING, SCANNING, FINISHED_SUCCESS, FINISHED_FAILED, FINISHED_UNSUPPORTED);
        returns its name."""
        discovery: dict[str, Any] = {"continuousAnalysis": "ACTIVE", "analysisStatus": status}
        if status in _FINISHED:
            discovery["lastScanTime"] = _timestamp(self.now)
        if status == "FINISHED_FAILED":
            discovery["analysisStatusError"] = {"code": 13, "message": "failed to scan image"}
        with self.lock:
            for name, occurrence in self.occurrences.items():
                if (
                    occurrence.get("kind") == "DISCOVERY"
                    and occurrence.get("resourceUri") == resource_uri
                    and occurrence.get("noteName") == DISCOVERY_NOTE
                ):
                    occurrence["discovery"] = discovery
                    occurrence["updateTime"] = _timestamp(self.now)
                    self._notify(occurrence)
                    return name
            return self.add_occurrence(
                _project(resource_uri),
                {
                    "resourceUri": resource_uri,
                    "noteName": DISCOVERY_NOTE,
                    "kind": "DISCOVERY",
                    "discovery": discovery,
                },
            )

    def delete(self, name: str) -> None:
        with self.lock:
            del self.occurrences[name]

    def _notify(self, occurrence: dict[str, Any]) -> None:
        self.notifications.append(
            {
                "name": occurrence["name"],
                "kind": occurrence["kind"],
                "notificationTime": _timestamp(self.now),
            }
        )

    # -- routes ------------------------------------------------------------------------------

    def _list(self, request: Request) -> Reply:
        project = request.params["project"]
        text = request.arg("filter") or ""
        terms: dict[str, str] = {}
        for part in text.split(" AND ") if text else []:
            match = _TERM.fullmatch(part)
            if match is None or match.group(1) in terms:
                return google_error(400, f"Invalid filter: {text!r}")
            terms[match.group(1)] = match.group(2)
        size_text = request.arg("pageSize") or "0"
        if not size_text.isdigit():
            return google_error(400, f"Invalid pageSize: {size_text!r}")
        size = min(int(size_text) or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        token = request.arg("pageToken") or "0"
        if not token.isdigit():
            return google_error(400, f"Invalid pageToken: {token!r}")
        start = int(token)
        prefix = f"projects/{project}/occurrences/"
        selected = [
            occurrence
            for name, occurrence in self.occurrences.items()
            if name.startswith(prefix)
            and all(
                occurrence.get("kind" if key == "kind" else "resourceUri") == value
                for key, value in terms.items()
            )
        ]
        page = selected[start : start + size]
        body: dict[str, Any] = {"occurrences": page} if page else {}  # proto3 JSON: no empty list
        if start + size < len(selected):
            body["nextPageToken"] = str(start + size)
        return 200, body

    def _get(self, request: Request) -> Reply:
        name = f"projects/{request.params['project']}/occurrences/{request.params['id']}"
        occurrence = self.occurrences.get(name)
        if occurrence is None:
            return google_error(404, f"Requested entity was not found: {name}")
        return 200, occurrence
