"""Harbor `PULL_ARTIFACT` / `PUSH_ARTIFACT` webhooks as access events, default and
CloudEvents formats (handbook reference/events.md §5). `operator` is the principal (a
Harbor user or `robot$…` account); Harbor sends no client address or user agent.
Every other webhook type gives no access events.
"""

from __future__ import annotations

from ..errors import IntakeError
from ..intake import (
    HARBOR_CONTENT_TYPES,
    check_content_type,
    check_registry,
    digest_at,
    harbor_delivery_id,
    harbor_host,
    harbor_repository,
    tag_at,
)
from ..jsondoc import load_json
from ._model import AccessAction, AccessEvent

__all__ = ["parse_harbor_access"]

LABEL = "Harbor webhook"
SOURCE = "harbor"
_ACTIONS: dict[str, AccessAction] = {"PULL_ARTIFACT": "pull", "PUSH_ARTIFACT": "push"}
_CLOUDEVENT_TYPES = {
    "harbor.artifact.pulled": "PULL_ARTIFACT",
    "harbor.artifact.pushed": "PUSH_ARTIFACT",
}


def parse_harbor_access(
    body: bytes, *, content_type: str | None, registry: str | None = None
) -> list[AccessEvent]:
    """The pulls and pushes of one Harbor webhook (one event per resource).

    Event ids: the CloudEvent `id` (`#<index>` when several resources), for the default
    format `regwarden.intake.harbor_delivery_id` (the id the push path uses). The registry
    host comes from each resource's `resource_url` unless `registry` overrides it. Raises
    IntakeError naming the path.
    """
    check_content_type(content_type, allowed=HARBOR_CONTENT_TYPES, label=LABEL)
    check_registry(registry)
    root = load_json(body, label=LABEL, error=IntakeError)
    root.mapping()
    event_id: str | None
    if root.has("specversion"):
        event_type = _CLOUDEVENT_TYPES.get(root.field("type").text())
        if event_type is None:
            return []  # a valid Harbor CloudEvent about something else
        event_id = root.field("id").text()
        when = root.field("time").timestamp()
        data = root.field("data")
    elif root.has("type") or root.has("event_data"):
        event_type = root.field("type").text()
        if event_type not in _ACTIONS:
            return []
        event_id = None
        when = root.field("occur_at").timestamp()
        data = root.field("event_data")
    else:
        root.fail(
            "a Harbor webhook: default format (with 'type' and 'event_data') "
            "or CloudEvents (with 'specversion')",
            got="an object with neither",
        )
    operator = root.field("operator").opt_text()
    repository = harbor_repository(data.field("repository"))
    resources = data.field("resources").array()
    if not resources:
        data.field("resources").fail("at least one resource")
    out: list[AccessEvent] = []
    for index, resource in enumerate(resources):
        resource.mapping()
        digest = digest_at(resource.field("digest"))
        tag_node = resource.field("tag")
        tag_text = tag_node.opt_text()
        tag = None if tag_text is None or tag_text == digest else tag_at(tag_node)
        if event_id is None:
            delivery = harbor_delivery_id(event_type, when, repository, digest, tag)
        else:
            delivery = event_id if len(resources) == 1 else f"{event_id}#{index}"
        out.append(
            AccessEvent(
                source=SOURCE,
                event_id=delivery,
                action=_ACTIONS[event_type],
                registry=harbor_host(resource, repository, registry),
                repository=repository,
                digest=digest,
                tag=tag,
                principal=operator,
                principal_type=_principal_type(operator),
                source_ip=None,
                user_agent=None,
                time=when,
            )
        )
    return out


def _principal_type(operator: str | None) -> str | None:
    if operator is None:
        return None
    return "robot" if operator.startswith("robot$") else "user"
