"""CNCF distribution (registry 2.x / distribution 3.x) notification envelopes."""

from __future__ import annotations

from pydantic import ValidationError

from ..errors import IntakeError
from ..jsondoc import Node, load_json
from ..model import EventKind, ImageEvent
from ._common import (
    check_content_type,
    check_registry,
    digest_at,
    image_ref,
    registry_host,
    repository_name,
    tag_at,
)
from ._result import IntakeBatch
from ._signatures import signature_subject

LABEL = "distribution notification"
SOURCE = "distribution"

CONTENT_TYPES = (
    "application/vnd.docker.distribution.events.v1+json",
    "application/vnd.docker.distribution.events.v2+json",
    "application/json",
)

#: Target media types that are manifests or indexes (everything else is a blob).
MANIFEST_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.artifact.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.cncf.oras.artifact.manifest.v1+json",
    }
)

DISTRIBUTION_ACTIONS = ("push", "pull", "mount", "delete")
"""The `action` values distribution sends (blob and manifest alike)."""


def parse_distribution(
    body: bytes, *, content_type: str | None, registry: str | None = None
) -> list[ImageEvent]:
    """Parse a distribution notification envelope into image events (strict).

    Keeps manifest and index events: `push` → PUSHED, `pull` → PULLED, `delete` → DELETED;
    a push whose tag is a signature/attestation/referrer tag (`signature_subject`) becomes
    SIGNED for the subject digest in the same repository. Drops blob events (non-manifest
    media types, `/blobs/` URLs, every `mount`) and repository deletions (no digest, no
    tag). A delete carrying only a digest may be a blob's: it is kept as DELETED, which is
    harmless because consumers look the digest up and find no image.

    `registry` overrides `request.host` (which may be an internal name). Each event's `id`
    is its delivery id. Any malformed event raises IntakeError naming its path; use
    `parse_distribution_batch` to keep the good events of a mixed envelope.
    """
    batch = parse_distribution_batch(body, content_type=content_type, registry=registry)
    if batch.errors:
        first = batch.errors[0]
        if len(batch.errors) == 1:
            raise first
        raise IntakeError(f"{first} (and {len(batch.errors) - 1} more bad events)")
    return list(batch.events)


def distribution_events(
    body: bytes, *, content_type: str | None, registry: str | None = None
) -> list[Node]:
    """The events of a distribution envelope `{"events": [...]}`, each unread; IntakeError
    for a body that is not one (wrong content type, not JSON, other keys) or a bad
    `registry` override."""
    check_content_type(content_type, allowed=CONTENT_TYPES, label=LABEL)
    check_registry(registry)
    root = load_json(body, label=LABEL, error=IntakeError)
    unexpected = sorted(set(root.mapping()) - {"events"})
    if unexpected:
        root.fail(
            'an envelope {"events": [...]}',
            got="an object with keys " + ", ".join(repr(k) for k in unexpected[:5]),
        )
    return root.field("events").opt_array()


def parse_distribution_batch(
    body: bytes, *, content_type: str | None, registry: str | None = None
) -> IntakeBatch:
    """Like `parse_distribution`, but one bad event is reported in `errors` instead of
    failing the envelope. A body that is not an envelope at all still raises IntakeError."""
    events: list[ImageEvent] = []
    errors: list[IntakeError] = []
    skipped = 0
    for node in distribution_events(body, content_type=content_type, registry=registry):
        try:
            event = _event(node, registry)
        except IntakeError as exc:
            errors.append(exc)
            continue
        if event is None:
            skipped += 1
        else:
            events.append(event)
    return IntakeBatch(events=tuple(events), errors=tuple(errors), skipped=skipped)


def _event(node: Node, registry: str | None) -> ImageEvent | None:
    node.mapping()
    action_node = node.field("action")
    action = action_node.text()
    if action not in DISTRIBUTION_ACTIONS:
        action_node.fail("one of " + ", ".join(DISTRIBUTION_ACTIONS))
    if action == "mount":
        return None  # cross-repository blob mounts
    target = node.field("target")
    target.mapping()
    media_type = target.field("mediaType").opt_text()
    url = target.field("url").opt_text() or ""
    tag_node = target.field("tag")
    tag = tag_at(tag_node) if tag_node.opt_text() is not None else None
    is_manifest = media_type in MANIFEST_TYPES or "/manifests/" in url or tag is not None
    if action in ("push", "pull") and not is_manifest:
        return None  # layer or config blob
    if action == "delete" and not is_manifest and ("/blobs/" in url or media_type is not None):
        return None  # a blob deletion that says so

    delivery_id = node.field("id").text()
    when = node.field("timestamp").timestamp()
    repository = repository_name(target.field("repository"))
    digest_node = target.field("digest")
    digest = digest_at(digest_node) if digest_node.opt_text() is not None else None
    if digest is None and action != "delete":
        digest_node.fail("a digest like sha256:<64 lowercase hex>")
    if digest is None and tag is None:
        return None  # a whole repository was deleted; not an image event

    request = node.field("request")
    host_node = request.field("host") if request.present else request
    host = registry_host(registry, host_node, what="request.host")
    user_agent = request.field("useragent").opt_text() if request.present else None
    actor = node.field("actor")
    actor_name = actor.field("name").opt_text() if actor.present else None

    subject = signature_subject(tag) if action == "push" else None
    if subject is not None:
        kind = EventKind.SIGNED
        image = image_ref(registry=host, repository=repository, tag=None, digest=subject)
    else:
        kind = {"push": EventKind.PUSHED, "pull": EventKind.PULLED}.get(action, EventKind.DELETED)
        image = image_ref(registry=host, repository=repository, tag=tag, digest=digest)
    try:
        return ImageEvent(
            kind=kind,
            source=SOURCE,
            image=image,
            time=when,
            delivery_id=delivery_id,
            media_type=media_type,
            user_agent=user_agent,
            actor=actor_name,
            subject_digest=subject,
            manifest_digest=digest if subject is not None else None,
        )
    except ValidationError as exc:
        raise node.error(f"cannot build an event ({exc.errors()[0]['msg']})") from None
