"""CNCF distribution notifications as access events (handbook reference/events.md §4).

Manifest pulls (`action: pull`, a manifest media type, a `/manifests/` URL or a tag) and
manifest pushes become access events; blob pulls and pushes, mounts and deletes are
dropped. Distribution notifies a manifest HEAD as a `pull` too (`request.method: HEAD`):
it reads no content — clients ask whether a manifest is there before pulling or pushing
it — so it becomes a `probe`, neither counted nor alerted on, which still marks the image
as used (containerd with pull policy Always asks with a HEAD and runs its cached copy;
pull-based retention that ignored it would delete images nodes run, as Harbor users found:
goharbor/harbor#22020). Who: `actor.name` (present when the registry authenticates).
From where: the host part of `request.addr`. How: `request.useragent`.
"""

from __future__ import annotations

from ..intake import (
    DISTRIBUTION_ACTIONS,
    MANIFEST_TYPES,
    digest_at,
    distribution_events,
    registry_host,
    repository_name,
    tag_at,
)
from ..jsondoc import Node
from ._common import address_host, fast_digest, fast_host, fast_repository, fast_tag, fast_time
from ._model import AccessAction, AccessEvent

__all__ = ["parse_distribution_access"]

SOURCE = "distribution"


def parse_distribution_access(
    body: bytes, *, content_type: str | None, registry: str | None = None
) -> list[AccessEvent]:
    """The manifest pulls and pushes of a distribution envelope, in envelope order.

    `registry` overrides `request.host`. Raises IntakeError naming the path of the first
    malformed event (an envelope is one delivery: the registry sends it again whole).
    """
    out: list[AccessEvent] = []
    for node in distribution_events(body, content_type=content_type, registry=registry):
        fast = _fast(node.value, registry) if isinstance(node.value, dict) else _SLOW
        event = _event(node, registry) if fast is _SLOW else fast
        if isinstance(event, AccessEvent):
            out.append(event)
    return out


class _Slow:
    """`_fast`'s answer for an event it does not vouch for: read it with the checked path."""


_SLOW = _Slow()


def _fast(ev: dict[str, object], registry: str | None) -> AccessEvent | _Slow | None:
    """A well-formed event read with plain checks (None: not an access); `_SLOW` for
    anything else, which `_event` then reads and reports with its path."""
    action = ev.get("action")
    if action != "pull" and action != "push":
        return None if action in ("mount", "delete") else _SLOW
    target = ev.get("target")
    if not isinstance(target, dict):
        return _SLOW
    media_type, url, tag = target.get("mediaType"), target.get("url"), target.get("tag")
    if (tag is not None and tag != "" and fast_tag(tag) is None) or not isinstance(url, str | None):
        return _SLOW
    manifest = (
        media_type in MANIFEST_TYPES or (isinstance(url, str) and "/manifests/" in url) or tag
    )
    if not manifest:
        return None if media_type is None or isinstance(media_type, str) else _SLOW
    request, actor = ev.get("request"), ev.get("actor")
    event_id, repository, digest = ev.get("id"), target.get("repository"), target.get("digest")
    if not (
        isinstance(request, dict)
        and isinstance(actor, dict | None)
        and isinstance(event_id, str)
        and event_id.strip()
        and isinstance(repository, str)
        and fast_repository(repository)
        and isinstance(digest, str)
        and fast_digest(digest)
    ):
        return _SLOW
    host = registry if registry is not None else request.get("host")
    when = fast_time(ev.get("timestamp"))
    if not isinstance(host, str) or fast_host(host) is None or when is None:
        return _SLOW
    addr, agent = request.get("addr"), request.get("useragent")
    name = actor.get("name") if actor is not None else None
    if not all(isinstance(v, str | None) for v in (addr, agent, name)):
        return _SLOW
    principal = name.strip() and name if isinstance(name, str) else None
    probe = action == "pull" and _is_head(request.get("method"))
    return AccessEvent(
        source=SOURCE,
        event_id=event_id,
        action="pull" if action == "pull" else "push",
        registry=host,
        repository=repository,
        digest=digest,
        tag=tag or None,
        principal=principal or None,
        principal_type="user" if principal else None,
        source_ip=address_host(addr),
        user_agent=agent if agent and agent.strip() else None,
        time=when,
        probe=probe,
    )


def _event(node: Node, registry: str | None) -> AccessEvent | None:
    node.mapping()
    action_node = node.field("action")
    action = action_node.text()
    if action not in DISTRIBUTION_ACTIONS:
        action_node.fail("one of " + ", ".join(DISTRIBUTION_ACTIONS))
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
    probe = kind == "pull" and request.present and _is_head(request.field("method").opt_text())
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
        probe=probe,
    )


def _is_head(method: object) -> bool:
    return isinstance(method, str) and method.upper() == "HEAD"
