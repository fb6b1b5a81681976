"""CNCF distribution notifications as access events (handbook reference/events.md §4).

Manifest pulls (`action: pull`, a manifest media type, a `/manifests/` URL or a tag) and
manifest pushes become access events; blob pulls and pushes, mounts and deletes are
dropped. Who: `actor.name` (present when the registry authenticates). From where: the host
part of `request.addr`. How: `request.useragent`.
"""

from __future__ import annotations

from ..errors import IntakeError
from ..intake import (
    MANIFEST_TYPES,
    check_content_type,
    check_registry,
    digest_at,
    registry_host,
    repository_name,
    tag_at,
)
from ..jsondoc import Node, load_json
from ._common import address_host
from ._model import AccessAction, AccessEvent

__all__ = ["parse_distribution_access"]

LABEL = "distribution notification"
SOURCE = "distribution"
CONTENT_TYPES = (
    "application/vnd.docker.distribution.events.v1+json",
    "application/vnd.docker.distribution.events.v2+json",
    "application/json",
)
_ACTIONS = ("push", "pull", "mount", "delete")


def parse_distribution_access(
    body: bytes, *, content_type: str | None, registry: str | None = None
) -> list[AccessEvent]:
    """The manifest pulls and pushes of a distribution envelope, in envelope order.

    `registry` overrides `request.host`. Raises IntakeError naming the path of the first
    malformed event (an envelope is one delivery: the registry sends it again whole).
    """
    check_content_type(content_type, allowed=CONTENT_TYPES, label=LABEL)
    check_registry(registry)
    root = load_json(body, label=LABEL, error=IntakeError)
    unexpected = sorted(set(root.mapping()) - {"events"})
    if unexpected:
        root.fail(
            'an envelope {"events": [...]}',
            got="an object with keys " + ", ".join(repr(k) for k in unexpected[:5]),
        )
    out: list[AccessEvent] = []
    for node in root.field("events").opt_array():
        event = _event(node, registry)
        if event is not None:
            out.append(event)
    return out


def _event(node: Node, registry: str | None) -> AccessEvent | None:
    node.mapping()
    action_node = node.field("action")
    action = action_node.text()
    if action not in _ACTIONS:
        action_node.fail("one of " + ", ".join(_ACTIONS))
    kind: AccessAction
    if action == "pull":
        kind = "pull"
    elif action == "push":
        kind = "push"
    else:
        return None  # mounts (blobs) and deletes are not accesses
    target = node.field("target")
    target.mapping()
    media_type = target.field("mediaType").opt_text()
    url = target.field("url").opt_text() or ""
    tag_node = target.field("tag")
    tag = tag_at(tag_node) if tag_node.opt_text() is not None else None
    if not (media_type in MANIFEST_TYPES or "/manifests/" in url or tag is not None):
        return None  # a layer or config blob
    request = node.field("request")
    host = registry_host(
        registry,
        request.field("host") if request.present else request,
        what="request.host",
    )
    actor = node.field("actor")
    principal = actor.field("name").opt_text() if actor.present else None
    return AccessEvent(
        source=SOURCE,
        event_id=node.field("id").text(),
        action=kind,
        registry=host,
        repository=repository_name(target.field("repository")),
        digest=digest_at(target.field("digest")),
        tag=tag,
        principal=principal,
        principal_type="user" if principal is not None else None,
        source_ip=address_host(request.field("addr").opt_text()) if request.present else None,
        user_agent=request.field("useragent").opt_text() if request.present else None,
        time=node.field("timestamp").timestamp(),
    )
