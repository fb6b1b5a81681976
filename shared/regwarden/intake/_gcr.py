"""Artifact Registry's `gcr` Pub/Sub topic → `regwarden.model.ImageEvent`.

Artifact Registry (and Container Registry before it) publishes one message per manifest
write to the topic `gcr` of its project (cloud.google.com/artifact-registry/docs/
configure-notifications); the data is JSON naming the image by full reference:

    {"action": "INSERT", "digest": "us-docker.pkg.dev/P/R/IMAGE@sha256:…"}
    {"action": "INSERT", "digest": "…/IMAGE@sha256:…", "tag": "…/IMAGE:1.1"}
    {"action": "DELETE", "tag": "us-docker.pkg.dev/P/R/IMAGE:1.1"}

| message                                          | event                                |
| ------------------------------------------------ | ------------------------------------ |
| INSERT, tag `sha256-<hex>[.sig/.att/.sbom]`      | SIGNED for the subject `sha256:<hex>` |
| INSERT with a digest (and maybe a tag)           | PUSHED                               |
| INSERT with only a tag                           | PUSHED by tag (the pipeline resolves |
|                                                  | the tag to the digest it names now)  |
| DELETE                                           | DELETED (digest and/or tag)          |

A referrer pushed by digest (OCI 1.1 `subject`, e.g. `regwarden sign --format bundle`)
arrives as a plain INSERT by digest: it is PUSHED, and the pipeline reads the manifest,
finds its subject (`classify_manifest`) and re-evaluates that image, as for a
distribution push. `delivery_id` is the Pub/Sub message id (a redelivery repeats it);
`time` is the publish time. Either key may be missing, never both; when both are present
they must name the same image. Pure; IntakeError naming the field for anything else.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from ..errors import IntakeError, InvalidReference
from ..jsondoc import Node, load_json
from ..model import EventKind, ImageEvent
from ..reference import ImageRef
from ._signatures import signature_subject
from .pubsub import PubSubMessage, decode_pubsub, message_of, split_recorded

__all__ = [
    "LABEL",
    "SOURCE",
    "gcr_events",
    "is_gcr_delivery",
    "is_occurrence_delivery",
    "parse_gcr",
]

LABEL = "gcr message"
SOURCE = "gcr"
_ACTIONS = ("INSERT", "DELETE")


def _reference(node: Node, *, want: str) -> ImageRef:
    """A full reference `HOST/PATH@sha256:…` (want "digest") or `HOST/PATH:TAG` (want
    "tag"): the host must be written out, and only the part the key names is there."""
    text = node.text()
    example = "HOST/PROJECT/REPO/IMAGE" + ("@sha256:<hex>" if want == "digest" else ":TAG")
    try:
        ref = ImageRef.parse(text)
    except InvalidReference as exc:
        node.fail(f"a full image reference {example} ({exc})")
    if not text.startswith(ref.registry + "/"):
        node.fail(f"a full image reference {example} with its registry host")
    if want == "digest" and (ref.digest is None or ref.tag is not None):
        node.fail(f"a reference by digest, {example}")
    if want == "tag" and (ref.tag is None or ref.digest is not None):
        node.fail(f"a reference by tag, {example}")
    return ref


def gcr_events(message: PubSubMessage) -> list[ImageEvent]:
    """The image event in one `gcr` message (already taken out of its delivery)."""
    root = load_json(message.data, label=LABEL, error=IntakeError)
    root.mapping()
    action_node = root.field("action")
    action = action_node.text()
    if action not in _ACTIONS:
        action_node.fail("one of " + ", ".join(_ACTIONS))
    digest_node, tag_node = root.field("digest"), root.field("tag")
    by_digest = _reference(digest_node, want="digest") if digest_node.present else None
    by_tag = _reference(tag_node, want="tag") if tag_node.present else None
    if by_digest is None and by_tag is None:
        digest_node.fail("a digest or a tag (the message names the image by one of them)")
    if by_digest is not None and by_tag is not None and by_digest.name != by_tag.name:
        tag_node.fail(f"a tag of the same image as digest ({by_digest.name})")
    if message.publish_time is None:
        raise IntakeError(f"invalid {LABEL}: the delivery has no publish time (publishTime)")
    first = by_digest or by_tag
    assert first is not None
    tag = by_tag.tag if by_tag is not None else None
    digest = by_digest.digest if by_digest is not None else None
    subject = signature_subject(tag) if action == "INSERT" else None
    if subject is not None:  # cosign .sig/.att/.sbom or a referrers-schema tag
        kind, tag, digest = EventKind.SIGNED, None, subject
    elif action == "INSERT":
        kind = EventKind.PUSHED
    else:
        kind = EventKind.DELETED
    try:
        return [
            ImageEvent(
                kind=kind,
                source=SOURCE,
                image=ImageRef(
                    registry=first.registry, repository=first.repository, tag=tag, digest=digest
                ),
                time=message.publish_time,
                delivery_id=message.message_id,
                subject_digest=subject,
            )
        ]
    except ValidationError as exc:
        raise root.error(f"cannot build an event ({exc.errors()[0]['msg']})") from None


def parse_gcr(body: bytes, content_type: str | None) -> list[ImageEvent]:
    """One delivery of a `gcr` message: a Pub/Sub push body, a structured CloudEvent (by
    content type or shape), or a recorded binary-mode one (`{"headers", "body"}`, the
    `events/gcp/*.binary.json` files). A function that has the request's headers decodes
    with `decode_pubsub` itself and calls `gcr_events`."""
    recorded = split_recorded(body)
    if recorded is not None:
        return gcr_events(decode_pubsub(*recorded))
    return gcr_events(decode_pubsub(body, {"content-type": content_type or "application/json"}))


def _payload_has(check: Callable[[dict[str, object]], bool]) -> Callable[[object], bool]:
    def detect(doc: object) -> bool:
        message = message_of(doc)
        if message is None:
            return False
        try:
            data = load_json(message.data, label=LABEL, error=IntakeError).value
        except IntakeError:
            return False
        return isinstance(data, dict) and check(data)

    return detect


is_gcr_delivery = _payload_has(lambda d: d.get("action") in _ACTIONS)
"""Whether a decoded document is a Pub/Sub delivery of a `gcr` message."""


def _names_an_occurrence(data: dict[str, object]) -> bool:
    name = data.get("name")
    return isinstance(data.get("kind"), str) and isinstance(name, str) and "/occurrences/" in name


is_occurrence_delivery = _payload_has(_names_an_occurrence)
"""Whether a decoded document is a Pub/Sub delivery of an Artifact Analysis occurrence
notification (`container-analysis-occurrences-v1`: `{"name", "kind", "notificationTime"}`).
It names no image: finding it takes a Grafeas lookup (`scanning.artifact_analysis`), so
it is no intake parser; `regwarden invoke on_scan` tells it apart with this."""
