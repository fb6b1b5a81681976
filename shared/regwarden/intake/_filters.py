"""Which events regwarden ignores (DESIGN "Quarantine"): its own writes, the quarantine
repository and `quarantined-*` tags. Pure predicates over `ImageEvent`; what counts as a
quarantine repository or tag is `regwarden.quarantine_names`'s."""

from __future__ import annotations

from collections.abc import Iterable

from ..model import ImageEvent
from ..quarantine_names import DEFAULT_TEMPLATE, is_destination, is_quarantine_tag

DEFAULT_USER_AGENT_PREFIX = "regwarden/"


def is_self_write(
    event: ImageEvent,
    user_agent_prefix: str = DEFAULT_USER_AGENT_PREFIX,
    *,
    actor: str | None = None,
) -> bool:
    """True when regwarden itself caused `event`.

    The User-Agent must start with `user_agent_prefix`. Any client can send that header,
    so pass `actor` (regwarden's registry identity) to also require `event.actor` to
    match. Events without a User-Agent (Harbor webhooks) are self-writes only when
    `actor` is given and matches.
    """
    if actor is not None and event.actor != actor:
        return False
    if event.user_agent is None:
        return actor is not None
    return event.user_agent.startswith(user_agent_prefix)


def ignore_reason(
    event: ImageEvent,
    *,
    user_agent_prefix: str = DEFAULT_USER_AGENT_PREFIX,
    quarantine_templates: Iterable[str] = (DEFAULT_TEMPLATE,),
    actor: str | None = None,
) -> str | None:
    """Why regwarden should ignore `event`, or None when it must be processed.
    `quarantine_templates`: the policy's `move` templates (`Policy.quarantine_templates`);
    events for the repositories they render to are regwarden's quarantine."""
    if is_self_write(event, user_agent_prefix, actor=actor):
        return f"regwarden's own write (user agent {event.user_agent!r}, actor {event.actor!r})"
    if is_destination(event.image.repository, quarantine_templates):
        return f"quarantine repository {event.image.repository!r}"
    if event.image.tag is not None and is_quarantine_tag(event.image.tag, event.image.digest):
        return f"quarantine tag {event.image.tag!r}"
    return None
