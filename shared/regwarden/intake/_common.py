"""Helpers shared by the intake parsers: Content-Type checks and image references."""

from __future__ import annotations

import re

from ..errors import IntakeError, InvalidReference
from ..jsondoc import Node
from ..reference import ImageRef, validate_digest

# A registry host as it appears in a Host header or a resource URL: DNS name or bracketed
# IPv6 literal, optional port. Internal names without a dot ("registry") are allowed.
_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]"
    r"|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

DIGEST_EXPECTED = "a digest like sha256:<64 lowercase hex>"
TAG_EXPECTED = "a tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"
REPOSITORY_EXPECTED = "a repository name (lowercase path components separated by '/')"


def check_content_type(content_type: str | None, *, allowed: tuple[str, ...], label: str) -> None:
    """Accept None (unknown) or one of `allowed`, ignoring parameters and case."""
    if content_type is None:
        return
    essence = content_type.split(";", 1)[0].strip().lower()
    if essence not in allowed:
        raise IntakeError(
            f"invalid {label}: got Content-Type {content_type!r}, expected one of: "
            + ", ".join(allowed)
        )


def valid_host(text: str) -> bool:
    m = _HOST.fullmatch(text)
    if m is None:
        return False
    port = m.group("port")
    return port is None or 0 < int(port) < 65536


def check_registry(override: str | None) -> None:
    """Validate the caller's `registry=` override (None means "from the event")."""
    if override is not None and not valid_host(override):
        raise IntakeError(f"invalid registry argument: got {override!r}, expected a host[:port]")


def registry_host(override: str | None, node: Node, *, what: str) -> str:
    """The registry host: the caller's override if given, else the string at `node`."""
    if override is not None:
        check_registry(override)
        return override
    if not node.present:
        raise node.error(f"no registry host in the event ({what}); pass registry=")
    host = node.text()
    if not valid_host(host):
        node.fail("a registry host[:port]")
    return host


def valid_repository(text: str) -> bool:
    try:
        parsed = ImageRef.parse(f"localhost/{text}")
    except InvalidReference:
        return False
    return parsed.repository == text and parsed.tag is None and parsed.digest is None


def repository_name(node: Node) -> str:
    text = node.text()
    if not valid_repository(text):
        node.fail(REPOSITORY_EXPECTED)
    return text


def digest_at(node: Node) -> str:
    text = node.text()
    try:
        return validate_digest(text)
    except InvalidReference:
        node.fail(DIGEST_EXPECTED)


def tag_at(node: Node) -> str:
    text = node.text()
    if not _TAG.fullmatch(text):
        node.fail(TAG_EXPECTED)
    return text


def image_ref(*, registry: str, repository: str, tag: str | None, digest: str | None) -> ImageRef:
    """An ImageRef from parts already validated (Docker Hub names normalised as `parse` does)."""
    if registry.lower() in _HUB_ALIASES:
        registry = "docker.io"
        if "/" not in repository:
            repository = f"library/{repository}"
    return ImageRef(registry=registry, repository=repository, tag=tag, digest=digest)
