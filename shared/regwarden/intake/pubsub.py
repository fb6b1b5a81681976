"""One Pub/Sub message out of whichever HTTP delivery carried it (Google Cloud).

    message = decode_pubsub(request_body, request_headers)
    json.loads(message.data)        # the publisher's payload, base64-decoded and checked

Every GCP function, and `regwarden invoke` on an `events/gcp/` file, gets its messages
one of three ways, all with the same `message` object inside:

| delivery                     | how it is told apart               | where the message is  |
| ---------------------------- | ---------------------------------- | --------------------- |
| Pub/Sub push subscription    | a JSON body `{"message", …}`       | `message`             |
| CloudEvent, binary mode      | `ce-specversion` header (Eventarc, | `message` in the body |
| (Eventarc, Cloud Run fns)    | functions-framework)               | (MessagePublishedData)|
| CloudEvent, structured mode  | `application/cloudevents+json`, or | `data.message`        |
|                              | a body with `specversion`          |                       |

Shapes: Pub/Sub's push format (cloud.google.com/pubsub/docs/push) and
`google/events/cloud/pubsub/v1/data.proto` (MessagePublishedData) of googleapis/
google-cloudevents; the CloudEvent type is `google.cloud.pubsub.topic.v1.messagePublished`.
Eventarc writes `message_id`/`publish_time` beside `messageId`/`publishTime`: either
spelling is read, and both must agree. A message without `attributes` has none; `data`
must be base64 (standard or URL-safe alphabet, padding optional, as proto3 JSON allows).

Pure: no I/O, no clock, no CloudEvents SDK (the headers are read here). Anything else
raises `regwarden.errors.IntakeError` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ..errors import IntakeError
from ..jsondoc import Node, load_json, show

__all__ = [
    "CLOUDEVENT_TYPE",
    "LABEL",
    "PubSubMessage",
    "decode_file",
    "decode_pubsub",
    "is_pubsub_delivery",
    "message_of",
    "split_recorded",
]

LABEL = "Pub/Sub delivery"
CLOUDEVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
"""The CloudEvent type Eventarc gives a Pub/Sub message."""
STRUCTURED = "application/cloudevents+json"

_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
# `-`/`_` are the URL-safe alphabet's `+`/`/`; proto3 JSON accepts either for bytes.
_URLSAFE = str.maketrans("-_", "+/")


@dataclass(frozen=True, slots=True)
class PubSubMessage:
    """One Pub/Sub message as its subscriber sees it."""

    data: bytes
    """The publisher's payload, decoded from base64 (empty when it sent only attributes)."""
    attributes: dict[str, str] = field(default_factory=dict)
    message_id: str = ""
    """Unique within the topic: a redelivery carries the same id (the event's delivery id)."""
    publish_time: datetime | None = None
    subscription: str | None = None
    """`projects/P/subscriptions/S` (a push body and MessagePublishedData carry it)."""
    source: str | None = None
    """The CloudEvent source, `//pubsub.googleapis.com/projects/P/topics/T`; None for a
    push body (it names only the subscription)."""
    delivery_attempt: int | None = None
    """A push body's `deliveryAttempt` (set when the subscription has a dead-letter
    policy); None when the delivery does not say (Eventarc's CloudEvents never do)."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever the case its sender wrote it in."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _essence(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _b64(node: Node) -> bytes:
    """`node`'s base64 text as bytes; fails naming the node on anything but base64."""
    if not node.present:
        return b""
    text = node.text(nonempty=False).strip()
    if not _BASE64.fullmatch(text) or len(text.rstrip("=")) % 4 == 1:
        node.fail("base64 data")
    padded = text.rstrip("=").translate(_URLSAFE)
    try:
        return base64.b64decode(padded + "=" * (-len(padded) % 4), validate=True)
    except (binascii.Error, ValueError):
        node.fail("base64 data")


def _either(node: Node, camel: str, snake: str) -> Node:
    """`camel` or its snake_case twin (Eventarc writes both); they must agree if both are."""
    first, second = node.field(camel), node.field(snake)
    if first.present and second.present and first.value != second.value:
        second.fail(f"the same value as {first.path} ({show(first.value)})")
    return second if second.present and not first.present else first


def _published(node: Node) -> datetime | None:
    """`publishTime` or `publish_time`: both are read as times (a sender may write the
    twins with different precision), and must be the same instant."""
    first, second = node.field("publishTime"), node.field("publish_time")
    when, twin = first.opt_timestamp(), second.opt_timestamp()
    if when is not None and twin is not None and when != twin:
        second.fail(f"the same time as {first.path} ({show(first.value)})")
    return when or twin


def _attributes(node: Node) -> dict[str, str]:
    if not node.present:
        return {}
    return {key: value.text(nonempty=False) for key, value in node.items()}


def _message(
    envelope: Node,
    *,
    message_id: str | None = None,
    published: datetime | None = None,
    source: str | None = None,
) -> PubSubMessage:
    """The message in `envelope` (a push body or MessagePublishedData). `message_id` and
    `published` come from the CloudEvent's `id`/`time` when the message lacks them."""
    envelope.mapping()
    node = envelope.field("message")
    if not node.present:
        node.fail('the Pub/Sub message ({"message": {"data", "attributes", "messageId", …}})')
    node.mapping()
    data = _b64(node.field("data"))
    attributes = _attributes(node.field("attributes"))
    if not data and not attributes:
        node.fail("data or attributes (Pub/Sub refuses a message with neither)", got="neither")
    id_node = _either(node, "messageId", "message_id")
    message_id = id_node.opt_text() or message_id
    if not message_id:
        id_node.fail("the message id (messageId)")
    when = _published(node) or published
    subscription = envelope.field("subscription").opt_text()
    attempt = envelope.field("deliveryAttempt").value
    return PubSubMessage(
        data=data,
        attributes=attributes,
        message_id=message_id or "",
        publish_time=when,
        subscription=subscription,
        source=source,
        delivery_attempt=(
            attempt
            if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 0
            else None
        ),
    )


def _check_type(kind: str | None, where: str) -> None:
    if kind != CLOUDEVENT_TYPE:
        raise IntakeError(
            f"invalid {LABEL} at {where}: got {show(kind)}, expected {CLOUDEVENT_TYPE!r} "
            "(a Pub/Sub message as a CloudEvent)"
        )


def _ce_time(value: str | None, where: str) -> datetime | None:
    return Node(value, where, label=LABEL, error=IntakeError).opt_timestamp()


def _structured(root: Node) -> PubSubMessage:
    root.mapping()
    spec = root.field("specversion").text()
    if spec != "1.0":
        root.field("specversion").fail("CloudEvents '1.0'")
    _check_type(root.field("type").opt_text(), "type")
    data = root.field("data")
    if not data.present and root.field("data_base64").present:
        raw = _b64(root.field("data_base64"))
        data = load_json(raw, label=f"{LABEL} data_base64", error=IntakeError)
    if not data.present:
        data.fail('MessagePublishedData ({"message": …, "subscription": …})')
    return _message(
        data,
        message_id=root.field("id").opt_text(),
        published=root.field("time").opt_timestamp(),
        source=root.field("source").opt_text(),
    )


def _binary(body: bytes, headers: Mapping[str, str]) -> PubSubMessage:
    spec = _header(headers, "ce-specversion")
    if spec != "1.0":
        raise IntakeError(
            f"invalid {LABEL} at header ce-specversion: got {show(spec)}, expected '1.0'"
        )
    _check_type(_header(headers, "ce-type"), "header ce-type")
    root = load_json(body, label=f"{LABEL} body", error=IntakeError)
    return _message(
        root,
        message_id=_header(headers, "ce-id"),
        published=_ce_time(_header(headers, "ce-time"), "header ce-time"),
        source=_header(headers, "ce-source"),
    )


def decode_pubsub(body: bytes, headers: Mapping[str, str]) -> PubSubMessage:
    """The Pub/Sub message in one HTTP delivery: a push body, or a Pub/Sub CloudEvent in
    binary (`ce-*` headers) or structured mode. `headers` in any case. Raises IntakeError
    for anything else (including a CloudEvent of another type)."""
    if _header(headers, "ce-specversion") is not None:
        return _binary(body, headers)
    root = load_json(body, label=LABEL, error=IntakeError)
    if _essence(_header(headers, "content-type")) == STRUCTURED or root.has("specversion"):
        return _structured(root)
    if not isinstance(root.value, dict) or not root.has("message"):
        root.fail(
            'a Pub/Sub push body {"message": …, "subscription": …} or a '
            f"{CLOUDEVENT_TYPE} CloudEvent"
        )
    return _message(root)


def is_pubsub_delivery(doc: object) -> bool:
    """Whether a decoded JSON document looks like a Pub/Sub delivery (push body,
    MessagePublishedData, a structured Pub/Sub CloudEvent or a recorded binary-mode one);
    no validation beyond the shape (for `regwarden invoke`, which must guess)."""
    if not isinstance(doc, dict):
        return False
    if set(doc) == {"headers", "body"}:
        headers, body = doc["headers"], doc["body"]
        return isinstance(headers, dict) and is_pubsub_delivery(body)
    if doc.get("type") == CLOUDEVENT_TYPE:
        return True
    return isinstance(doc.get("message"), dict) and "specversion" not in doc


def split_recorded(body: bytes) -> tuple[bytes, dict[str, str]] | None:
    """A recorded binary-mode delivery (an `events/gcp/*.binary.json` file):
    `{"headers": {"ce-id": …}, "body": MessagePublishedData}` → (body bytes, headers);
    None for any other document. The HTTP request a function gets, as one JSON file that
    `regwarden invoke` can run."""
    try:
        root = load_json(body, label=LABEL, error=IntakeError)
    except IntakeError:
        return None
    value = root.value
    if not isinstance(value, dict) or set(value) != {"headers", "body"}:
        return None
    headers = root.field("headers")
    out = {key: node.text(nonempty=False) for key, node in headers.items()}
    return json.dumps(value["body"]).encode(), out


def decode_file(body: bytes) -> PubSubMessage:
    """The message in a recorded delivery (an `events/gcp/` file, `regwarden invoke`): a
    push body, a structured CloudEvent, or a binary-mode one with its headers
    (`split_recorded`)."""
    recorded = split_recorded(body)
    if recorded is not None:
        return decode_pubsub(*recorded)
    return decode_pubsub(body, {"content-type": "application/json"})


def message_of(doc: object) -> PubSubMessage | None:
    """The message in a decoded JSON document if it is a valid Pub/Sub delivery, else
    None (for `detect`: which source wrote an `invoke` file)."""
    if not is_pubsub_delivery(doc):
        return None
    try:
        return decode_file(json.dumps(doc).encode())
    except (IntakeError, TypeError, ValueError):
        return None
