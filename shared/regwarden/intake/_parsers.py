"""`PARSERS`: event source name → how a delivery from it becomes image events.

Each source registers an `EventParser`: `parse(body, content_type)` for one delivery,
`detect(doc)` telling its documents apart (for `regwarden invoke`, which is handed a file
and no source), and whether the webhook receiver accepts it (EventBridge events arrive
through SQS, never at the receiver). A new source registers here, or from its own module,
and is then parsed, detected and (if a webhook) received without an edit elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import IntakeError
from ..model import ImageEvent
from ..plugins import PluginRegistry
from ._distribution import parse_distribution_batch
from ._harbor import parse_harbor_results

__all__ = ["MAX_LISTED_PROBLEMS", "PARSERS", "EventParser", "Handshake", "HandshakeCheck"]

log = logging.getLogger("regwarden.intake")

MAX_LISTED_PROBLEMS = 20  # a 400 names each problem, within reason for a 1 MiB envelope


@dataclass(frozen=True, slots=True)
class Handshake:
    """The answer to a sender's subscription handshake (200), in place of taking events."""

    body: dict[str, str] | None = None
    """A JSON body to answer with (Event Grid: `{"validationResponse": code}`)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers (CloudEvents' abuse protection: `WebHook-Allowed-Origin`)."""


HandshakeCheck = Callable[[str, bytes, Mapping[str, str]], Handshake | None]
"""(HTTP method, body, headers) → the answer to a handshake, or None for a delivery;
IntakeError for a malformed handshake."""


@dataclass(frozen=True, slots=True)
class EventParser:
    """How one event source's deliveries are read."""

    parse: Callable[[bytes, str | None], list[ImageEvent]]
    """(body, content type) → its events; IntakeError for a malformed delivery."""

    detect: Callable[[object], bool]
    """Whether a decoded JSON document looks like one of this source's deliveries."""

    described: str
    """What a delivery is, for "cannot tell" messages: 'a Harbor webhook'."""

    webhook: bool = True
    """The receiver accepts it at `/events/<name>`."""

    handshake: HandshakeCheck | None = None
    """A sender that proves the endpoint before delivering (Event Grid): the receiver
    answers it, even from a caller without credentials, as the sender's handshake may
    carry none (its deliveries still must)."""


PARSERS = PluginRegistry[EventParser]("event source")


# -- the built-in sources ------------------------------------------------------------------------


def _distribution(body: bytes, content_type: str | None) -> list[ImageEvent]:
    """An envelope's good events; IntakeError only when every record is malformed (naming
    each problem), so one bad record never hides the good ones."""
    batch = parse_distribution_batch(body, content_type=content_type)
    if batch.errors and not batch.events and not batch.skipped:
        raise IntakeError(_no_valid_event(batch.errors))
    for err in batch.errors:
        log.warning("skipped a malformed distribution event: %s", err)
    return list(batch.events)


def _no_valid_event(errors: Sequence[IntakeError]) -> str:
    listed = [str(e) for e in errors[:MAX_LISTED_PROBLEMS]]
    if len(errors) > MAX_LISTED_PROBLEMS:
        listed.append(f"and {len(errors) - MAX_LISTED_PROBLEMS} more")
    what = "1 problem" if len(errors) == 1 else f"{len(errors)} problems"
    return f"no valid event in the envelope ({what}): " + "; ".join(listed)


def _harbor(body: bytes, content_type: str | None) -> list[ImageEvent]:
    return [r.event for r in parse_harbor_results(body, content_type=content_type)]


def _eventbridge(body: bytes, content_type: str | None) -> list[ImageEvent]:
    """One EventBridge event as a JSON document (an `invoke` file); the content type says
    nothing here. The module is imported on use: it brings pydantic models along."""
    from ..nesting import TooDeep, loads_json
    from .eventbridge import LABEL, parse_eventbridge

    try:
        doc = loads_json(body)
    except TooDeep as exc:
        raise IntakeError(f"{LABEL}: {exc}") from None
    except ValueError as exc:
        raise IntakeError(f"{LABEL} is not JSON: {exc}") from None
    return parse_eventbridge(doc)


def _gcr(body: bytes, content_type: str | None) -> list[ImageEvent]:
    """A Pub/Sub delivery of Artifact Registry's `gcr` topic (push body or CloudEvent)."""
    from ._gcr import parse_gcr

    return parse_gcr(body, content_type)


def _gcr_detect(doc: object) -> bool:
    from ._gcr import is_gcr_delivery

    return is_gcr_delivery(doc)


def _eventgrid(body: bytes, content_type: str | None) -> list[ImageEvent]:
    """An ACR delivery: Event Grid schema, CloudEvents (one, a batch, or binary mode
    recorded with its headers) or ACR's own webhook; its good events, as `_distribution`."""
    from ._eventgrid import parse_eventgrid

    batch = parse_eventgrid(body, content_type)
    if batch.errors and not batch.events and not batch.skipped:
        raise IntakeError(_no_valid_event(batch.errors))
    for err in batch.errors:
        log.warning("skipped a malformed Event Grid event: %s", err)
    return list(batch.events)


def _eventgrid_detect(doc: object) -> bool:
    from ._eventgrid import is_eventgrid_delivery

    return is_eventgrid_delivery(doc)


def _eventgrid_handshake(method: str, body: bytes, headers: Mapping[str, str]) -> Handshake | None:
    from ._eventgrid import eventgrid_validation, webhook_allowed_origin

    if method == "OPTIONS":
        allowed = webhook_allowed_origin(headers)
        return None if allowed is None else Handshake(headers=allowed)
    answer = eventgrid_validation(body, headers)
    return None if answer is None else Handshake(body=answer)


def _has(*keys: str) -> Callable[[object], bool]:
    return lambda doc: isinstance(doc, dict) and any(k in doc for k in keys)


def _harbor_detect(doc: object) -> bool:
    """Harbor's default JSON or its CloudEvents; a Google CloudEvent (Eventarc's Pub/Sub
    messages) has `specversion` too, and is not Harbor's; nor is an Azure one."""
    if not _has("event_data", "specversion")(doc):
        return False
    assert isinstance(doc, dict)
    return not str(doc.get("type", "")).startswith(("google.", "Microsoft."))


PARSERS.add(
    "distribution",
    EventParser(_distribution, _has("events"), 'a distribution envelope ({"events": […]})'),
)
PARSERS.add(
    "eventbridge",
    EventParser(_eventbridge, _has("detail-type"), "an EventBridge event", webhook=False),
)
# Pub/Sub push subscriptions authenticate with Google-signed OIDC tokens, which the
# receiver's shared-token check cannot verify: `gcr` messages go to the GCP functions
# (Cloud Run checks the token), and to `regwarden invoke`, never to `serve`.
PARSERS.add(
    "gcr",
    EventParser(
        _gcr,
        _gcr_detect,
        "a Pub/Sub delivery of a gcr message (push body or CloudEvent)",
        webhook=False,
    ),
)
# Event Grid proves a webhook endpoint before delivering (a validation event, or an
# OPTIONS request for CloudEvents): the receiver answers it. Deliveries authenticate as
# any webhook's: Event Grid sends the token as a secret delivery property (an
# `Authorization: Bearer …` header on every delivery); ACR's own webhooks as a header too.
PARSERS.add(
    "eventgrid",
    EventParser(
        _eventgrid,
        _eventgrid_detect,
        "an Event Grid or CloudEvents delivery of ACR events (or ACR's webhook)",
        handshake=_eventgrid_handshake,
    ),
)
PARSERS.add(
    "harbor",
    EventParser(_harbor, _harbor_detect, "a Harbor webhook"),
)
