"""Helpers shared by the report parsers: digests, severities, findings."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from ..errors import InvalidReference
from ..jsondoc import Node
from ..model import Finding, Severity
from ..reference import validate_digest
from ._errors import ScanFormatError

DIGEST_EXPECTED = "a digest like sha256:<64 lowercase hex>"


def checked_digest(value: str, *, what: str) -> str:
    """Return `value` if it is a well-formed digest, else raise ScanFormatError."""
    try:
        return validate_digest(value)
    except InvalidReference:
        raise ScanFormatError(
            f"invalid {what}: got {value!r}, expected {DIGEST_EXPECTED}"
        ) from None


def node_digest(node: Node) -> str:
    """The digest held by `node` (a string), validated."""
    text = node.text()
    try:
        return validate_digest(text)
    except InvalidReference:
        node.fail(DIGEST_EXPECTED)


def digest_from_repo_digests(node: Node) -> str | None:
    """The one digest named by a list of `name@sha256:…` strings, or None when empty.

    Several different digests are ambiguous (the caller must say which image it means).
    """
    found: list[str] = []
    for item in node.opt_array():
        text = item.text()
        _, sep, digest = text.rpartition("@")
        if not sep:
            item.fail("name@digest")
        try:
            validate_digest(digest)
        except InvalidReference:
            item.fail(f"name@digest with {DIGEST_EXPECTED}")
        if digest not in found:
            found.append(digest)
    if len(found) > 1:
        node.fail("one image digest; pass digest= to choose", got=", ".join(found))
    return found[0] if found else None


def severity(node: Node) -> Severity:
    text = node.text()
    try:
        return Severity.parse(text)
    except ValueError:
        valid = ", ".join(s.name for s in Severity)
        node.fail(f"a severity, one of {valid}")


def best_score(candidates: Iterable[float | None]) -> float | None:
    """The first score that is present, in the caller's order of preference."""
    for score in candidates:
        if score is not None:
            return score
    return None


def highest(scores: Iterable[float | None]) -> float | None:
    present = [s for s in scores if s is not None]
    return max(present) if present else None


def make_finding(node: Node, **fields: object) -> Finding:
    """Build a Finding; a model validation problem becomes ScanFormatError at `node`."""
    try:
        return Finding.model_validate(fields)
    except ValidationError as exc:
        raise node.error(f"cannot build a finding ({exc.errors()[0]['msg']})") from None


def clip(text: str | None, limit: int = 200) -> str:
    """First line of `text`, at most `limit` characters ('' for None)."""
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
