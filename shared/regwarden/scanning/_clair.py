"""Clair v4's API documents, pure: the PSK JWT, the Manifest to index, the IndexReport and
the VulnerabilityReport (shapes from Clair's OpenAPI spec, `httptransport/api/v1/
openapi.yaml`, and its JSON Schemas, `httptransport/types/v1/*.schema.json`).

Severity is Clair's `normalized_severity` (`Unknown`, `Negligible`, `Low`, `Medium`,
`High`, `Critical`), taken one to one: regwarden's scale has the same six steps, so
`Negligible` stays NEGLIGIBLE (below LOW) and `Unknown` stays UNKNOWN, as Harbor's Clair
adapter reports them too. The vendor's own `severity` text is not read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..errors import UsageError
from ..jsondoc import Node, load_json
from ..model import Finding, ScanReport, Severity
from ._common import checked_digest, clip, make_finding, node_digest, severity
from ._errors import ScanFormatError

__all__ = [
    "INDEX_ERROR",
    "INDEX_FINISHED",
    "ISSUER",
    "JWT_LIFETIME",
    "SCANNER",
    "SOURCE",
    "ClairIndex",
    "index_request",
    "merge_reports",
    "parse_index_report",
    "parse_vulnerability_report",
    "psk_jwt",
    "psk_key",
]

SCANNER = "clair"
SOURCE = "clair"
ISSUER = "regwarden"
"""The JWT's `iss`: Clair's `auth.psk.iss` must list it."""
JWT_LIFETIME = timedelta(minutes=5)
INDEX_FINISHED = "IndexFinished"
INDEX_ERROR = "IndexError"
_INDEX_LABEL = "Clair index report"
_REPORT_LABEL = "Clair vulnerability report"


# -- auth ---------------------------------------------------------------------------------------


def psk_key(encoded: str, *, name: str) -> bytes:
    """Clair's PSK as its `auth.psk.key` holds it (standard base64) → the HMAC key.
    `name` (the secret's name) is what an error shows, never the value."""
    text = "".join(encoded.split())
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise UsageError(
            f"Clair PSK {name!r}: expected the key base64-encoded, as Clair's auth.psk.key "
            "holds it; got something else"
        )
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def psk_jwt(
    key: bytes, *, now: datetime, lifetime: timedelta = JWT_LIFETIME, issuer: str = ISSUER
) -> str:
    """An HS256 JWT Clair's PSK middleware accepts: `iss` (on Clair's allowlist), `iat`,
    `nbf` and a short `exp` (Clair checks all three with 15 s leeway)."""
    if now.tzinfo is None:
        raise ValueError(f"got naive datetime {now.isoformat()}, expected a timezone-aware now")
    issued = int(now.timestamp())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "iss": issuer,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime.total_seconds()),
    }
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    mac = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(mac)}"


# -- indexer ------------------------------------------------------------------------------------


def index_request(
    manifest_digest: str, layers: Sequence[tuple[str, str]], *, authorization: str | None
) -> bytes:
    """The `Manifest` to `POST /indexer/api/v1/index_report`: each layer's digest and the
    URL Clair fetches it from, with `authorization` (a registry Bearer value) as its only
    header, or no header (Clair uses its own registry configuration)."""
    doc: dict[str, object] = {
        "hash": checked_digest(manifest_digest, what="manifest digest"),
        "layers": [
            {
                "hash": checked_digest(digest, what="layer digest"),
                "uri": uri,
                "headers": {"Authorization": [authorization]} if authorization else {},
            }
            for digest, uri in layers
        ],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class ClairIndex:
    """How Clair's indexing of one manifest stands (an IndexReport's `state`, `success`
    and `err`)."""

    state: str
    success: bool
    err: str = ""

    @property
    def finished(self) -> bool:
        return self.state == INDEX_FINISHED

    @property
    def failed(self) -> bool:
        return self.state == INDEX_ERROR or (not self.success and bool(self.err))


def parse_index_report(data: bytes, *, digest: str) -> ClairIndex:
    """Read an IndexReport (`manifest_hash`, `state`, `success`, `err`); the manifest must
    be `digest`. Raises ScanFormatError."""
    checked = checked_digest(digest, what="digest argument")
    root = load_json(data, label=_INDEX_LABEL, error=ScanFormatError)
    root.mapping()
    hash_node = root.field("manifest_hash")
    if node_digest(hash_node) != checked:
        hash_node.fail(f"the requested manifest {checked}")
    success = root.field("success")
    if not isinstance(success.value, bool):
        success.fail("true or false")
    return ClairIndex(
        state=root.field("state").text(),
        success=success.value,
        err=root.field("err").opt_text() or "",
    )


# -- matcher ------------------------------------------------------------------------------------


def parse_vulnerability_report(
    data: bytes, *, digest: str, scanned_at: datetime | None = None
) -> ScanReport:
    """Normalise a VulnerabilityReport: one finding per (package, vulnerability) pair that
    `package_vulnerabilities` lists, the package's name and installed version from
    `packages`, the vulnerability's `name`, `normalized_severity`, `fixed_in_version`,
    `description` and first link from `vulnerabilities`. The report carries no time of its
    own (the matcher makes it on request against its current data): `scanned_at` is when
    it was made (the answer's `Date`). Raises ScanFormatError."""
    checked = checked_digest(digest, what="digest argument")
    root = load_json(data, label=_REPORT_LABEL, error=ScanFormatError)
    root.mapping()
    hash_node = root.field("manifest_hash")
    if node_digest(hash_node) != checked:
        hash_node.fail(f"the requested manifest {checked}")
    packages = root.field("packages")
    vulnerabilities = root.field("vulnerabilities")
    found: list[Finding] = []
    for package_id, vulnerability_ids in root.field("package_vulnerabilities").items():
        package = packages.field(package_id)
        if not package.present:
            package.fail("the package package_vulnerabilities names")
        for id_node in vulnerability_ids.opt_array():
            vulnerability = vulnerabilities.field(id_node.text())
            if not vulnerability.present:
                vulnerability.fail("the vulnerability package_vulnerabilities names")
            found.append(_finding(vulnerability, package))
    return ScanReport(
        digest=checked,
        scanner=SCANNER,
        source=SOURCE,
        scanned_at=scanned_at,
        findings=dedupe(found),
    )


def _finding(vulnerability: Node, package: Node) -> Finding:
    vulnerability.mapping()
    links = (vulnerability.field("links").opt_text() or "").split()
    return make_finding(
        vulnerability,
        id=vulnerability.field("name").text(),
        severity=severity(vulnerability.field("normalized_severity")),
        package=package.field("name").text(),
        installed_version=package.field("version").opt_text() or "",
        fixed_version=vulnerability.field("fixed_in_version").opt_text(),
        title=clip(vulnerability.field("description").opt_text()),
        url=links[0] if links else None,
    )


def dedupe(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """One finding per (vulnerability, package, installed version), the most severe kept:
    Clair lists a CVE once per updater that knows it, and each platform of an index
    reports its own copy."""
    best: dict[tuple[str, str, str], Finding] = {}
    for finding in findings:
        key = (finding.id, finding.package, finding.installed_version)
        kept = best.get(key)
        if kept is None or _rank(finding) > _rank(kept):
            best[key] = finding
    return tuple(best.values())


def _rank(finding: Finding) -> tuple[Severity, bool]:
    return finding.severity, finding.fixed_version is not None


def merge_reports(digest: str, reports: Sequence[tuple[str, ScanReport]]) -> ScanReport:
    """The report for index `digest` from its platforms' reports (`(platform, report)`):
    every platform's findings, deduplicated; scanned when the oldest was; the note names
    the platforms judged."""
    if not reports:
        raise ValueError("merge_reports: expected at least one platform's report")
    times = [r.scanned_at for _, r in reports if r.scanned_at is not None]
    platforms = ", ".join(f"{platform} ({r.digest})" for platform, r in reports)
    return ScanReport(
        digest=checked_digest(digest, what="index digest"),
        scanner=SCANNER,
        source=SOURCE,
        scanned_at=min(times) if len(times) == len(reports) else None,
        findings=dedupe(f for _, r in reports for f in r.findings),
        note=f"Clair scanned each platform of the index: {platforms}",
    )
