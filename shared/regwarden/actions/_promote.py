"""Promotion on PASSED: add a tag (e.g. `verified`) or copy to a release repository."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..providers import Registry
from ..reference import ImageRef


@dataclass(frozen=True, slots=True)
class PromoteOutcome:
    repository: str
    tag: str | None


def promote(
    registry: Registry,
    *,
    image: ImageRef,
    tag: str | None,
    repository: str | None,
) -> PromoteOutcome:
    """Idempotent: tagging or copying the same digest again changes nothing."""
    if image.digest is None:
        raise UsageError(f"promotion needs a digest, got {image}")
    if repository and repository != image.repository:
        registry.copy(image.repository, image.digest, repository, tag)
        return PromoteOutcome(repository, tag)
    if tag is None:
        raise UsageError("promotion needs a tag or a release repository")
    registry.add_tag(image.repository, image.digest, tag)
    return PromoteOutcome(image.repository, tag)
