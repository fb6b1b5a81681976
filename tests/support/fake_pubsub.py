"""A loopback stand-in for Pub/Sub's publish API, and the deliveries a subscriber gets.

    with FakePubSub() as pubsub:
        env = {"REGWARDEN_GCP_ENDPOINT_PUBSUB": pubsub.url}
        ... google.pubsub_v1.PublisherClient(**gcp_clients.client_kwargs("pubsub", env))
        pubsub.published("projects/demo-proj/topics/regwarden-alerts")
        # [{"data": b'{"time": …}', "attributes": {"team": "payments", …},
        #   "messageId": "1", "publishTime": "2026-…Z", "topic": "projects/…"}]
        body, headers = push_delivery(pubsub.published(topic)[0], subscription=SUB)

Served: `POST /v1/{topic=projects/*/topics/*}:publish` — the URL template of the GAPIC
client's REST transport (`google/pubsub_v1/services/publisher/transports/rest_base.py`,
`_BasePublish`). Request `{"messages": [PubsubMessage]}` and answer `{"messageIds": […]}`
as `google/pubsub_v1/types/pubsub.py` defines PublishRequest / PublishResponse (JSON
names camelCase, `data` base64). Refusals follow the service's documented limits
(cloud.google.com/pubsub/quotas): a message with neither data nor attributes, more than
100 attributes, a key over 256 bytes or starting with `goog`, a value over 1024 bytes, a
request over 1000 messages or 10 MB → 400 INVALID_ARGUMENT; an unknown topic (when the
fake was given its topics) → 404 NOT_FOUND. Message ids are the decimal strings Pub/Sub
hands out; `publishTime` is stamped by the fake as the server does.

`push_delivery` / `cloudevent_delivery` build what a subscriber's endpoint receives for a
recorded message: Pub/Sub's push body (cloud.google.com/pubsub/docs/push), or the
Eventarc CloudEvent in binary or structured mode (`MessagePublishedData` of
googleapis/google-cloudevents `google/events/cloud/pubsub/v1/data.proto`, with Eventarc's
snake_case twins `message_id` / `publish_time`).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from datetime import UTC, datetime
from typing import Any

from support.google_fake import GoogleFake, Reply, Request, google_error

__all__ = ["FakePubSub", "cloudevent_delivery", "push_delivery"]

MAX_MESSAGES = 1000
MAX_REQUEST_BYTES = 10_000_000
MAX_ATTRIBUTES = 100
MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 1024
CLOUDEVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class FakePubSub(GoogleFake):
    """Pub/Sub's Publish, recording each message per topic."""

    def __init__(self, topics: list[str] | None = None) -> None:
        super().__init__()
        self._known = set(topics) if topics is not None else None
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(4_000_000_001)  # Pub/Sub ids are long decimal strings
        self.route(
            "POST",
            r"/v1/(?P<topic>projects/[^/]+/topics/[^/:]+)(?::|%3A)publish",
            self._publish,
        )

    # -- the test's view -------------------------------------------------------------------

    def published(self, topic: str) -> list[dict[str, Any]]:
        """The messages published to `topic` (`projects/P/topics/T`, or just `T`), in
        order: `data` decoded to bytes, `attributes`, `messageId`, `publishTime`, `topic`."""
        with self.lock:
            if "/" in topic:
                return [dict(m) for m in self._messages.get(topic, [])]
            return [
                dict(m)
                for name, messages in sorted(self._messages.items())
                if name.rsplit("/", 1)[-1] == topic
                for m in messages
            ]

    def published_json(self, topic: str) -> list[Any]:
        """Each message's data parsed as JSON."""
        return [json.loads(m["data"]) for m in self.published(topic)]

    def topics(self) -> list[str]:
        with self.lock:
            return sorted(self._messages)

    # -- the API ---------------------------------------------------------------------------

    def _publish(self, request: Request) -> Reply:
        topic = request.params["topic"]
        if self._known is not None and topic not in self._known:
            return google_error(404, f"Resource not found (resource={topic.rsplit('/', 1)[-1]}).")
        body = request.body if isinstance(request.body, dict) else {}
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return google_error(400, "The request must contain at least one message.")
        if len(messages) > MAX_MESSAGES:
            return google_error(400, f"Request contains more than {MAX_MESSAGES} messages.")
        if len(json.dumps(body).encode()) > MAX_REQUEST_BYTES:
            return google_error(400, "Request payload size exceeds the limit: 10000000 bytes.")
        accepted: list[dict[str, Any]] = []
        for message in messages:
            checked = _checked(message)
            if isinstance(checked, str):
                return google_error(400, checked)
            accepted.append(checked)
        ids: list[str] = []
        stamp = _now_text()
        for message in accepted:
            message_id = str(next(self._ids))
            ids.append(message_id)
            message.update(messageId=message_id, publishTime=stamp, topic=topic)
            self._messages.setdefault(topic, []).append(message)
        return 200, {"messageIds": ids}


def _checked(message: object) -> dict[str, Any] | str:
    """The message as recorded, or why Pub/Sub would refuse the request."""
    if not isinstance(message, dict):
        return "Invalid message: expected an object."
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        return "Invalid value at 'messages[0].data' (TYPE_BYTES), Base64 decoding failed."
    attributes = message.get("attributes") or {}
    if not data and not attributes:
        return (
            "One or more messages in the publish request is empty. Each message must "
            "contain either non-empty data, or at least one attribute."
        )
    if len(attributes) > MAX_ATTRIBUTES:
        return f"Too many attributes: {len(attributes)} > {MAX_ATTRIBUTES}."
    for key, value in attributes.items():
        if not key or len(key.encode()) > MAX_KEY_BYTES:
            return f"Invalid attribute key length: {key!r}."
        if key.startswith("goog"):
            return f"Attribute key {key!r} is reserved (goog prefix)."
        if len(str(value).encode()) > MAX_VALUE_BYTES:
            return f"Attribute value for {key!r} exceeds {MAX_VALUE_BYTES} bytes."
    out: dict[str, Any] = {"data": data, "attributes": dict(attributes)}
    if message.get("orderingKey"):
        out["orderingKey"] = message["orderingKey"]
    return out


# -- what a subscriber receives ----------------------------------------------------------------


def _wire_message(message: dict[str, Any], *, snake: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attributes": dict(message.get("attributes") or {}),
        "data": base64.b64encode(message.get("data") or b"").decode(),
        "messageId": message["messageId"],
        "publishTime": message["publishTime"],
    }
    if snake:  # Eventarc writes both spellings
        out["message_id"] = message["messageId"]
        out["publish_time"] = message["publishTime"]
    return out


def push_delivery(
    message: dict[str, Any], *, subscription: str, delivery_attempt: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The request a push subscription sends for a recorded message: (body, headers)."""
    body: dict[str, Any] = {
        "message": _wire_message(message, snake=False),
        "subscription": subscription,
    }
    if delivery_attempt is not None:  # set when the subscription has a dead-letter policy
        body["deliveryAttempt"] = delivery_attempt
    return json.dumps(body).encode(), {"content-type": "application/json"}


def cloudevent_delivery(
    message: dict[str, Any], *, subscription: str, binary: bool
) -> tuple[bytes, dict[str, str]]:
    """The request Eventarc sends a Cloud Run function for a recorded message, as a
    CloudEvent in binary mode (`ce-*` headers) or structured mode: (body, headers)."""
    topic = message["topic"]
    data = {"message": _wire_message(message, snake=True), "subscription": subscription}
    attributes = {
        "id": message["messageId"],
        "source": f"//pubsub.googleapis.com/{topic}",
        "specversion": "1.0",
        "type": CLOUDEVENT_TYPE,
        "time": message["publishTime"],
    }
    if binary:
        headers = {f"ce-{k}": v for k, v in attributes.items()}
        headers["content-type"] = "application/json"
        return json.dumps(data).encode(), headers
    document = {**attributes, "datacontenttype": "application/json", "data": data}
    return json.dumps(document).encode(), {"content-type": "application/cloudevents+json"}
