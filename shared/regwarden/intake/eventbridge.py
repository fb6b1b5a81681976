"""Amazon EventBridge events from ECR and Amazon Inspector → `regwarden.model.ImageEvent`.

    events = parse_eventbridge(lambda_event)        # [] when the event is deliberately dropped

The envelope (`version, id, detail-type, source, account, time, region, resources, detail`)
is validated with Powertools' `EventBridgeModel` (imported on first use: about 15-25 ms on
top of what regwarden already imports, measured with `python -X importtime`), or with an
equivalent small pydantic model when Powertools is not installed. The detail is read with
the path-naming JSON reader, so every error names the field:

    invalid EventBridge event at detail.image-digest: got 'sha256:abc', expected a digest …

| detail-type (source)                       | becomes                                       |
| ------------------------------------------ | --------------------------------------------- |
| `ECR Image Action` (aws.ecr)               | PUSH → PUSHED (SIGNED for a cosign/referrers  |
|                                            | tag `sha256-<hex>[.sig/.att/.sbom]`),          |
|                                            | DELETE → DELETED, UPDATE_STORAGE_CLASS → []   |
| `ECR Image Scan` (aws.ecr)                 | SCANNED                                       |
| `ECR Referrer Action` (aws.ecr)            | PUSH → SIGNED; DELETE, UPDATE_STORAGE_CLASS →[]|
| `ECR Pull Through Cache Action` (aws.ecr)  | PUSHED                                        |
| `ECR Replication Action` (aws.ecr)         | PUSHED in the destination registry            |
| `Inspector2 Scan` (aws.inspector2)         | SCANNED                                       |
| `ECR Scan Resource Change`, `Inspector2    | [] (not about one image's content)            |
| Finding`, `Inspector2 Coverage`            |                                               |

Decisions:

- Any `result`/`sync-status` other than `SUCCESS` (ECR sends `FAILURE` or `FAILED`) means
  nothing happened: [] and one log line on `regwarden.intake`.
- `ECR Referrer Action` carries no subject field (its keys are those of `ECR Image Action`:
  the `image-digest` is the REFERRER's own manifest). The event is SIGNED with
  `image` = the referrer (`repository@image-digest`) and `subject_digest` None, unless the
  tag is a referrers-schema tag (`sha256-<hex>`) naming the subject. A consumer must read
  the referrer manifest's `subject` (`Registry.image_details(...).record.subject`) to find
  the image to re-evaluate. Referrer deletion is dropped: the subject is no longer
  knowable once its referrer is gone, and a push gate has nothing to re-decide.
- `ECR Replication Action` is PUSHED in the destination (the envelope's account/region):
  replication writes a new image into this registry without an `ECR Image Action`, so
  dropping it would let replicated images bypass the gate.
- `Inspector2 Scan` names the repository by ARN; the registry host comes from that ARN.
  Its digest comes from `detail.image-digest`, else from a `…/repository/<name>/sha256:…`
  resource ARN.
- The registry host is `<account>.dkr.ecr.<region>.amazonaws.com` (`.com.cn` in China).
- `delivery_id` is the envelope `id`; `time` is the envelope `time` (UTC).

Malformed or unknown input raises `regwarden.errors.IntakeError`; nothing else escapes.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import IntakeError
from ..jsondoc import MISSING, Node, show
from ..model import EventKind, ImageEvent, Severity
from ..scanning import ScanStatus, ScanSummary
from ._common import digest_at, image_ref, repository_name, tag_at
from ._result import IntakeResult
from ._signatures import signature_subject

__all__ = [
    "DETAIL_TYPES",
    "IGNORED_DETAIL_TYPES",
    "LABEL",
    "ecr_registry_host",
    "parse_eventbridge",
    "parse_eventbridge_results",
]

log = logging.getLogger("regwarden.intake")

LABEL = "EventBridge event"

IMAGE_ACTION = "ECR Image Action"
IMAGE_SCAN = "ECR Image Scan"
REFERRER_ACTION = "ECR Referrer Action"
PULL_THROUGH_CACHE = "ECR Pull Through Cache Action"
REPLICATION = "ECR Replication Action"
INSPECTOR_SCAN = "Inspector2 Scan"

DETAIL_TYPES: dict[str, str] = {
    IMAGE_ACTION: "aws.ecr",
    IMAGE_SCAN: "aws.ecr",
    REFERRER_ACTION: "aws.ecr",
    PULL_THROUGH_CACHE: "aws.ecr",
    REPLICATION: "aws.ecr",
    INSPECTOR_SCAN: "aws.inspector2",
}
"""detail-type → the source that must send it."""
IGNORED_DETAIL_TYPES: dict[str, str] = {
    "ECR Scan Resource Change": "aws.ecr",
    "Inspector2 Finding": "aws.inspector2",
    "Inspector2 Coverage": "aws.inspector2",
}
"""Known detail-types that are not about one image's content: dropped with a log line."""

_ACCOUNT = re.compile(r"\d{12}")
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
_REPOSITORY_ARN = re.compile(
    r"arn:(?P<partition>aws(?:-[a-z]+)*):ecr:(?P<region>[^:]+):(?P<account>[^:]+):"
    r"repository/(?P<name>.+)"
)
_RESOURCE_DIGEST = re.compile(r"/(sha256:[0-9a-f]{64})$")
_SCAN_SEVERITY_KEYS = {
    "CRITICAL": Severity.CRITICAL,
    "HIGH": Severity.HIGH,
    "MEDIUM": Severity.MEDIUM,
    "LOW": Severity.LOW,
    "INFORMATIONAL": Severity.NEGLIGIBLE,
    "UNDEFINED": Severity.UNKNOWN,
    "UNTRIAGED": Severity.UNKNOWN,
}


class _Envelope(BaseModel):
    """The EventBridge envelope, for when Powertools is not installed (same fields and
    types as `aws_lambda_powertools.utilities.parser.models.EventBridgeModel`)."""

    model_config = ConfigDict(populate_by_name=True)

    version: str
    id: str
    source: str
    account: str
    time: datetime
    region: str
    resources: list[str]
    detail_type: str = Field(alias="detail-type")
    detail: dict[str, Any]
    replay_name: str | None = Field(default=None, alias="replay-name")


@cache
def _envelope_model() -> type[BaseModel]:
    try:
        from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
    except ImportError:
        return _Envelope
    model: type[BaseModel] = EventBridgeModel
    return model


def _envelope_error(exc: ValidationError) -> IntakeError:
    """The first pydantic problem as `invalid EventBridge event at <field>: got X, expected Y`."""
    first = exc.errors()[0]
    loc = first.get("loc", ())
    where = str(loc[0]) if loc else "the top level"  # later parts name union members
    if first.get("type") == "missing":
        return IntakeError(f"invalid {LABEL} at {where}: got {show(MISSING)}, expected a value")
    expected = str(first.get("msg", "a valid value")).removeprefix("Input should be ")
    return IntakeError(
        f"invalid {LABEL} at {where}: got {show(first.get('input'))}, expected {expected}"
    )


def ecr_registry_host(account: str, region: str) -> str:
    """`<account>.dkr.ecr.<region>.amazonaws.com` (`.amazonaws.com.cn` for China regions)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}"


def _checked_host(account: str, region: str, *, where: str) -> str:
    if not _ACCOUNT.fullmatch(account):
        raise IntakeError(
            f"invalid {LABEL} at {where}: got account {account!r}, expected 12 digits"
        )
    if not _REGION.fullmatch(region):
        raise IntakeError(
            f"invalid {LABEL} at {where}: got region {region!r}, expected a region like us-east-1"
        )
    return ecr_registry_host(account, region)


class _Parsed:
    """The validated envelope as plain values."""

    def __init__(self, event: object) -> None:
        if not isinstance(event, dict):
            raise IntakeError(f"invalid {LABEL}: got {show(event)}, expected a JSON object")
        try:
            envelope = _envelope_model().model_validate(event)
        except ValidationError as exc:
            raise _envelope_error(exc) from None
        except RecursionError:
            raise IntakeError(f"invalid {LABEL}: nested too deeply") from None
        fields: dict[str, Any] = dict(envelope)
        self.id: str = fields["id"]
        self.source: str = fields["source"]
        self.detail_type: str = fields["detail_type"]
        self.account: str = fields["account"]
        self.region: str = fields["region"]
        self.resources: list[str] = list(fields["resources"])
        when: datetime = fields["time"]
        try:
            self.time = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        except (OverflowError, ValueError):
            raise IntakeError(
                f"invalid {LABEL} at time: got {when!s}, expected a date-time in range"
            ) from None
        if not self.id.strip():
            raise IntakeError(f"invalid {LABEL} at id: got an empty string, expected the event id")
        detail = event.get("detail")
        if not isinstance(detail, dict):
            raise IntakeError(f"invalid {LABEL} at detail: got {show(detail)}, expected an object")
        self.detail = Node(detail, "detail", label=LABEL, error=IntakeError)

    @property
    def host(self) -> str:
        return _checked_host(self.account, self.region, where="account/region")

    def ignore(self, reason: str) -> list[IntakeResult]:
        log.info("ignored %s %s: %s", self.detail_type, self.id, reason)
        return []

    def event(
        self,
        kind: EventKind,
        *,
        host: str,
        repository: str,
        tag: str | None,
        digest: str | None,
        media_type: str | None = None,
        subject: str | None = None,
    ) -> ImageEvent:
        try:
            return ImageEvent(
                kind=kind,
                source=self.source,
                image=image_ref(registry=host, repository=repository, tag=tag, digest=digest),
                time=self.time,
                delivery_id=self.id,
                media_type=media_type,
                subject_digest=subject,
            )
        except ValidationError as exc:
            raise self.detail.error(f"cannot build an event ({exc.errors()[0]['msg']})") from None


def _opt_digest(node: Node) -> str | None:
    return digest_at(node) if node.opt_text() is not None else None


def _opt_tag(node: Node) -> str | None:
    return tag_at(node) if node.opt_text() is not None else None


def _succeeded(env: _Parsed, key: str) -> str | None:
    """None when `detail.<key>` is SUCCESS, else why the event is dropped."""
    result = env.detail.field(key).text()
    if result.upper() == "SUCCESS":
        return None
    failure = (
        env.detail.field("failure-reason").opt_text() if env.detail.has("failure-reason") else None
    )
    return f"{key} {result!r}" + (f" ({failure})" if failure else "") + ", expected 'SUCCESS'"


def _action(env: _Parsed, valid: tuple[str, ...]) -> str:
    node = env.detail.field("action-type")
    action = node.text()
    if action not in valid:
        node.fail("one of " + ", ".join(valid))
    return action


def _image_action(env: _Parsed) -> list[IntakeResult]:
    action = _action(env, ("PUSH", "DELETE", "UPDATE_STORAGE_CLASS"))
    why = _succeeded(env, "result")
    if why:
        return env.ignore(why)
    if action == "UPDATE_STORAGE_CLASS":
        return env.ignore("archive/restore changes no image content")
    detail = env.detail
    repository = repository_name(detail.field("repository-name"))
    tag = _opt_tag(detail.field("image-tag"))
    digest_node = detail.field("image-digest")
    media_type = detail.field("manifest-media-type").opt_text()
    if action == "DELETE":
        digest = _opt_digest(digest_node)
        if digest is None and tag is None:
            digest_node.fail("image-digest or image-tag for a DELETE")
        return [
            IntakeResult(
                event=env.event(
                    EventKind.DELETED, host=env.host, repository=repository, tag=tag, digest=digest
                )
            )
        ]
    digest = digest_at(digest_node)
    subject = signature_subject(tag)
    if subject is not None:  # cosign .sig/.att/.sbom or referrers-schema tag: the subject
        event = env.event(
            EventKind.SIGNED,
            host=env.host,
            repository=repository,
            tag=None,
            digest=subject,
            media_type=media_type,
            subject=subject,
        )
    else:
        event = env.event(
            EventKind.PUSHED,
            host=env.host,
            repository=repository,
            tag=tag,
            digest=digest,
            media_type=media_type,
        )
    return [IntakeResult(event=event)]


def _referrer_action(env: _Parsed) -> list[IntakeResult]:
    action = _action(env, ("PUSH", "DELETE", "UPDATE_STORAGE_CLASS"))
    why = _succeeded(env, "result")
    if why:
        return env.ignore(why)
    if action != "PUSH":
        return env.ignore(f"referrer {action.lower()}: nothing to re-evaluate")
    detail = env.detail
    repository = repository_name(detail.field("repository-name"))
    digest = digest_at(detail.field("image-digest"))
    tag = _opt_tag(detail.field("image-tag"))
    subject = signature_subject(tag)
    event = env.event(
        EventKind.SIGNED,
        host=env.host,
        repository=repository,
        tag=None if subject else tag,
        digest=subject or digest,
        media_type=detail.field("manifest-media-type").opt_text(),
        subject=subject,
    )
    return [IntakeResult(event=event)]


def _pushed(env: _Parsed, *, status_key: str, what: str) -> list[IntakeResult]:
    why = _succeeded(env, status_key)
    if why:
        return env.ignore(f"{what} {why}")
    detail = env.detail
    event = env.event(
        EventKind.PUSHED,
        host=env.host,
        repository=repository_name(detail.field("repository-name")),
        tag=_opt_tag(detail.field("image-tag")),
        digest=digest_at(detail.field("image-digest")),
    )
    return [IntakeResult(event=event)]


def _counts(node: Node) -> tuple[dict[Severity, int], int | None]:
    """finding-severity-counts → counts by severity, and `TOTAL` when the sender gives it."""
    by_severity: dict[Severity, int] = {}
    total: int | None = None
    if not node.present:
        return by_severity, None
    for key, value in node.items():
        count = value.integer(minimum=0)
        if key.upper() == "TOTAL":
            total = count
            continue
        severity = _SCAN_SEVERITY_KEYS.get(key.upper())
        if severity is None:
            value.fail(
                "a count under one of " + ", ".join([*_SCAN_SEVERITY_KEYS, "TOTAL"]),
                got=f"key {key!r}",
            )
        by_severity[severity] = by_severity.get(severity, 0) + count
    return by_severity, total


def _scanned(
    env: _Parsed,
    *,
    host: str,
    repository: str,
    digest: str,
    succeeded: bool,
    scanner: str,
    source: str,
) -> list[IntakeResult]:
    by_severity, total = _counts(env.detail.field("finding-severity-counts"))
    event = env.event(EventKind.SCANNED, host=host, repository=repository, tag=None, digest=digest)
    if not succeeded:
        return [IntakeResult(event=event, scan_status=ScanStatus.FAILED)]
    summary = ScanSummary(
        digest=digest,
        scanner=scanner,
        source=source,
        scanned_at=env.time,
        by_severity=by_severity,
        total=max(total if total is not None else 0, sum(by_severity.values())),
    )
    return [IntakeResult(event=event, scan_status=ScanStatus.SUCCEEDED, scan_summary=summary)]


def _image_scan(env: _Parsed) -> list[IntakeResult]:
    detail = env.detail
    status = detail.field("scan-status").text()
    return _scanned(
        env,
        host=env.host,
        repository=repository_name(detail.field("repository-name")),
        digest=digest_at(detail.field("image-digest")),
        succeeded=status.upper() == "COMPLETE",
        scanner="amazon-ecr-basic",
        source="ecr-image-scan-event",
    )


def _inspector_scan(env: _Parsed) -> list[IntakeResult]:
    detail = env.detail
    name_node = detail.field("repository-name")
    text = name_node.text()
    m = _REPOSITORY_ARN.fullmatch(text)
    if m is None:
        name_node.fail("an ECR repository ARN arn:aws:ecr:<region>:<account>:repository/<name>")
    host = _checked_host(m.group("account"), m.group("region"), where=name_node.path)
    repository = repository_name(
        Node(m.group("name"), name_node.path, label=LABEL, error=IntakeError)
    )
    digest_node = detail.field("image-digest")
    digest = _opt_digest(digest_node)
    if digest is None:
        found = {
            hit.group(1)
            for resource in env.resources
            if (hit := _RESOURCE_DIGEST.search(resource)) is not None
        }
        if len(found) != 1:
            digest_node.fail(
                "an image digest here or in exactly one resources[] ARN",
                got=f"{len(found)} digests in resources",
            )
        digest = found.pop()
    status = detail.field("scan-status").text()
    return _scanned(
        env,
        host=host,
        repository=repository,
        digest=digest,
        succeeded=status.upper().endswith("COMPLETE"),
        scanner="amazon-inspector",
        source="inspector2-scan-event",
    )


_PARSERS = {
    IMAGE_ACTION: _image_action,
    IMAGE_SCAN: _image_scan,
    REFERRER_ACTION: _referrer_action,
    PULL_THROUGH_CACHE: lambda env: _pushed(env, status_key="sync-status", what="pull through"),
    REPLICATION: lambda env: _pushed(env, status_key="result", what="replication"),
    INSPECTOR_SCAN: _inspector_scan,
}


def parse_eventbridge_results(event: object) -> list[IntakeResult]:
    """Like `parse_eventbridge`, keeping what scan events say about the scan: for SCANNED
    events `scan_status` (SUCCEEDED or FAILED) and, for a successful scan, `scan_summary`
    with the sender's counts (Inspector's `TOTAL` can exceed the listed severities)."""
    env = _Parsed(event)
    kind = env.detail_type
    expected = DETAIL_TYPES.get(kind) or IGNORED_DETAIL_TYPES.get(kind)
    if expected is None:
        valid = ", ".join(sorted(DETAIL_TYPES))
        raise IntakeError(f"invalid {LABEL} at detail-type: got {kind!r}, expected one of: {valid}")
    if env.source != expected:
        raise IntakeError(
            f"invalid {LABEL} at source: got {env.source!r} for {kind!r}, expected {expected!r}"
        )
    if kind in IGNORED_DETAIL_TYPES:
        return env.ignore("not about one image's content")
    return _PARSERS[kind](env)


def parse_eventbridge(event: object) -> list[ImageEvent]:
    """The image events in one EventBridge event (a Lambda `event` dict); [] when the event
    is deliberately dropped (failed action, archive/restore, referrer deletion, …).

    Raises IntakeError naming the field for anything malformed or unknown.
    """
    return [result.event for result in parse_eventbridge_results(event)]
