"""The image record retention plans over, and its construction from registry listings.

Planning a million records has to be fast, so a record is a `NamedTuple` (built in C,
immutable, about half the cost of a frozen dataclass) and every time is an epoch float in
seconds. Converting from `datetime` happens once, here, at the edge.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ...errors import RegistryError, UsageError

__all__ = ["ImageRecord", "cosign_subject", "from_ecr_image", "to_epoch"]

# cosign's tag schema for artifacts that belong to an image: sha256-<hex>.sig|.att|.sbom
_COSIGN_TAG = re.compile(r"(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})\.(?:sig|att|sbom)")


def to_epoch(value: datetime | float | int | str | None) -> float | None:
    """Epoch seconds from a `datetime` (naive means UTC), a number, or an ISO 8601 string."""
    if value is None:
        return None
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    if kind is int:
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"got time {value!r}, expected an ISO 8601 timestamp such as '2026-01-31T12:00:00Z'"
            ) from None
        return to_epoch(parsed)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise UsageError(
        f"got time {value!r} of type {kind.__name__}, expected datetime, epoch seconds or "
        "an ISO 8601 string"
    )


def cosign_subject(tags: tuple[str, ...]) -> str | None:
    """The subject digest of a cosign tag-schema artifact (`sha256-<hex>.sig`), else None.

    A manifest counts as such an artifact only when every tag it carries follows the
    schema; one ordinary tag makes it an image in its own right.
    """
    subject: str | None = None
    for tag in tags:
        if not tag.startswith("sha"):
            return None
        m = _COSIGN_TAG.fullmatch(tag)
        if m is None:
            return None
        if subject is None:
            subject = f"{m.group(1)}:{m.group(2)}"
    return subject


class ImageRecord(NamedTuple):
    """One manifest in one repository, as retention sees it.

    Times are epoch seconds (UTC). `pushed` is when the registry received the manifest (or,
    where the registry keeps no push time, when the ledger first saw it pushed); `created`
    is the image config's `created` time, a claim of the image's builder that ages an image
    only when the policy says `ageFrom: created`.
    `children` lists the manifests an index refers to; `subject` is the image a referrer
    (signature, attestation, SBOM) belongs to. `pulls` is a pull count where the registry
    or the ledger keeps one.
    """

    digest: str
    tags: tuple[str, ...] = ()
    pushed: float | None = None
    last_pulled: float | None = None
    size: int = 0
    media_type: str = ""
    children: tuple[str, ...] = ()
    subject: str | None = None
    created: float | None = None
    pulls: int | None = None

    @classmethod
    def of(
        cls,
        digest: str,
        *,
        tags: Iterable[str] = (),
        pushed: datetime | float | str | None = None,
        last_pulled: datetime | float | str | None = None,
        size: int = 0,
        media_type: str = "",
        children: Iterable[str] = (),
        subject: str | None = None,
        created: datetime | float | str | None = None,
        pulls: int | None = None,
    ) -> ImageRecord:
        """Build a record from friendlier types (datetimes, lists); keyword-only."""
        return cls(
            digest,
            tuple(tags),
            to_epoch(pushed),
            to_epoch(last_pulled),
            int(size),
            media_type,
            tuple(children),
            subject,
            to_epoch(created),
            pulls,
        )

    @property
    def time(self) -> float | None:
        """The default age anchor (`ageFrom: pushed`): the push time, else unknown. The
        config's `created` is never a fallback (see `_view.record_time`)."""
        return self.pushed


def from_ecr_image(
    detail: Mapping[str, Any],
    *,
    children: tuple[str, ...] = (),
    subject: str | None = None,
) -> ImageRecord:
    """One entry of ECR `DescribeImages` `imageDetails` → `ImageRecord`.

    ECR does not list an index's children or a referrer's subject; the caller passes them
    when it knows them (cosign tag-schema subjects are recognised from the tags anyway).
    """
    try:
        digest = detail["imageDigest"]
    except KeyError:
        raise RegistryError(
            f"got an ECR image detail without imageDigest (keys: {', '.join(sorted(detail))}), "
            "expected DescribeImages imageDetails entries"
        ) from None
    tags = detail.get("imageTags")
    media = detail.get("imageManifestMediaType") or detail.get("artifactMediaType") or ""
    return ImageRecord(
        digest,
        tuple(tags) if tags else (),
        to_epoch(detail.get("imagePushedAt")),
        to_epoch(detail.get("lastRecordedPullTime")),
        int(detail.get("imageSizeInBytes") or 0),
        media,
        children,
        subject,
        None,
        None,
    )
