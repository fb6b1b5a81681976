"""Azure Container Registry repository events (diagnostic settings → Event Hubs) as access
events.

PREPARED: the parser and sample (events/access/acr-diagnostics-*.json) exist; no trigger is
wired yet (a diagnostic setting sending the `ContainerRegistryRepositoryEvents` category to
an Event Hub, read by an Event Hubs-triggered function, plugs in when the Azure access
function lands).

Shape from the docs: the Azure Monitor resource-log schema for Event Hubs exports
(https://learn.microsoft.com/azure/azure-monitor/essentials/resource-logs-schema — a body
`{"records": [...]}`, each record with `time`, `resourceId`, `operationName`, `category`,
`resultType`, `callerIpAddress`, `identity`, `correlationId`, `properties`) and the
`ContainerRegistryRepositoryEvents` table reference
(https://learn.microsoft.com/azure/azure-monitor/reference/tables/containerregistryrepositoryevents
— `OperationName` Pull/Push/Delete/Untag, `LoginServer`, `Repository`, `Tag`, `Digest`,
`Identity`, `CallerIpAddress`, `UserAgent`, `ResultType`, `CorrelationId`). The docs do not
show an Event Hubs record of this category, so the parser reads each field from
`properties` or the record, in camelCase or the table's PascalCase, and fails only when a
pull or push names no repository.
"""

from __future__ import annotations

import hashlib
import re

from ..errors import IntakeError
from ..intake import check_registry, digest_at, repository_name, tag_at, valid_host
from ..jsondoc import Node, load_json
from ._common import address_host, is_ip, opt_text_at
from ._model import AccessAction, AccessEvent

__all__ = ["parse_acr_diagnostics_access"]

LABEL = "ACR diagnostic log"
SOURCE = "azure.acr-diagnostics"
CATEGORY = "ContainerRegistryRepositoryEvents"
_ACTIONS: dict[str, AccessAction] = {"pull": "pull", "push": "push"}
_REGISTRY_ID = re.compile(
    r"/providers/microsoft\.containerregistry/registries/(?P<name>[^/]+)", re.IGNORECASE
)
_SUCCESS = frozenset({"success", "succeeded", "ok"})


def parse_acr_diagnostics_access(
    body: bytes | str, *, registry: str | None = None
) -> list[AccessEvent]:
    """The pulls and pushes of one Event Hubs message (`{"records": [...]}`); records of
    other categories and operations, and failed ones, are dropped. `registry` overrides
    the record's login server. Raises IntakeError naming the path."""
    check_registry(registry)
    root = load_json(body, label=LABEL, error=IntakeError)
    out: list[AccessEvent] = []
    for index, record in enumerate(root.field("records").array()):
        event = _record(record, index, registry)
        if event is not None:
            out.append(event)
    return out


def _field(record: Node, props: Node, *names: str) -> Node | None:
    for holder in (props, record):
        if not holder.present:
            continue
        for name in names:
            for spelled in (name, name[0].upper() + name[1:]):
                if holder.has(spelled):
                    node = holder.field(spelled)
                    if node.opt_text() is not None:
                        return node
    return None


def _text(record: Node, props: Node, *names: str) -> str | None:
    node = _field(record, props, *names)
    return node.opt_text() if node is not None else None


def _record(record: Node, index: int, override: str | None) -> AccessEvent | None:
    record.mapping()
    if opt_text_at(record, "category", "Category") != CATEGORY:
        return None
    props = record.field("properties")
    if props.present:
        props.mapping()
    operation = (_text(record, props, "operationName") or "").lower()
    action = _ACTIONS.get(operation)
    if action is None:
        return None  # Delete, Untag, …
    result = _text(record, props, "resultType")
    if result is not None and not (result.lower() in _SUCCESS or result.startswith("2")):
        return None  # refused or failed
    repo_node = _field(record, props, "repository")
    if repo_node is None:
        raise record.error(f"a {operation} record names no repository")
    repository = repository_name(repo_node)
    digest_node = _field(record, props, "digest")
    tag_node = _field(record, props, "tag")
    digest = digest_at(digest_node) if digest_node is not None else None
    tag = tag_at(tag_node) if tag_node is not None else None
    when_node = _field(record, props, "time", "timeGenerated")
    if when_node is None:
        raise record.error("no time")
    when = when_node.timestamp()
    host = override or _registry(record, props)
    identity = _text(record, props, "identity")
    caller = address_host(_text(record, props, "callerIpAddress"))
    event_id = _text(record, props, "correlationId")
    if event_id is None:
        material = "\n".join([host, repository, digest or "", tag or "", when.isoformat()])
        event_id = "acr-" + hashlib.sha256(material.encode()).hexdigest()[:32]
    return AccessEvent(
        source=SOURCE,
        event_id=event_id,
        action=action,
        registry=host,
        repository=repository,
        digest=digest,
        tag=tag,
        principal=identity,
        principal_type="identity" if identity is not None else None,
        source_ip=caller if caller is not None and is_ip(caller) else None,
        user_agent=_text(record, props, "userAgent"),
        time=when,
    )


def _registry(record: Node, props: Node) -> str:
    server = _field(record, props, "loginServer")
    if server is not None:
        text = server.text()
        if not valid_host(text):
            server.fail("a registry host")
        return text
    resource = opt_text_at(record, "resourceId", "ResourceId") or ""
    m = _REGISTRY_ID.search(resource)
    if m is None:
        raise record.error("no login server and no registry in resourceId; pass registry=")
    return f"{m.group('name').lower()}.azurecr.io"
