"""Push-gate sections beyond signatures and scans: `hygiene` (size, layers, base image,
labels), `provenance` (SLSA builders) and `promotion` (what a passing image gets)."""

from __future__ import annotations

import re

from pydantic import ConfigDict, Field, StrictInt, model_validator

from ..quarantine_names import render, template_problem
from ._base import Loc, PolicyModel, rule_error
from ._glob import ImageGlob
from ._values import ByteSize

__all__ = ["Hygiene", "Promotion", "Provenance"]

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_LABEL = re.compile(r"[^\s=]+")


class Hygiene(PolicyModel):
    """Limits on what an image looks like. Every key is optional; an unset key checks
    nothing."""

    max_size: ByteSize | None = None
    """The largest compressed image size (config and layers as the manifest lists them):
    bytes as an integer, or `500MB`, `1.5GiB`."""

    max_layers: StrictInt | None = Field(default=None, ge=1)
    """The most layers an image may have."""

    allowed_base_images: tuple[ImageGlob, ...] = ()
    """Globs over the `org.opencontainers.image.base.name` label; an image must name a base
    matching one of them. Empty: any base (and no label needed)."""

    required_labels: tuple[str, ...] = ()
    """Label keys every image must carry with a non-empty value."""

    @model_validator(mode="after")
    def _check_labels(self) -> Hygiene:
        problems: list[tuple[Loc, str]] = []
        seen: dict[str, int] = {}
        for i, label in enumerate(self.required_labels):
            if not _LABEL.fullmatch(label):
                problems.append(
                    (
                        ("requiredLabels", i),
                        f"got {label!r}, expected a label key without spaces or '=' "
                        "(e.g. org.opencontainers.image.source)",
                    )
                )
            elif label in seen:
                problems.append(
                    (
                        ("requiredLabels", i),
                        f"duplicate label {label!r} (first at requiredLabels[{seen[label]}])",
                    )
                )
            seen.setdefault(label, i)
        if problems:
            raise rule_error(problems)
        return self


class Provenance(PolicyModel):
    """Signed SLSA provenance: an image must carry a verified provenance attestation whose
    builder is one of `builderIds`."""

    required: bool = True
    """Fail images without a verified provenance attestation from an accepted builder."""

    builder_ids: tuple[str, ...] = ()
    """Accepted builder ids (`predicate.builder.id` in SLSA v0.2,
    `predicate.runDetails.builder.id` in v1), compared exactly."""

    @model_validator(mode="after")
    def _check_builders(self) -> Provenance:
        problems: list[tuple[Loc, str]] = []
        if self.required and not self.builder_ids:
            problems.append(
                (
                    ("builderIds",),
                    "provenance is required but no builder is accepted; expected at least "
                    "one builder id (or 'required: false')",
                )
            )
        seen: dict[str, int] = {}
        for i, builder in enumerate(self.builder_ids):
            if not builder.strip():
                problems.append((("builderIds", i), "got '', expected a builder id"))
            elif builder in seen:
                problems.append(
                    (
                        ("builderIds", i),
                        f"duplicate builder id {builder!r} (first at builderIds[{seen[builder]}])",
                    )
                )
            seen.setdefault(builder, i)
        if problems:
            raise rule_error(problems)
        return self


class Promotion(PolicyModel):
    """What happens to an image that passes: a tag added in place, a copy to a release
    repository, or both (the copy carries the tag)."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["tag"]}, {"required": ["repository"]}]}
    )

    tag: str | None = None
    """The tag to add (e.g. `verified`)."""

    repository: str | None = None
    """The repository to copy the image to: a name, or a template with `{repository}`
    (`release/{repository}`)."""

    @model_validator(mode="after")
    def _check(self) -> Promotion:
        problems: list[tuple[Loc, str]] = []
        if self.tag is None and self.repository is None:
            problems.append(((), "nothing to promote: expected 'tag' and/or 'repository'"))
        if self.tag is not None and not _TAG.fullmatch(self.tag):
            problems.append(
                (("tag",), f"got {self.tag!r}, expected a tag: [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
            )
        if self.repository is not None:
            problem = template_problem(
                self.repository,
                own_repository=(
                    f"got {self.repository!r}: that is the image's own repository; remove "
                    "'repository' and set 'tag' to tag the image in place"
                ),
            )
            if problem is not None:
                problems.append((("repository",), problem))
        if problems:
            raise rule_error(problems)
        return self

    def render(self, repository: str) -> str | None:
        """The release repository for a source repository, or None (tag in place)."""
        if self.repository is None:
            return None
        return render(self.repository, repository)
