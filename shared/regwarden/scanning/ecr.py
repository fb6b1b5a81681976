"""ECR image scans → `regwarden.model.ScanReport`: basic scanning, enhanced scanning
(Amazon Inspector), and the `ScanSource` the push gate calls.

Pure parsers over what boto3 returns (no I/O, no clock):

- `ecr_scan_result(pages, digest=...)`: describe_image_scan_findings pages (basic
  `findings[]` and enhanced `enhancedFindings[]`) → `EcrScanResult`
- `inspector_report(findings, digest=...)`: inspector2 list_findings items → `ScanReport`

I/O helpers (boto3 clients passed in):

- `start_image_scan`, `describe_image_scan`, `list_inspector_findings`
- `EcrScanSource`: `(registry, image) -> ScanReport | None` for `Pipeline.scans`

Mapping rules: severities go through `Severity.parse` (`UNTRIAGED`/`UNDEFINED` → unknown);
one `Finding` per vulnerable package; `fixedInVersion` is the fix unless Inspector says
`fixAvailable: NO` or `NotAvailable`; basic findings carry no fix version (ECR basic
scanning does not report one), so `fixableOnly` policies see them as unfixable; the score
is Inspector's `score`/`inspectorScore`, else the highest CVSS base score, else basic
scanning's `CVSS3_SCORE`/`CVSS2_SCORE` attribute. Suppressed and closed Inspector findings
are left out. Malformed input raises `ScanFormatError` naming the path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import NotFound, RegistryError, VerificationError
from ..jsondoc import Node
from ..model import Finding, ScanReport, Severity
from ..reference import ImageRef
from ._common import checked_digest, clip, make_finding
from ._errors import ScanFormatError
from ._model import ScanStatus

__all__ = [
    "DESCRIBE_FINDINGS_PAGE_SIZE",
    "INSPECTOR_PAGE_SIZE",
    "PENDING_STATUSES",
    "SCANNER_BASIC",
    "SCANNER_ENHANCED",
    "SUCCESS_STATUSES",
    "EcrScanFailed",
    "EcrScanResult",
    "EcrScanSource",
    "describe_image_scan",
    "ecr_scan_result",
    "inspector_report",
    "list_inspector_findings",
    "start_image_scan",
]

log = logging.getLogger("regwarden.scanning.ecr")

SCANNER_BASIC = "amazon-ecr-basic"
SCANNER_ENHANCED = "amazon-inspector"
DESCRIBE_FINDINGS_PAGE_SIZE = 1000
"""`maxResults` for describe_image_scan_findings (ECR's maximum; its default is 100)."""
INSPECTOR_PAGE_SIZE = 100
"""`maxResults` for inspector2 list_findings (Inspector's maximum)."""

SUCCESS_STATUSES = frozenset({"COMPLETE", "ACTIVE"})
"""`imageScanStatus.status` values with findings to read (ACTIVE: continuous enhanced)."""
PENDING_STATUSES = frozenset({"IN_PROGRESS", "PENDING"})
"""Statuses meaning "no scan yet": the gate holds the image as PENDING."""
# Everything else (FAILED, UNSUPPORTED_IMAGE, SCAN_ELIGIBILITY_EXPIRED,
# FINDINGS_UNAVAILABLE, LIMIT_EXCEEDED, and any status ECR adds later) is a failed scan:
# never read as clean.

_UNKNOWN_SEVERITIES = frozenset({"UNTRIAGED", "UNDEFINED", "UNKNOWN"})
_NO_FIX = frozenset({"", "NOTAVAILABLE", "NOT_AVAILABLE", "NONE", "N/A"})
_LABEL_ECR = "ECR scan findings"
_LABEL_INSPECTOR = "Inspector2 findings"


class EcrScanFailed(VerificationError):
    """ECR reports the scan of this image failed or cannot happen; fail closed."""

    def __init__(self, result: EcrScanResult, *, image: str) -> None:
        super().__init__(
            f"ECR scan of {image} did not produce findings: status {result.ecr_status}"
            + (f" ({result.description})" if result.description else "")
            + f"; expected one of {', '.join(sorted(SUCCESS_STATUSES))}",
        )
        self.result = result
        self.image = image


@dataclass(frozen=True, slots=True)
class EcrScanResult:
    """How ECR's scan of one digest stands, and the report when it completed."""

    digest: str
    ecr_status: str
    """`imageScanStatus.status` exactly as ECR sent it."""
    status: ScanStatus
    """SUCCEEDED (report set), PENDING (no scan yet) or FAILED (never read as clean)."""
    description: str = ""
    report: ScanReport | None = None


# -- pure parsing -----------------------------------------------------------------------------


def _root(value: object, label: str) -> Node:
    return Node(value, "", label=label, error=ScanFormatError)


def _when(node: Node) -> datetime | None:
    """boto3 datetimes, epoch seconds or ISO strings; Inspector's free-form strings → None."""
    value = node.value
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not node.present or value == "":
        return None
    if isinstance(value, str):
        try:
            return node.timestamp()
        except ScanFormatError:
            return None  # "Wed Sep 04 16:55:38.411 UTC 2024": ordering uses other times
    return node.timestamp()


def _severity(node: Node) -> Severity:
    text = node.text()
    if text.strip().upper() in _UNKNOWN_SEVERITIES:
        return Severity.UNKNOWN
    try:
        return Severity.parse(text)
    except ValueError:
        valid = ", ".join(s.name for s in Severity)
        node.fail(f"a severity, one of {valid}, UNTRIAGED, UNDEFINED")


def _attributes(node: Node) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in node.opt_array():
        key = item.field("key").text()
        value = item.field("value")
        out[key] = value.text(nonempty=False) if value.present else ""
    return out


def _score_attribute(attrs: Mapping[str, str], node: Node) -> float | None:
    for key in ("CVSS4_SCORE", "CVSS3_SCORE", "CVSS2_SCORE"):
        text = attrs.get(key)
        if text:
            try:
                score = float(text)
            except ValueError:
                node.fail(f"a number in attribute {key}", got=repr(text))
            if not 0.0 <= score <= 10.0:
                node.fail(f"a CVSS score between 0 and 10 in attribute {key}", got=repr(text))
            return score
    return None


def _basic_findings(items: list[Node]) -> list[Finding]:
    out: list[Finding] = []
    for node in items:
        attrs = _attributes(node.field("attributes"))
        out.append(
            make_finding(
                node,
                id=node.field("name").text(),
                severity=_severity(node.field("severity")),
                package=attrs.get("package_name", ""),
                installed_version=attrs.get("package_version", ""),
                fixed_version=None,
                cvss=_score_attribute(attrs, node.field("attributes")),
                title=clip(node.field("description").opt_text()),
                url=node.field("uri").opt_text(),
            )
        )
    return out


def _cvss(node: Node) -> float | None:
    """Inspector's score (API `score`, events `inspectorScore`, or their details), else the
    highest CVSS base score it lists."""
    candidates = [
        node.field("score"),
        node.field("inspectorScore"),
        node.field("scoreDetails").field("cvss").field("score")
        if node.field("scoreDetails").present and node.field("scoreDetails").field("cvss").present
        else None,
        node.field("inspectorScoreDetails").field("adjustedCvss").field("score")
        if node.field("inspectorScoreDetails").present
        and node.field("inspectorScoreDetails").field("adjustedCvss").present
        else None,
    ]
    for candidate in candidates:
        score = candidate.opt_number(low=0.0, high=10.0) if candidate is not None else None
        if score is not None:
            return score
    details = node.field("packageVulnerabilityDetails")
    if not details.present:
        return None
    scores = [
        entry.field("baseScore").opt_number(low=0.0, high=10.0)
        for entry in details.field("cvss").opt_array()
    ]
    present = [s for s in scores if s is not None]
    return max(present) if present else None


def _version(pkg: Node) -> str:
    version = pkg.field("version").opt_text() or ""
    release = pkg.field("release").opt_text()
    return f"{version}-{release}" if version and release else version


def _enhanced_findings(items: list[Node]) -> list[Finding]:
    out: list[Finding] = []
    for node in items:
        status = node.field("status").opt_text()
        if status is not None and status.upper() != "ACTIVE":
            continue  # SUPPRESSED or CLOSED: Inspector no longer reports it as present
        details = node.field("packageVulnerabilityDetails")
        vuln_id = details.field("vulnerabilityId").opt_text() if details.present else None
        vuln_id = vuln_id or node.field("title").opt_text()
        if vuln_id is None:
            details.fail("packageVulnerabilityDetails.vulnerabilityId or a title")
        severity = _severity(node.field("severity"))
        fix_available = (node.field("fixAvailable").opt_text() or "").upper()
        exploit = (node.field("exploitAvailable").opt_text() or "").upper() == "YES"
        cvss = _cvss(node)
        title = node.field("title").opt_text() or clip(node.field("description").opt_text())
        url = None
        if details.present:
            url = details.field("sourceUrl").opt_text()
            if url is None:
                refs = details.field("referenceUrls").opt_array()
                url = refs[0].opt_text() if refs else None
        packages = details.field("vulnerablePackages").opt_array() if details.present else []
        if not packages:
            out.append(
                make_finding(
                    node,
                    id=vuln_id,
                    severity=severity,
                    cvss=cvss,
                    title=clip(title),
                    url=url,
                    exploit_available=exploit,
                )
            )
            continue
        for pkg in packages:
            fixed = pkg.field("fixedInVersion").opt_text()
            if fix_available == "NO" or (fixed or "").strip().upper() in _NO_FIX:
                fixed = None
            out.append(
                make_finding(
                    pkg,
                    id=vuln_id,
                    severity=severity,
                    package=pkg.field("name").text(),
                    installed_version=_version(pkg),
                    fixed_version=fixed,
                    cvss=cvss,
                    title=clip(title),
                    url=url,
                    exploit_available=exploit,
                )
            )
    return out


def ecr_scan_result(pages: Iterable[Mapping[str, Any]], *, digest: str) -> EcrScanResult:
    """Normalise describe_image_scan_findings pages (as boto3 returns them) for `digest`.

    The status comes from the first page; findings from every page. A completed scan
    with findings of both kinds reports both scanners.
    """
    checked_digest(digest, what="image digest")
    status: str | None = None
    description = ""
    scanned_at: datetime | None = None
    basic: list[Finding] = []
    enhanced: list[Finding] = []
    saw_basic = saw_enhanced = False
    for number, page in enumerate(pages):
        root = _root(page, f"{_LABEL_ECR} (page {number + 1})")
        image_id = root.field("imageId")
        if image_id.present and image_id.field("imageDigest").present:
            got = image_id.field("imageDigest").text()
            if got != digest:
                image_id.field("imageDigest").fail(f"the requested digest {digest}")
        if status is None:
            scan_status = root.field("imageScanStatus")
            status = scan_status.field("status").text()
            description = scan_status.field("description").opt_text() or ""
        findings = root.field("imageScanFindings")
        if not findings.present:
            continue
        scanned_at = scanned_at or _when(findings.field("imageScanCompletedAt"))
        if findings.has("findings"):
            saw_basic = True
            basic.extend(_basic_findings(findings.field("findings").opt_array()))
        if findings.has("enhancedFindings"):
            saw_enhanced = True
            enhanced.extend(_enhanced_findings(findings.field("enhancedFindings").opt_array()))
    if status is None:
        raise ScanFormatError(f"invalid {_LABEL_ECR}: no pages, expected at least one response")
    upper = status.upper()
    if upper in PENDING_STATUSES:
        return EcrScanResult(digest, status, ScanStatus.PENDING, description)
    if upper not in SUCCESS_STATUSES:
        return EcrScanResult(digest, status, ScanStatus.FAILED, description)
    scanners = [SCANNER_BASIC] if saw_basic or not saw_enhanced else []
    if saw_enhanced:
        scanners.append(SCANNER_ENHANCED)
    report = ScanReport(
        digest=digest,
        scanner=" + ".join(scanners),
        source="ecr-describe-image-scan-findings",
        scanned_at=scanned_at,
        findings=tuple(basic + enhanced),
    )
    return EcrScanResult(digest, status, ScanStatus.SUCCEEDED, description, report)


def inspector_report(
    findings: Iterable[Mapping[str, Any]], *, digest: str, scanned_at: datetime | None = None
) -> ScanReport:
    """inspector2 list_findings items for one image → ScanReport (ACTIVE findings only).

    Each finding must be about `digest` when it names its image (`resources[].details
    .awsEcrContainerImage.imageHash`): a finding for another image is an error, never
    silently merged. `scanned_at` defaults to the latest `updatedAt`/`lastObservedAt`.
    """
    checked_digest(digest, what="image digest")
    items = list(findings)
    root = _root(items, _LABEL_INSPECTOR)
    nodes = root.array()
    latest: datetime | None = None
    for node in nodes:
        for resource in node.field("resources").opt_array():
            image = resource.field("details").field("awsEcrContainerImage")
            if image.present and image.field("imageHash").present:
                got = image.field("imageHash").text()
                if got != digest:
                    image.field("imageHash").fail(f"the requested digest {digest}")
        for key in ("updatedAt", "lastObservedAt"):
            when = _when(node.field(key))
            if when is not None and (latest is None or when > latest):
                latest = when
    return ScanReport(
        digest=digest,
        scanner=SCANNER_ENHANCED,
        source="inspector2-list-findings",
        scanned_at=scanned_at or latest,
        findings=tuple(_enhanced_findings(nodes)),
    )


# -- I/O --------------------------------------------------------------------------------------


def _client_error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        return str(code) if code else None
    return None


def _botocore_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def _registry_error(exc: Exception, what: str) -> RegistryError:
    code = _client_error_code(exc)
    if code in ("RepositoryNotFoundException", "ImageNotFoundException"):
        return NotFound(f"{what}: {code}")
    return RegistryError(f"{what} failed: {code or exc}")


def start_image_scan(
    ecr: Any, repository: str, digest: str, *, registry_id: str | None = None
) -> bool:
    """Ask ECR to scan `digest` now; True if a scan started.

    False when ECR answers `LimitExceededException` (the image was already scanned
    today: ECR allows one manual basic scan per image per day), which is not an error.
    Pass a client WITHOUT automatic retries (the ECR provider's `no_retry_client`): botocore
    classifies `LimitExceededException` as throttling and would retry it for a minute.
    """
    params: dict[str, Any] = {"repositoryName": repository, "imageId": {"imageDigest": digest}}
    if registry_id:
        params["registryId"] = registry_id
    try:
        ecr.start_image_scan(**params)
    except _botocore_errors() as exc:
        if _client_error_code(exc) == "LimitExceededException":
            log.info("scan of %s@%s already started today", repository, digest)
            return False
        raise _registry_error(exc, f"start image scan of {repository}@{digest}") from exc
    return True


def _finding_pages(
    ecr: Any, params: dict[str, Any], page_size: int, what: str
) -> Iterator[dict[str, Any]]:
    paginator = ecr.get_paginator("describe_image_scan_findings")
    try:
        yield from paginator.paginate(**params, PaginationConfig={"PageSize": page_size})
    except _botocore_errors() as exc:
        raise _registry_error(exc, what) from exc


def describe_image_scan(
    ecr: Any,
    repository: str,
    digest: str,
    *,
    registry_id: str | None = None,
    page_size: int = DESCRIBE_FINDINGS_PAGE_SIZE,
) -> EcrScanResult | None:
    """All pages of describe_image_scan_findings for `digest`, normalised.

    None when ECR has no scan for the image at all (`ScanNotFoundException`).
    """
    params: dict[str, Any] = {"repositoryName": repository, "imageId": {"imageDigest": digest}}
    if registry_id:
        params["registryId"] = registry_id
    what = f"describe image scan findings of {repository}@{digest}"
    pages = _finding_pages(ecr, params, page_size, what)
    try:
        first = next(pages)
    except StopIteration:  # pragma: no cover - a paginator always yields one page
        return None
    except RegistryError as exc:
        if _client_error_code(exc.__cause__ or exc) == "ScanNotFoundException":
            return None
        raise

    def every() -> Iterator[dict[str, Any]]:
        yield first
        status = str((first.get("imageScanStatus") or {}).get("status", "")).upper()
        if status in SUCCESS_STATUSES:
            yield from pages

    return ecr_scan_result(every(), digest=digest)


def list_inspector_findings(
    inspector: Any,
    repository: str,
    digest: str,
    *,
    account_id: str | None = None,
    page_size: int = INSPECTOR_PAGE_SIZE,
) -> ScanReport:
    """Amazon Inspector's ACTIVE findings for one ECR image, every page, as a ScanReport.

    Filtered server-side by image hash, repository name and status ACTIVE (and the
    account when given); `inspector_report` checks each finding's image hash again.
    """
    criteria: dict[str, Any] = {
        "ecrImageHash": [{"comparison": "EQUALS", "value": digest}],
        "ecrImageRepositoryName": [{"comparison": "EQUALS", "value": repository}],
        "findingStatus": [{"comparison": "EQUALS", "value": "ACTIVE"}],
    }
    if account_id:
        criteria["awsAccountId"] = [{"comparison": "EQUALS", "value": account_id}]
    paginator = inspector.get_paginator("list_findings")
    found: list[dict[str, Any]] = []
    try:
        for page in paginator.paginate(
            filterCriteria=criteria, PaginationConfig={"PageSize": page_size}
        ):
            found.extend(page.get("findings") or [])
    except _botocore_errors() as exc:
        raise _registry_error(exc, f"list Inspector findings of {repository}@{digest}") from exc
    return inspector_report(found, digest=digest)


class EcrScanSource:
    """`Pipeline.scans` for ECR: `(registry, image) -> ScanReport | None`.

    The registry's own scanner answers (`NativeScanner.native_scan`, ECR's in
    `providers.ecr`): None while no report is ready (a scan is started when `start_scans`
    and the repository does not scan on push), the report when the scan completed (from
    Inspector with `inspector_client` under enhanced scanning), `EcrScanFailed` when ECR
    says the scan failed (fail closed; the pipeline records it as the scan error).

    `registry` must declare `native-scan` (`providers.CAP_NATIVE_SCAN`).
    """

    def __init__(self, *, inspector_client: Any = None, start_scans: bool = True) -> None:
        self.inspector_client = inspector_client
        self.start_scans = start_scans

    def __call__(self, registry: Any, image: ImageRef) -> ScanReport | None:
        from ..providers import CAP_NATIVE_SCAN, NativeScanner

        if CAP_NATIVE_SCAN not in getattr(registry, "capabilities", frozenset()):
            raise RegistryError(
                f"EcrScanSource needs a registry with a native scanner: got "
                f"{type(registry).__name__} for {image.registry}, expected one declaring "
                f"{CAP_NATIVE_SCAN!r}"
            )
        scanner: NativeScanner = registry
        if image.digest is None:
            raise RegistryError(f"cannot look up scans for {image}: expected a digest")
        return scanner.native_scan(
            image.repository,
            image.digest,
            start=self.start_scans,
            inspector=self.inspector_client,
            name=str(image),
        )
