"""Descriptors and manifests: plain values parsed from registry JSON, no I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import DigestMismatch, LimitExceeded, RegistryError, UsageError
from ..reference import validate_digest
from ._media import INDEX_TYPES, OCI_INDEX, OCI_MANIFEST

_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    """`algorithm:hex` of `data`."""
    try:
        hasher = _HASHES[algorithm]
    except KeyError:
        raise UsageError(
            f"unsupported digest algorithm: got {algorithm!r}, expected one of {', '.join(_HASHES)}"
        ) from None
    return f"{algorithm}:{hasher(data).hexdigest()}"


def verify_digest(data: bytes, expected: str, *, what: str) -> str:
    """Return `expected` if `data` hashes to it, else raise DigestMismatch (fail closed)."""
    validate_digest(expected)
    algorithm = expected.split(":", 1)[0]
    got = compute_digest(data, algorithm)
    if got != expected:
        raise DigestMismatch(expected=expected, got=got, what=what)
    return expected


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor: what a manifest or index points at."""

    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict, hash=False)
    platform: dict[str, Any] | None = field(default=None, hash=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "descriptor") -> Descriptor:
        """Parse a descriptor object; raise RegistryError naming `where` if it is malformed."""
        if not isinstance(data, Mapping):
            raise RegistryError(f"{where}: got {type(data).__name__}, expected a JSON object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise RegistryError(f"{where}: mediaType and digest must be strings, got {data!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RegistryError(f"{where}: size must be a non-negative integer, got {size!r}")
        artifact_type = data.get("artifactType")
        annotations = data.get("annotations") or {}
        platform = data.get("platform")
        if not isinstance(annotations, Mapping):
            raise RegistryError(f"{where}: annotations must be an object, got {annotations!r}")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            artifact_type=artifact_type if isinstance(artifact_type, str) else None,
            annotations={str(k): str(v) for k, v in annotations.items()},
            platform=dict(platform) if isinstance(platform, Mapping) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The descriptor as OCI JSON (optional fields only when set)."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest or index exactly as stored: `raw` bytes (what the digest covers) + parsed JSON."""

    digest: str
    media_type: str
    raw: bytes = field(repr=False)
    data: dict[str, Any] = field(repr=False, hash=False)

    @classmethod
    def parse(
        cls, raw: bytes, *, media_type: str | None = None, digest: str | None = None
    ) -> Manifest:
        """Parse `raw`; verify it against `digest` when given, else compute its sha256."""
        if digest is None:
            digest = compute_digest(raw)
        else:
            verify_digest(raw, digest, what="manifest")
        try:
            data = json.loads(raw)
        except RecursionError:
            raise LimitExceeded(
                f"manifest {digest}: JSON nested too deep to read; refused"
            ) from None
        except ValueError as exc:
            raise RegistryError(f"manifest {digest} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RegistryError(
                f"manifest {digest}: got JSON {type(data).__name__}, expected an object"
            )
        declared = data.get("mediaType")
        if isinstance(declared, str) and declared:
            media_type = declared  # the signed content wins over a transport header
        elif not media_type or media_type.split(";", 1)[0].strip() in ("application/json", ""):
            media_type = OCI_INDEX if "manifests" in data else OCI_MANIFEST
        else:
            media_type = media_type.split(";", 1)[0].strip()
        return cls(digest=digest, media_type=media_type, raw=raw, data=data)

    # -- views ----------------------------------------------------------------------------

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or (
            "manifests" in self.data and "layers" not in self.data
        )

    @property
    def is_docker(self) -> bool:
        return self.media_type.startswith("application/vnd.docker.")

    def _descriptors(self, key: str) -> list[Descriptor]:
        items = self.data.get(key) or []
        if not isinstance(items, list):
            raise RegistryError(f"manifest {self.digest}: {key} must be a list, got {items!r}")
        return [
            Descriptor.from_dict(item, where=f"manifest {self.digest} {key}[{i}]")
            for i, item in enumerate(items)
        ]

    @property
    def layers(self) -> list[Descriptor]:
        return self._descriptors("layers")

    @property
    def manifests(self) -> list[Descriptor]:
        return self._descriptors("manifests")

    @property
    def config(self) -> Descriptor | None:
        config = self.data.get("config")
        if config is None:
            return None
        return Descriptor.from_dict(config, where=f"manifest {self.digest} config")

    @property
    def subject(self) -> Descriptor | None:
        subject = self.data.get("subject")
        if subject is None:
            return None
        return Descriptor.from_dict(subject, where=f"manifest {self.digest} subject")

    @property
    def annotations(self) -> dict[str, str]:
        annotations = self.data.get("annotations") or {}
        if not isinstance(annotations, dict):
            return {}
        return {str(k): str(v) for k, v in annotations.items()}

    @property
    def artifact_type(self) -> str | None:
        """`artifactType`, else the config media type (as the referrers API reports it)."""
        declared = self.data.get("artifactType")
        if isinstance(declared, str) and declared:
            return declared
        if self.is_index:
            return None
        config = self.data.get("config")
        if isinstance(config, dict) and isinstance(config.get("mediaType"), str):
            return str(config["mediaType"])
        return None

    def descriptor(self, *, platform: dict[str, Any] | None = None) -> Descriptor:
        """A descriptor pointing at this manifest (as an index or a `subject` would)."""
        return Descriptor(
            media_type=self.media_type,
            digest=self.digest,
            size=len(self.raw),
            artifact_type=self.data.get("artifactType")
            if isinstance(self.data.get("artifactType"), str)
            else None,
            platform=platform,
        )


def referrers_tag(digest: str) -> str:
    """The OCI 1.1 referrers tag schema: `sha256:abc…` → `sha256-abc…` (truncated per spec)."""
    validate_digest(digest)
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm[:32]}-{hexpart[:64]}"


def index_of(descriptors: list[Descriptor], *, annotations: dict[str, str] | None = None) -> bytes:
    """Serialise an OCI image index over `descriptors` (canonical, compact JSON)."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [d.to_dict() for d in descriptors],
    }
    if annotations:
        doc["annotations"] = annotations
    return json.dumps(doc, separators=(",", ":"), sort_keys=False).encode()


__all__ = [
    "Descriptor",
    "Manifest",
    "compute_digest",
    "index_of",
    "referrers_tag",
    "verify_digest",
]
