"""Repository globs: `*` within one path segment, `**` across segments, `?` one character.

A glob is compiled once, at load time, to an anchored regular expression:

| glob          | matches                          | does not match        |
| ------------- | -------------------------------- | --------------------- |
| `payments/*`  | `payments/api`                   | `payments/api/v2`     |
| `payments/**` | `payments/api`, `payments/a/b`   | `payments`            |
| `**/base`     | `base`, `team/base`, `a/b/base`  | `base-image`          |
| `a/**/z`      | `a/z`, `a/b/z`, `a/b/c/z`        | `a/bz`                |
| `**`          | every repository                 |                       |
| `app-?`       | `app-1`                          | `app-10`, `x/app-1`   |

`**` must be a whole segment. A leading or inner `**` matches zero or more segments; a
trailing `**` matches one or more (so `payments/**` is what is *inside* `payments`).
Globs match the whole repository name without the registry host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ._base import string_value_schema

__all__ = ["Glob", "ImageGlob"]

_SEGMENT_CHARS = re.compile(r"[a-z0-9._*?-]+")


@dataclass(frozen=True)
class Glob:
    """A compiled repository glob; `Glob.compile("payments/**").matches("payments/api")`."""

    pattern: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def compile(cls, pattern: object) -> Glob:
        """Check and compile `pattern`; raise ValueError naming the problem."""
        if isinstance(pattern, Glob):
            return pattern
        if not isinstance(pattern, str):
            raise ValueError(f"got {pattern!r}, expected a repository glob such as 'team/**'")
        return cls(pattern=pattern, regex=re.compile(_translate(pattern)))

    def matches(self, repository: str) -> bool:
        """Whether the repository name (no registry host) matches the whole glob."""
        return self.regex.fullmatch(repository) is not None

    def __str__(self) -> str:
        return self.pattern

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return string_value_schema(cls.compile)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": r"^[a-z0-9._*?/-]+$",
            "description": "Repository glob (no registry host): * within one path segment, "
            "** across segments, ? one character.",
            "examples": ["payments/**", "*/base", "**"],
        }


def _translate(pattern: str) -> str:
    if not pattern:
        raise ValueError("got '', expected a repository glob such as 'team/**'")
    if pattern != pattern.lower():
        raise ValueError(
            f"got {pattern!r}: repository names are lower case, so this glob can never match; "
            f"expected {pattern.lower()!r}"
        )
    segments = pattern.split("/")
    for segment in segments:
        if not segment:
            raise ValueError(
                f"got {pattern!r}: empty path segment (leading, trailing or doubled '/'); "
                "expected segments separated by single '/'"
            )
        if not _SEGMENT_CHARS.fullmatch(segment):
            bad = sorted(set(re.sub(r"[a-z0-9._*?-]", "", segment)))
            raise ValueError(
                f"got {pattern!r}: character(s) {''.join(bad)!r} cannot appear in a repository "
                "name; expected a-z, 0-9, '.', '_', '-', '/' and the wildcards '*', '?', '**'"
            )
        if "**" in segment and segment != "**":
            raise ValueError(
                f"got {pattern!r}: '**' must be a whole path segment (like 'a/**' or '**/b'), "
                f"not part of {segment!r}; use '*' within a segment"
            )
    collapsed: list[str] = []
    for segment in segments:
        if not (segment == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(segment)

    out: list[str] = []
    last = len(collapsed) - 1
    for i, segment in enumerate(collapsed):
        if segment == "**":
            if i == 0 and i == last:
                out.append(r"[^/]+(?:/[^/]+)*")  # the whole name, any depth
            elif i == last:
                out.append(r"(?:/[^/]+)+")  # one or more segments below the prefix
            else:
                out.append("/" if i > 0 else "")
                out.append(r"(?:[^/]+/)*")  # zero or more whole segments
            continue
        if i > 0 and collapsed[i - 1] != "**":
            out.append("/")
        out.append(_translate_segment(segment))
    return "".join(out)


def _translate_segment(segment: str) -> str:
    parts: list[str] = []
    for char in segment:
        if char == "*":
            parts.append(r"[^/]*")
        elif char == "?":
            parts.append(r"[^/]")
        else:
            parts.append(re.escape(char))
    return "".join(parts)


# -- image reference globs (hygiene.allowedBaseImages) ----------------------------------------

_IMAGE_CHARS = re.compile(r"[A-Za-z0-9._:/@+*?-]+")
#: What a pattern without a tag or digest also accepts: any `:tag`, `@digest`, or both.
_ANY_TAG_OR_DIGEST = r"(?::[^/:@]+)?(?:@[^/@]+)?"


@dataclass(frozen=True)
class ImageGlob:
    """A glob over a whole image reference (`docker.io/library/debian:12-slim`).

    `*` is any run of characters within one path segment (never `/`), `**` any run of
    characters across segments, `?` one character (never `/`). A pattern whose last segment
    has no `:tag` and no `@digest` also matches every tag and digest of what it names:
    `docker.io/library/debian` matches `docker.io/library/debian:12` and
    `docker.io/library/debian@sha256:…`, not `docker.io/library/debian-evil`.
    """

    pattern: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def compile(cls, pattern: object) -> ImageGlob:
        """Check and compile `pattern`; raise ValueError naming the problem."""
        if isinstance(pattern, ImageGlob):
            return pattern
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(
                f"got {pattern!r}, expected an image reference glob such as "
                "'docker.io/library/debian:*'"
            )
        if not _IMAGE_CHARS.fullmatch(pattern):
            bad = sorted(set(re.sub(r"[A-Za-z0-9._:/@+*?-]", "", pattern)))
            raise ValueError(
                f"got {pattern!r}: character(s) {''.join(bad)!r} cannot appear in an image "
                "reference; expected letters, digits, '.', '_', '-', ':', '@', '/', '+' and "
                "the wildcards '*', '?', '**'"
            )
        return cls(pattern=pattern, regex=re.compile(_translate_image(pattern)))

    def matches(self, reference: str) -> bool:
        """Whether the whole reference matches."""
        return self.regex.fullmatch(reference) is not None

    def __str__(self) -> str:
        return self.pattern

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return string_value_schema(cls.compile)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": r"^[A-Za-z0-9._:/@+*?-]+$",
            "description": "Image reference glob: * within one path segment, ** across "
            "segments, ? one character; without a tag or digest it matches every tag and "
            "digest.",
            "examples": ["docker.io/library/debian:12*", "cgr.dev/chainguard/*", "ghcr.io/acme/**"],
        }


def _translate_image(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append(r"[^/]*")
        elif char == "?":
            out.append(r"[^/]")
        else:
            out.append(re.escape(char))
        i += 1
    last = pattern.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last and not pattern.endswith("**"):
        out.append(_ANY_TAG_OR_DIGEST)
    return "".join(out)
