"""Which events regwarden ignores (DESIGN "Quarantine"): its own writes, the quarantine
repository and `quarantined-*` tags. Pure predicates over `ImageEvent`."""

from __future__ import annotations

import re
from functools import lru_cache

from ..model import ImageEvent
from ..reference import short_digest

DEFAULT_USER_AGENT_PREFIX = "regwarden/"
DEFAULT_QUARANTINE_REPOSITORY = "quarantine/{repository}"
QUARANTINE_TAG_PREFIX = "quarantined-"


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


@lru_cache(maxsize=32)
def _template_pattern(template: str) -> re.Pattern[str]:
    parts = template.split("{repository}")
    return re.compile(".+".join(re.escape(p) for p in parts))


def is_quarantine_repo(repository: str, template: str = DEFAULT_QUARANTINE_REPOSITORY) -> bool:
    """True when `repository` is a quarantine repository under the policy's `template`
    (`quarantine/{repository}` by default; a template without `{repository}` names one
    fixed repository)."""
    return _template_pattern(template).fullmatch(repository) is not None


def is_quarantine_tag(tag: str | None, digest: str | None = None) -> bool:
    """True for a `quarantined-*` tag. With `digest`, only the exact tag regwarden writes
    for that image (`quarantined-<short digest>`) counts, so a pusher cannot dodge the
    gate by naming a tag `quarantined-anything`."""
    if not tag or not tag.startswith(QUARANTINE_TAG_PREFIX):
        return False
    if digest is None:
        return True
    return tag == QUARANTINE_TAG_PREFIX + short_digest(digest)


def ignore_reason(
    event: ImageEvent,
    *,
    user_agent_prefix: str = DEFAULT_USER_AGENT_PREFIX,
    quarantine_repository: str = DEFAULT_QUARANTINE_REPOSITORY,
    actor: str | None = None,
) -> str | None:
    """Why regwarden should ignore `event`, or None when it must be processed."""
    if is_self_write(event, user_agent_prefix, actor=actor):
        return f"regwarden's own write (user agent {event.user_agent!r}, actor {event.actor!r})"
    if is_quarantine_repo(event.image.repository, quarantine_repository):
        return f"quarantine repository {event.image.repository!r}"
    if event.image.tag is not None and is_quarantine_tag(event.image.tag, event.image.digest):
        return f"quarantine tag {event.image.tag!r}"
    return None
