"""The names quarantine gives things: repository templates and tags (DESIGN "Quarantine").

A repository template is a repository name that may contain `{repository}`, the source
repository's name: quarantine's `repository` (default `quarantine/{repository}`), and with
the same grammar promotion's and the signature repository's. This module renders,
validates and matches them, and names the tag `retag` adds (`quarantined-<short digest>`).
The policy, the pipeline's event filter, the quarantine action and retention all use it.

The one matching rule: a repository is a quarantine destination when it is what a `move`
section's template renders to for some source. Only `move` creates and fills that
repository; `retag` and `lock` hold the image where it is and ignore the template, so
their template names nothing and a repository matching it is an ordinary repository,
gated like any other. (Before this module the pipeline also skipped events under `retag`
and `lock` templates and under the built-in default when no section used it; retention
and `Policy.is_quarantine_repository` already followed this rule.)

Pure: no policy models and no I/O, so the event filter imports it without the policy.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from functools import lru_cache
from typing import Protocol

from .reference import short_digest

__all__ = [
    "DEFAULT_TEMPLATE",
    "PLACEHOLDER",
    "REPOSITORY_NAME",
    "TAG_PREFIX",
    "QuarantineSection",
    "destination_templates",
    "is_destination",
    "is_quarantine_repo",
    "is_quarantine_tag",
    "quarantine_tag",
    "quarantine_template_problem",
    "render",
    "sources_of",
    "template_problem",
]

PLACEHOLDER = "{repository}"
DEFAULT_TEMPLATE = "quarantine/{repository}"
"""Where `move` puts an image when the policy names no quarantine repository."""
TAG_PREFIX = "quarantined-"
"""`retag`'s tags: `quarantined-<short digest>`."""

#: A repository name without the registry host (distribution's path grammar).
REPOSITORY_NAME = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
_SAMPLE_REPOSITORY = "team/app"


class QuarantineSection(Protocol):
    """What matching needs of a policy's quarantine section."""

    @property
    def strategy(self) -> str: ...

    @property
    def repository(self) -> str: ...


# -- rendering and validation ----------------------------------------------------------------


def render(template: str, repository: str) -> str:
    """`template` with `{repository}` replaced by the source repository name."""
    return template.replace(PLACEHOLDER, repository)


def template_problem(template: str, *, own_repository: str | None) -> str | None:
    """What is wrong with a repository template, if anything. `own_repository` is the
    problem with `{repository}` alone (the image's own repository); None accepts it."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"got {template!r}: {exc}"
    unknown = [f for f in fields if f != "repository"]
    if unknown:
        return f"unknown placeholder {{{unknown[0]}}} in {template!r}; valid: {PLACEHOLDER}"
    if own_repository is not None and template.strip() == PLACEHOLDER:
        return own_repository
    rendered = render(template, _SAMPLE_REPOSITORY)
    if not REPOSITORY_NAME.fullmatch(rendered):
        return (
            f"got {template!r}, which renders to {rendered!r} for {_SAMPLE_REPOSITORY!r}: not a "
            "valid repository name (lower-case components separated by '/')"
        )
    return None


def quarantine_template_problem(template: str) -> str | None:
    """What is wrong with a quarantine repository template, if anything."""
    return template_problem(
        template,
        own_repository=(
            f"got {template!r}: images would be quarantined into their own repository; "
            f"expected e.g. {DEFAULT_TEMPLATE!r}"
        ),
    )


# -- matching ---------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _pattern(template: str) -> re.Pattern[str]:
    """`template` as a pattern whose group `source` is the source repository. Every
    `{repository}` in it renders to the same name, so later ones must repeat the first;
    the rest of the template is literal text, not a regex."""
    parts = [re.escape(p) for p in template.split(PLACEHOLDER)]
    if len(parts) == 1:
        return re.compile(parts[0])
    return re.compile(parts[0] + "(?P<source>.+)" + "(?P=source)".join(parts[1:]))


def is_quarantine_repo(repository: str, template: str = DEFAULT_TEMPLATE) -> bool:
    """True when `template` renders to `repository` for some source repository (a template
    without `{repository}` names one fixed repository)."""
    return _pattern(template).fullmatch(repository) is not None


def destination_templates(sections: Iterable[QuarantineSection]) -> tuple[str, ...]:
    """The templates of the `move` sections among `sections`, sorted, each once: the only
    ones that name a quarantine repository."""
    return tuple(sorted({s.repository for s in sections if s.strategy == "move"}))


def is_destination(repository: str, templates: Iterable[str]) -> bool:
    """Whether `repository` is a quarantine destination under any of `templates` (as
    `destination_templates` gives them)."""
    return any(is_quarantine_repo(repository, t) for t in templates)


def sources_of(repository: str, templates: Iterable[str]) -> list[str]:
    """The source repositories whose quarantine under one of `templates` is `repository`,
    in the templates' order. A fixed template (no `{repository}`) names no source."""
    out: list[str] = []
    for template in templates:
        if PLACEHOLDER not in template:
            continue  # a fixed quarantine repository: the source is not in its name
        m = _pattern(template).fullmatch(repository)
        if m is not None:
            out.append(m.group("source"))
    return out


# -- tags -------------------------------------------------------------------------------------


def quarantine_tag(digest: str) -> str:
    """The tag `retag` adds to the image `digest`: `quarantined-<short digest>`."""
    return TAG_PREFIX + short_digest(digest)


def is_quarantine_tag(tag: str | None, digest: str | None = None) -> bool:
    """True for a `quarantined-*` tag. With `digest`, only the exact tag regwarden writes
    for that image (`quarantine_tag(digest)`) counts, so a pusher cannot dodge the gate by
    naming a tag `quarantined-anything`."""
    if not tag or not tag.startswith(TAG_PREFIX):
        return False
    if digest is None:
        return True
    return tag == quarantine_tag(digest)
