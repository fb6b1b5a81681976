"""Repository globs: `*` within a segment, `**` across segments, `?` one character, anchored
at both ends; compiled once; checked against a simple segment-by-segment reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regwarden.policy import Glob


@pytest.mark.parametrize(
    ("glob", "name", "expected"),
    [
        # * stays inside one segment
        ("payments/*", "payments/api", True),
        ("payments/*", "payments/api/v2", False),
        ("payments/*", "payments", False),
        ("*/base", "team/base", True),
        ("*/base", "a/team/base", False),
        ("*", "api", True),
        ("*", "team/api", False),
        ("pay*", "payments", True),
        ("pay*", "pay", True),
        ("*-api", "payments-api", True),
        ("*-api", "payments/x-api", False),
        # ** crosses segments
        ("payments/**", "payments/api", True),
        ("payments/**", "payments/a/b/c", True),
        ("payments/**", "payments", False),
        ("payments/**", "paymentsx/api", False),
        ("**/base", "base", True),
        ("**/base", "team/base", True),
        ("**/base", "a/b/base", True),
        ("**/base", "base-image", False),
        ("**/base", "team/xbase", False),
        ("a/**/z", "a/z", True),
        ("a/**/z", "a/b/z", True),
        ("a/**/z", "a/b/c/z", True),
        ("a/**/z", "a/bz", False),
        ("a/**/z", "a/z/b", False),
        ("**", "a", True),
        ("**", "a/b/c", True),
        ("**/**", "a/b", True),
        ("a/**/**/z", "a/z", True),
        ("**/api/**", "x/api/v1", True),
        ("**/api/**", "api/v1", True),
        ("**/api/**", "x/api", False),
        # ? is exactly one character, never '/'
        ("app-?", "app-1", True),
        ("app-?", "app-10", False),
        ("app-?", "app-", False),
        ("a?b", "a/b", False),
        ("team/v?/api", "team/v2/api", True),
        # anchored at both ends, literal characters are literal
        ("payments", "payments", True),
        ("payments", "payments/api", False),
        ("payments", "my-payments", False),
        ("team.web", "team.web", True),
        ("team.web", "teamxweb", False),
        ("a_b", "a_b", True),
    ],
)
def test_glob_table(glob: str, name: str, expected: bool) -> None:
    assert Glob.compile(glob).matches(name) is expected


@pytest.mark.parametrize(
    ("glob", "message"),
    [
        ("", "expected a repository glob"),
        ("Payments/**", "lower case"),
        ("/payments", "empty path segment"),
        ("payments/", "empty path segment"),
        ("a//b", "empty path segment"),
        ("pay**", "'\\*\\*' must be a whole path segment"),
        ("a/***", "'\\*\\*' must be a whole path segment"),
        ("a/[bc]", "cannot appear in a repository name"),
        ("a b", "cannot appear in a repository name"),
        ("registry.example.com:5000/a", "cannot appear in a repository name"),
    ],
)
def test_bad_globs_are_rejected_with_the_reason(glob: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Glob.compile(glob)


def test_glob_is_compiled_once_and_compares_by_pattern() -> None:
    glob = Glob.compile("payments/**")
    assert Glob.compile(glob) is glob
    assert glob == Glob.compile("payments/**")
    assert str(glob) == "payments/**"
    assert glob.regex.pattern.startswith("payments")


# -- property: the compiled regex agrees with a segment-by-segment reference -------------------


def _segment_matches(pattern: str, text: str) -> bool:
    if not pattern:
        return not text
    head = pattern[0]
    if head == "*":
        return any(_segment_matches(pattern[1:], text[i:]) for i in range(len(text) + 1))
    if not text:
        return False
    if head == "?" or head == text[0]:
        return _segment_matches(pattern[1:], text[1:])
    return False


def _reference(pattern: list[str], name: list[str]) -> bool:
    """`**` takes zero or more whole segments, except a trailing `**`, which takes one or
    more; any other segment matches exactly one name segment."""
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        least = 0 if rest else 1
        return any(_reference(rest, name[k:]) for k in range(least, len(name) + 1))
    return bool(name) and _segment_matches(head, name[0]) and _reference(rest, name[1:])


_name_segment = st.text(alphabet="ab.-", min_size=1, max_size=4)
_glob_segment = st.one_of(
    st.just("**"),
    st.text(
        alphabet=st.sampled_from(["a", "b", ".", "-", "*", "?"]), min_size=1, max_size=4
    ).filter(lambda s: "**" not in s),
)


@settings(max_examples=400)
@given(
    pattern=st.lists(_glob_segment, min_size=1, max_size=4),
    name=st.lists(_name_segment, min_size=1, max_size=5),
)
def test_glob_agrees_with_reference(pattern: list[str], name: list[str]) -> None:
    glob = Glob.compile("/".join(pattern))
    assert glob.matches("/".join(name)) is _reference(pattern, name)


@given(name=st.lists(_name_segment, min_size=1, max_size=5))
def test_a_literal_glob_matches_only_itself(name: list[str]) -> None:
    text = "/".join(name)
    assert Glob.compile(text).matches(text)
    assert not Glob.compile(text).matches(text + "/x")
    assert Glob.compile("**").matches(text)
