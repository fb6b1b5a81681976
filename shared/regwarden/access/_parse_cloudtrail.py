"""ECR API calls through CloudTrail on EventBridge as access events (handbook
reference/events.md §1.6; awsdocs/amazon-ecr-user-guide `logging-using-cloudtrail.md`).

`BatchGetImage` is a pull: one event per `requestParameters.imageIds` item (a pull by tag
names no digest: the monitor resolves it from the ledger's tag history). `PutImage` is a
push of `responseElements.image.imageId.imageDigest`. Every other ECR call
(`GetDownloadUrlForLayer`, `CompleteLayerUpload`, … which fire per layer and name no
image) and every failed call (`errorCode`) is dropped.

Who: `userIdentity` — for `AssumedRole` the role ARN
(`sessionContext.sessionIssuer.arn`), not the session's; an IAM user's or root's `arn`;
an AWS service (`invokedBy`, or `sourceIPAddress: "AWS Internal"`) gets principal type
`aws-service`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import IntakeError
from ..intake import digest_at, repository_name, tag_at
from ..jsondoc import Node, load_json
from ._common import is_ip
from ._model import AccessEvent

__all__ = ["parse_cloudtrail_access", "parse_cloudtrail_access_body"]

LABEL = "CloudTrail ECR event"
SOURCE = "aws.cloudtrail"
DETAIL_TYPE = "AWS API Call via CloudTrail"
_INTERNAL = "AWS Internal"

RegistryForAccount = Callable[[str, str], str]


def default_registry(account: str, region: str) -> str:
    """ECR's registry host for an account and region."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}"


def parse_cloudtrail_access_body(
    body: bytes | str, *, registry_for_account: RegistryForAccount | None = None
) -> list[AccessEvent]:
    """An SQS message body holding one EventBridge event (the rule's target is the queue:
    the body is the event's JSON)."""
    root = load_json(body, label=LABEL, error=IntakeError)
    return _parse(root, registry_for_account)


def parse_cloudtrail_access(
    event: Mapping[str, Any], *, registry_for_account: RegistryForAccount | None = None
) -> list[AccessEvent]:
    """One EventBridge event (`source: aws.ecr`, `detail-type: AWS API Call via
    CloudTrail`) as access events. `registry_for_account(account, region)` names the
    registry host (default `<account>.dkr.ecr.<region>.amazonaws.com`). Raises IntakeError
    naming the path."""
    return _parse(Node(event, "", label=LABEL, error=IntakeError), registry_for_account)


def _parse(root: Node, registry_for_account: RegistryForAccount | None) -> list[AccessEvent]:
    root.mapping()
    source = root.field("source")
    if source.text() != "aws.ecr":
        source.fail("'aws.ecr'")
    detail_type = root.field("detail-type")
    if detail_type.text() != DETAIL_TYPE:
        detail_type.fail(repr(DETAIL_TYPE))
    detail = root.field("detail")
    detail.mapping()
    event_source = detail.field("eventSource")
    if event_source.text() != "ecr.amazonaws.com":
        event_source.fail("'ecr.amazonaws.com'")
    name = detail.field("eventName").text()
    if name not in ("BatchGetImage", "PutImage"):
        return []
    if detail.field("errorCode").opt_text() is not None:
        return []  # refused or failed: nothing was pulled or pushed
    params = detail.field("requestParameters")
    params.mapping()
    region = detail.field("awsRegion").opt_text() or root.field("region").text()
    account = (
        params.field("registryId").opt_text()
        or detail.field("recipientAccountId").opt_text()
        or root.field("account").text()
    )
    registry = (registry_for_account or default_registry)(account, region)
    repository = repository_name(params.field("repositoryName"))
    event_id = detail.field("eventID").opt_text() or root.field("id").text()
    when = detail.field("eventTime").timestamp()
    principal, principal_type = _who(detail)
    ip_text = detail.field("sourceIPAddress").opt_text()
    source_ip = ip_text if ip_text is not None and is_ip(ip_text) else None
    user_agent = detail.field("userAgent").opt_text()

    def event(i: int, n: int, action: str, digest: str | None, tag: str | None) -> AccessEvent:
        return AccessEvent(
            source=SOURCE,
            event_id=event_id if n == 1 else f"{event_id}#{i}",
            action="pull" if action == "pull" else "push",
            registry=registry,
            repository=repository,
            digest=digest,
            tag=tag,
            principal=principal,
            principal_type=principal_type,
            source_ip=source_ip,
            user_agent=user_agent,
            time=when,
        )

    if name == "PutImage":
        image_id = detail.field("responseElements").field("image").field("imageId")
        digest = digest_at(image_id.field("imageDigest"))
        tag_node = params.field("imageTag")
        if tag_node.opt_text() is None:
            tag_node = image_id.field("imageTag")
        tag = tag_at(tag_node) if tag_node.opt_text() is not None else None
        return [event(0, 1, "push", digest, tag)]

    ids = params.field("imageIds").array()
    out: list[AccessEvent] = []
    for i, item in enumerate(ids):
        item.mapping()
        digest_node, tag_node = item.field("imageDigest"), item.field("imageTag")
        pulled = digest_at(digest_node) if digest_node.opt_text() is not None else None
        by_tag = tag_at(tag_node) if tag_node.opt_text() is not None else None
        if pulled is None and by_tag is None:
            item.fail("an image id with imageDigest or imageTag")
        out.append(event(i, len(ids), "pull", pulled, by_tag))
    return out


def _who(detail: Node) -> tuple[str | None, str | None]:
    identity = detail.field("userIdentity")
    if not identity.present:
        return None, None
    identity.mapping()
    kind = identity.field("type").opt_text()
    invoked_by = identity.field("invokedBy").opt_text()
    if kind == "AWSService" or invoked_by is not None:
        service = invoked_by or identity.field("principalId").opt_text()
        return service, "aws-service"
    if detail.field("sourceIPAddress").opt_text() == _INTERNAL:
        principal = identity.field("arn").opt_text() or invoked_by
        return principal, "aws-service"
    if kind == "AssumedRole":
        context = identity.field("sessionContext")
        issuer = context.field("sessionIssuer") if context.present else context
        role = issuer.field("arn").opt_text() if issuer.present else None
        return role or identity.field("arn").opt_text(), kind
    principal = identity.field("arn").opt_text() or identity.field("principalId").opt_text()
    return principal, kind
