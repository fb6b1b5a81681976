"""A fast semver 2.0.0 tag parser that yields plain tuples ordered by precedence.

Why not `semver.Version`: the planner parses every tag of every image (millions in a
registry-wide run), and most tags are not versions at all. A first-character check rejects
those without a regex, and a version becomes a tuple that Python compares in C, with no
object per tag and no Python-level `__lt__`. The unit tests check this ordering against
the `semver` package's own comparison.

Accepted: `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]` with an optional `v`/`V` prefix, as the
semver grammar defines it (no leading zeros in numeric parts). Anything else — `1.2`,
`latest`, `01.2.3` — is not a version and the semver rule ignores it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["SemverKey", "parse_semver", "semver_tuple"]

_NUM = r"0|[1-9][0-9]*"
_PRE_ID = r"0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*"
_SEMVER = re.compile(
    rf"[vV]?({_NUM})\.({_NUM})\.({_NUM})"
    rf"(?:-((?:{_PRE_ID})(?:\.(?:{_PRE_ID}))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_STARTS = frozenset("0123456789vV")

PreId = tuple[int, int] | tuple[int, str]


class SemverKey(NamedTuple):
    """Precedence key: compare two keys with `<` to compare the versions.

    `release` is 1 for a release and 0 for a pre-release, so `1.0.0-rc.1 < 1.0.0`;
    `pre` holds the pre-release identifiers as `(0, number)` or `(1, text)`, so numeric
    identifiers sort below alphanumeric ones and a shorter list below a longer one that
    starts the same (the rules of semver §11). Build metadata plays no part.
    """

    major: int
    minor: int
    patch: int
    release: int
    pre: tuple[PreId, ...]

    @property
    def is_prerelease(self) -> bool:
        return self.release == 0

    def text(self) -> str:
        """The canonical version text (no `v`, no build metadata)."""
        core = f"{self.major}.{self.minor}.{self.patch}"
        if self.release:
            return core
        return core + "-" + ".".join(str(part[1]) for part in self.pre)


def parse_semver(tag: str) -> SemverKey | None:
    """The precedence key of a semver tag, or None when the tag is not a version."""
    key = semver_tuple(tag)
    return None if key is None else SemverKey(*key)


def semver_tuple(tag: str) -> tuple[int, int, int, int, tuple[PreId, ...]] | None:
    """`parse_semver` as a plain tuple, for the planner's hot loop."""
    if not tag or tag[0] not in _STARTS:
        return None
    core = tag[1:] if tag[0] in "vV" else tag
    if "-" not in core and "+" not in core:  # fast path: a plain release, X.Y.Z
        parts = core.split(".")
        if len(parts) != 3 or not core.isascii():
            return None
        a, b, c = parts
        if not (a.isdigit() and b.isdigit() and c.isdigit()):
            return None
        if (a[0] == "0" and a != "0") or (b[0] == "0" and b != "0") or (c[0] == "0" and c != "0"):
            return None  # a leading zero
        return (int(a), int(b), int(c), 1, ())
    m = _SEMVER.fullmatch(tag)
    if m is None:
        return None
    major, minor, patch, pre = m.groups()
    if pre is None:  # a release with build metadata
        return (int(major), int(minor), int(patch), 1, ())
    ids: list[PreId] = []
    for part in pre.split("."):
        if part.isdigit():
            ids.append((0, int(part)))
        else:
            ids.append((1, part))
    return (int(major), int(minor), int(patch), 0, tuple(ids))
