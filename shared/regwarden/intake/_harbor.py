"""Harbor webhooks: the default JSON format and the CloudEvents format."""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import ValidationError

from ..errors import IntakeError
from ..jsondoc import Node, load_json
from ..model import EventKind, ImageEvent
from ..scanning import ScanStatus, ScanSummary, parse_harbor_overview
from ._common import (
    REPOSITORY_EXPECTED,
    check_content_type,
    check_registry,
    digest_at,
    image_ref,
    repository_name,
    tag_at,
    valid_host,
    valid_repository,
)
from ._result import IntakeResult
from ._signatures import signature_subject

LABEL = "Harbor webhook"
SOURCE = "harbor"
CONTENT_TYPES = ("application/json", "application/cloudevents+json")

#: Default-format event types regwarden acts on, and the event kind each becomes.
EVENT_KINDS = {
    "PUSH_ARTIFACT": EventKind.PUSHED,
    "PULL_ARTIFACT": EventKind.PULLED,
    "DELETE_ARTIFACT": EventKind.DELETED,
    "SCANNING_COMPLETED": EventKind.SCANNED,
    "SCANNING_FAILED": EventKind.SCANNED,
    "SCANNING_STOPPED": EventKind.SCANNED,
}
#: Harbor event types that are valid but not about an image's content: dropped.
IGNORED_TYPES = frozenset({"QUOTA_EXCEED", "QUOTA_WARNING", "REPLICATION", "TAG_RETENTION"})
#: CloudEvents `type` → default-format type.
CLOUDEVENT_TYPES = {
    "harbor.artifact.pushed": "PUSH_ARTIFACT",
    "harbor.artifact.pulled": "PULL_ARTIFACT",
    "harbor.artifact.deleted": "DELETE_ARTIFACT",
    "harbor.scan.completed": "SCANNING_COMPLETED",
    "harbor.scan.failed": "SCANNING_FAILED",
    "harbor.scan.stopped": "SCANNING_STOPPED",
    "harbor.quota.exceeded": "QUOTA_EXCEED",
    "harbor.quota.warned": "QUOTA_WARNING",
    "harbor.replication.status.changed": "REPLICATION",
    "harbor.tag_retention.finished": "TAG_RETENTION",
}
_SCAN_STATUS_BY_TYPE = {
    "SCANNING_COMPLETED": ScanStatus.SUCCEEDED,
    "SCANNING_FAILED": ScanStatus.FAILED,
    "SCANNING_STOPPED": ScanStatus.STOPPED,
}


def harbor_delivery_id(
    event_type: str, occur_at: datetime, repository: str, digest: str, tag: str | None
) -> str:
    """A stable delivery id for Harbor's default format, which sends none.

    `harbor-` + the first 32 hex characters of SHA-256 over the newline-joined
    event type, `occur_at` in epoch seconds, repository, digest and tag ('' for none).
    A re-delivery of the same webhook gets the same id; the repository and tag keep two
    resources of one webhook (or one digest pushed under two tags) apart.
    """
    seconds = int(occur_at.timestamp())
    material = "\n".join([event_type, str(seconds), repository, digest, tag or ""])
    return "harbor-" + hashlib.sha256(material.encode()).hexdigest()[:32]


def parse_harbor(
    body: bytes, *, content_type: str | None, registry: str | None = None
) -> list[ImageEvent]:
    """Parse a Harbor webhook into image events (one per resource). See
    `parse_harbor_results`, which also returns scan status and counts."""
    return [
        r.event for r in parse_harbor_results(body, content_type=content_type, registry=registry)
    ]


def parse_harbor_results(
    body: bytes, *, content_type: str | None, registry: str | None = None
) -> list[IntakeResult]:
    """Parse a Harbor webhook (default JSON or CloudEvents format) into results.

    PUSH_ARTIFACT → PUSHED (SIGNED for a signature/attestation tag, see
    `signature_subject`), PULL_ARTIFACT → PULLED, DELETE_ARTIFACT → DELETED,
    SCANNING_COMPLETED / SCANNING_FAILED / SCANNING_STOPPED → SCANNED with `scan_status`
    and, for a successful scan, `scan_summary` from the scan overview. Quota, replication
    and tag-retention webhooks give []. The registry host comes from each resource's
    `resource_url` unless `registry` overrides it. Delivery ids: the CloudEvent `id`
    (suffixed `#<index>` when a webhook lists several resources); for the default format,
    which has no id, `harbor_delivery_id(...)`. Raises IntakeError naming the path.
    """
    check_content_type(content_type, allowed=CONTENT_TYPES, label=LABEL)
    check_registry(registry)
    root = load_json(body, label=LABEL, error=IntakeError)
    root.mapping()
    event_id: str | None
    if root.has("specversion"):
        version = root.field("specversion")
        if version.text() != "1.0":
            version.fail("'1.0'")
        type_node = root.field("type")
        event_type = CLOUDEVENT_TYPES.get(type_node.text())
        if event_type is None:
            type_node.fail("one of " + ", ".join(CLOUDEVENT_TYPES))
        event_id = root.field("id").text()
        when = root.field("time").timestamp()
        data = root.field("data")
    elif root.has("type") or root.has("event_data"):
        type_node = root.field("type")
        event_type = type_node.text()
        if event_type not in EVENT_KINDS and event_type not in IGNORED_TYPES:
            type_node.fail("one of " + ", ".join([*EVENT_KINDS, *sorted(IGNORED_TYPES)]))
        event_id = None
        when = root.field("occur_at").timestamp()
        data = root.field("event_data")
    else:
        root.fail(
            "a Harbor webhook: default format (with 'type' and 'event_data') "
            "or CloudEvents (with 'specversion')",
            got="an object with neither",
        )
    if event_type in IGNORED_TYPES:
        return []
    operator = root.field("operator").opt_text()
    repository = harbor_repository(data.field("repository"))
    resources = data.field("resources").array()
    if not resources:
        data.field("resources").fail("at least one resource")
    results: list[IntakeResult] = []
    for index, resource in enumerate(resources):
        if event_id is None:
            delivery = None
        else:
            delivery = event_id if len(resources) == 1 else f"{event_id}#{index}"
        results.append(
            _result(
                resource,
                event_type=event_type,
                repository=repository,
                when=when,
                delivery_id=delivery,
                operator=operator,
                registry=registry,
            )
        )
    return results


def harbor_repository(node: Node) -> str:
    """The repository of a Harbor event's `repository` object: `repo_full_name`, else
    `namespace/name` (older Harbor sends only those)."""
    node.mapping()
    full = node.field("repo_full_name")
    if full.present:
        return repository_name(full)
    namespace, name = node.field("namespace").text(), node.field("name").text()
    text = f"{namespace}/{name}"
    if not valid_repository(text):
        node.fail(REPOSITORY_EXPECTED + " from namespace/name", got=repr(text))
    return text


def harbor_host(resource: Node, repository: str, registry: str | None) -> str:
    """`registry` when given, else the host of a resource's `resource_url`
    (`<host>/<repository>[:tag|@digest]`, checked against `repository`)."""
    if registry is not None:
        return registry
    url = resource.field("resource_url")
    if not url.present:
        raise url.error("no registry host in the event (resource_url); pass registry=")
    text = url.text()
    host, _, rest = text.partition("/")
    after = rest[len(repository) :] if rest.startswith(repository) else None
    if not valid_host(host) or after is None or after[:1] not in ("", ":", "@"):
        url.fail(f"<registry host>/{repository}[:tag|@digest]")
    return host


def _result(
    resource: Node,
    *,
    event_type: str,
    repository: str,
    when: datetime,
    delivery_id: str | None,
    operator: str | None,
    registry: str | None,
) -> IntakeResult:
    resource.mapping()
    digest = digest_at(resource.field("digest"))
    tag_node = resource.field("tag")
    tag_text = tag_node.opt_text()
    tag = None if tag_text is None or tag_text == digest else tag_at(tag_node)  # by digest
    host = harbor_host(resource, repository, registry)
    if delivery_id is None:
        delivery_id = harbor_delivery_id(event_type, when, repository, digest, tag)

    kind = EVENT_KINDS[event_type]
    subject = signature_subject(tag) if kind is EventKind.PUSHED else None
    if subject is not None:
        kind = EventKind.SIGNED
        image = image_ref(registry=host, repository=repository, tag=None, digest=subject)
    else:
        image = image_ref(registry=host, repository=repository, tag=tag, digest=digest)

    scan_status: ScanStatus | None = None
    summary: ScanSummary | None = None
    if kind is EventKind.SCANNED:
        scan_status = _SCAN_STATUS_BY_TYPE[event_type]
        overview_node = resource.field("scan_overview")
        if overview_node.present:
            overview = parse_harbor_overview(
                overview_node.mapping(), digest=digest, where=overview_node.path
            )
            if overview is not None and scan_status is ScanStatus.SUCCEEDED:
                # the overview's own status wins: "completed" with an Error report fails
                scan_status, summary = overview.status, overview.summary
    try:
        event = ImageEvent(
            kind=kind,
            source=SOURCE,
            image=image,
            time=when,
            delivery_id=delivery_id,
            actor=operator,
            subject_digest=subject,
        )
        return IntakeResult(event=event, scan_status=scan_status, scan_summary=summary)
    except ValidationError as exc:
        raise resource.error(f"cannot build an event ({exc.errors()[0]['msg']})") from None
