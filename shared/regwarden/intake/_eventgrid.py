"""Azure Container Registry events → `regwarden.model.ImageEvent` (source `eventgrid`).

ACR publishes to an Event Grid system topic (learn.microsoft.com/azure/event-grid/
event-schema-container-registry); a subscription delivers in one of two schemas, with the
same `data` (`ContainerRegistryEventData`: id, timestamp, action, target{mediaType, size,
digest, repository, tag}, request{id, host, method, useragent}, actor{name}):

| delivery                                  | shape                                     |
| ----------------------------------------- | ----------------------------------------- |
| Event Grid schema (`application/json`)    | an array of `{id, topic, subject,         |
|                                           | eventType, eventTime, data, …}`           |
| CloudEvents 1.0, structured               | one `{specversion, id, source, type,      |
| (`application/cloudevents+json`)          | time, data}`                              |
| CloudEvents 1.0, batch                    | an array of those                         |
| (`application/cloudevents-batch+json`)    |                                           |
| CloudEvents 1.0, binary mode              | `ce-*` headers, the body is `data`        |
| ACR's own webhook (`az acr webhook`)      | `data` alone: `{id, timestamp, action,    |
|                                           | target, request}`                         |

| event                                      | regwarden event                          |
| ------------------------------------------ | ---------------------------------------- |
| `…ImagePushed`, tag `sha256-<hex>[.sig…]`  | SIGNED for the subject `sha256:<hex>`     |
| `…ImagePushed`                             | PUSHED (digest, and the tag if any)      |
| `…ImageDeleted`                            | DELETED (the manifest's digest)          |
| `…ChartPushed` / `…ChartDeleted`, Event    | skipped: no image                        |
| Grid's own subscription events             |                                          |
| webhook `push` / `quarantine` / `delete`   | as ImagePushed / ImagePushed / Deleted   |

The type is matched by its last dotted part: older docs write `ImagePushed` without the
`Microsoft.ContainerRegistry.` prefix. A referrer pushed by digest (OCI 1.1 `subject`) is
PUSHED, and the pipeline finds its subject by reading it (`classify_manifest`), as for
the other sources. The registry host is `data.request.host` (the login server the client
spoke to) and nothing else: the topic names the registry but not its cloud (`.azurecr.io`,
`.azurecr.cn`, `.azurecr.us`), so a host guessed from it could name another registry.
`delivery_id` is the event's id (a redelivery repeats it; the webhook's is `data.id`);
`time` the event's time, else `data.timestamp`.

A webhook subscription must first answer Event Grid's handshake: `eventgrid_validation`
(the Event Grid schema's SubscriptionValidationEvent) and `webhook_allowed_origin`
(CloudEvents' abuse-protection OPTIONS request) say what to answer. Pure; IntakeError
naming the field for anything malformed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from pydantic import ValidationError

from ..errors import IntakeError
from ..jsondoc import Node, load_json, show
from ..model import EventKind, ImageEvent
from ..reference import ImageRef
from ._common import check_content_type, digest_at, repository_name, tag_at, valid_host
from ._result import IntakeBatch
from ._signatures import signature_subject

__all__ = [
    "LABEL",
    "SOURCE",
    "VALIDATION_EVENT",
    "eventgrid_validation",
    "is_eventgrid_delivery",
    "parse_eventgrid",
    "parse_eventgrid_batch",
    "webhook_allowed_origin",
]

LABEL = "Event Grid delivery"
SOURCE = "eventgrid"
PREFIX = "Microsoft.ContainerRegistry."
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
CONTENT_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
)

_IMAGE_TYPES = {"ImagePushed": "push", "ImageDeleted": "delete"}
_CHART_TYPES = ("ChartPushed", "ChartDeleted")
# Event Grid's own events about the subscription: nothing to do with an image
_EVENTGRID_TYPES = (VALIDATION_EVENT, "Microsoft.EventGrid.SubscriptionDeletedEvent")
# ACR's own webhook actions (az acr webhook create --actions): quarantine fires when the
# registry's quarantine policy holds a push; that push is the image to judge
_WEBHOOK_ACTIONS = {"push": "push", "quarantine": "push", "delete": "delete"}
_WEBHOOK_SKIPPED = ("chart_push", "chart_delete")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _short_type(node: Node) -> str | None:
    """`ImagePushed` / `ImageDeleted` for an image event; None for one to skip (charts,
    Event Grid's own); fails naming the node for any other type."""
    kind = node.text()
    if kind in _EVENTGRID_TYPES:
        return None
    prefix, _, short = kind.rpartition(".")
    if prefix in ("", PREFIX.rstrip(".")):
        if short in _CHART_TYPES:
            return None
        if short in _IMAGE_TYPES:
            return short
    node.fail(f"{PREFIX}ImagePushed or ImageDeleted (or a chart event, skipped)")


def _image_event(data: Node, action: str, *, delivery_id: str, when: datetime | None) -> ImageEvent:
    """The image event in one `ContainerRegistryEventData`, for `action` push or delete."""
    data.mapping()
    said = data.field("action")
    if said.present and _WEBHOOK_ACTIONS.get(said.text()) != action:
        said.fail(f"an action matching the event type ({action!r})")
    target = data.field("target")
    target.mapping()
    repository = repository_name(target.field("repository"))
    digest = digest_at(target.field("digest"))
    tag_node = target.field("tag")
    tag = tag_at(tag_node) if tag_node.opt_text() is not None else None
    request = data.field("request")
    if not request.present:
        request.fail("the request the registry served (its host names the registry)")
    host_node = request.field("host")
    host = host_node.text().lower()
    if not valid_host(host):
        host_node.fail("a registry host such as NAME.azurecr.io")
    if when is None:
        when = data.field("timestamp").timestamp()
    actor = data.field("actor")
    subject = signature_subject(tag) if action == "push" else None
    if subject is not None:  # cosign .sig/.att/.sbom or a referrers-schema tag
        kind, tag, digest = EventKind.SIGNED, None, subject
    else:
        kind = EventKind.PUSHED if action == "push" else EventKind.DELETED
        if kind is EventKind.DELETED:
            tag = None  # ImageDeleted deletes the manifest, whatever tags it had
    try:
        return ImageEvent(
            kind=kind,
            source=SOURCE,
            image=ImageRef(registry=host, repository=repository, tag=tag, digest=digest),
            time=when,
            delivery_id=delivery_id,
            media_type=target.field("mediaType").opt_text(),
            user_agent=request.field("useragent").opt_text(),
            actor=actor.field("name").opt_text() if actor.present else None,
            subject_digest=subject,
        )
    except ValidationError as exc:
        raise data.error(f"cannot build an event ({exc.errors()[0]['msg']})") from None


def _cloudevent(node: Node) -> ImageEvent | None:
    spec = node.field("specversion")
    if spec.value != "1.0":
        spec.fail("CloudEvents '1.0'")
    short = _short_type(node.field("type"))
    if short is None:
        return None
    data = node.field("data")
    if not data.present and node.field("data_base64").present:
        data.fail("the event's data as JSON (data), as Event Grid delivers it")
    return _image_event(
        data,
        _IMAGE_TYPES[short],
        delivery_id=node.field("id").text(),
        when=node.field("time").opt_timestamp(),
    )


def _gridevent(node: Node) -> ImageEvent | None:
    short = _short_type(node.field("eventType"))
    if short is None:
        return None
    return _image_event(
        node.field("data"),
        _IMAGE_TYPES[short],
        delivery_id=node.field("id").text(),
        when=node.field("eventTime").opt_timestamp(),
    )


def _webhook(node: Node) -> ImageEvent | None:
    """ACR's own webhook (the `data` of an Event Grid event, alone)."""
    said = node.field("action")
    action = said.text()
    if action in _WEBHOOK_SKIPPED:
        return None
    if action not in _WEBHOOK_ACTIONS:
        said.fail("one of " + ", ".join((*_WEBHOOK_ACTIONS, *_WEBHOOK_SKIPPED)))
    return _image_event(
        node, _WEBHOOK_ACTIONS[action], delivery_id=node.field("id").text(), when=None
    )


def _event(node: Node) -> ImageEvent | None:
    node.mapping()
    if node.has("specversion"):
        return _cloudevent(node)
    if node.has("eventType"):
        return _gridevent(node)
    node.fail("an Event Grid event (eventType) or a CloudEvent (specversion)")


def _binary(body: bytes, headers: Mapping[str, str]) -> Node:
    """A binary-mode CloudEvent as its structured twin (the body is its data)."""
    event: dict[str, object] = {
        key[3:]: value for key, value in headers.items() if key.lower().startswith("ce-")
    }
    event = {key.lower(): value for key, value in event.items()}
    event["data"] = load_json(body, label=f"{LABEL} body", error=IntakeError).value
    return Node(event, "", label=f"{LABEL} (binary mode: ce-* headers)", error=IntakeError)


def _records(body: bytes, headers: Mapping[str, str]) -> tuple[list[Node], bool]:
    """(the events of one delivery, whether it is ACR's own webhook)."""
    check_content_type(_header(headers, "content-type"), allowed=CONTENT_TYPES, label=LABEL)
    if _header(headers, "ce-specversion") is not None:
        return [_binary(body, headers)], False
    root = load_json(body, label=LABEL, error=IntakeError)
    if isinstance(root.value, list):
        nodes = root.array()
        if not nodes:
            root.fail("at least one event")
        return nodes, False
    if isinstance(root.value, dict) and not (root.has("specversion") or root.has("eventType")):
        if root.has("action") and root.has("target"):
            return [root], True
        root.fail(
            "an array of Event Grid events, a CloudEvent (or a batch of them), or an ACR "
            "webhook {id, timestamp, action, target, request}",
            got="an object with keys " + ", ".join(repr(k) for k in list(root.mapping())[:5]),
        )
    return [root], False


def parse_eventgrid_batch(body: bytes, headers: Mapping[str, str]) -> IntakeBatch:
    """The image events of one delivery, each bad event reported in `errors` (one never
    hides the others); skipped counts the chart and Event Grid events. `headers` are the
    request's, in any case (binary mode is read from them). A body that is no delivery at
    all raises IntakeError."""
    nodes, webhook = _records(body, headers)
    events: list[ImageEvent] = []
    errors: list[IntakeError] = []
    skipped = 0
    for node in nodes:
        try:
            event = _webhook(node) if webhook else _event(node)
        except IntakeError as exc:
            errors.append(exc)
            continue
        if event is None:
            skipped += 1
        else:
            events.append(event)
    return IntakeBatch(events=tuple(events), errors=tuple(errors), skipped=skipped)


def _recorded(body: bytes) -> tuple[bytes, dict[str, str]] | None:
    """A recorded binary-mode delivery (`events/azure/*.binary.json`): `{"headers",
    "body"}` → (body bytes, headers); None for any other document."""
    try:
        root = load_json(body, label=LABEL, error=IntakeError)
    except IntakeError:
        return None  # parsing it as a plain delivery words the error
    value = root.value
    if not isinstance(value, dict) or set(value) != {"headers", "body"}:
        return None
    headers = {key: node.text(nonempty=False) for key, node in root.field("headers").items()}
    return json.dumps(value["body"]).encode(), headers


def parse_eventgrid(body: bytes, content_type: str | None) -> IntakeBatch:
    """One delivery as a body and its content type, or a recorded binary-mode one."""
    recorded = _recorded(body)
    if recorded is not None:
        return parse_eventgrid_batch(*recorded)
    headers = {"content-type": content_type} if content_type is not None else {}
    return parse_eventgrid_batch(body, headers)


# -- the subscription handshake -------------------------------------------------------------


def eventgrid_validation(body: bytes, headers: Mapping[str, str]) -> dict[str, str] | None:
    """The answer to Event Grid's subscription validation: `{"validationResponse": code}`
    (to send as a 200 JSON body) when `body` is a SubscriptionValidationEvent, else None
    (deliver it as events). IntakeError when a validation event has no code."""
    if _header(headers, "ce-specversion") is not None:
        return None  # CloudEvents subscriptions validate by OPTIONS instead
    try:
        root = load_json(body, label=LABEL, error=IntakeError)
    except IntakeError:
        return None  # not JSON: parsing it words the error
    for node in root.array() if isinstance(root.value, list) else [root]:
        if isinstance(node.value, dict) and node.value.get("eventType") == VALIDATION_EVENT:
            code = node.field("data").field("validationCode")
            return {"validationResponse": code.text()}
    return None


def webhook_allowed_origin(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The response headers allowing a CloudEvents webhook's abuse-protection request
    (an OPTIONS with `WebHook-Request-Origin`, CloudEvents HTTP webhook spec §4), else None.
    Event Grid sends it before delivering CloudEvents; any rate is accepted."""
    origin = _header(headers, "webhook-request-origin")
    if origin is None or not origin.strip():
        return None
    origin = origin.strip()
    if not valid_host(origin):
        raise IntakeError(
            f"invalid {LABEL} at header WebHook-Request-Origin: got {show(origin)}, "
            "expected a host such as eventgrid.azure.net"
        )
    return {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}


# -- detection (regwarden invoke) -------------------------------------------------------------


def _names_acr_type(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if value in _EVENTGRID_TYPES or value.startswith(PREFIX):
        return True
    return value in _IMAGE_TYPES or value in _CHART_TYPES


def _is_event(doc: object) -> bool:
    if not isinstance(doc, dict):
        return False
    return _names_acr_type(doc.get("eventType")) or (
        "specversion" in doc and _names_acr_type(doc.get("type"))
    )


def is_eventgrid_delivery(doc: object) -> bool:
    """Whether a decoded document looks like an ACR delivery: an Event Grid or CloudEvents
    event or batch of ACR's types (or Event Grid's validation), a recorded binary-mode
    one, or ACR's own webhook. No validation beyond the shape."""
    if isinstance(doc, list):
        return bool(doc) and all(_is_event(item) for item in doc)
    if not isinstance(doc, dict):
        return False
    if set(doc) == {"headers", "body"} and isinstance(doc["headers"], dict):
        lowered = {str(k).lower(): v for k, v in doc["headers"].items()}
        return _names_acr_type(lowered.get("ce-type"))
    if _is_event(doc):
        return True
    action, target = doc.get("action"), doc.get("target")
    return (
        isinstance(target, dict)
        and isinstance(doc.get("request"), dict)
        and action in (*_WEBHOOK_ACTIONS, *_WEBHOOK_SKIPPED)
        and "events" not in doc
    )
