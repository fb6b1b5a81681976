"""Build small, valid, reproducible OCI images in memory or as OCI image layouts on disk."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..oci import (
    ANNOTATION_CREATED,
    ANNOTATION_REF_NAME,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
)

PlatformSpec = str | Mapping[str, str]
DEFAULT_PLATFORMS: tuple[str, ...] = ("linux/amd64", "linux/arm64")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def parse_platform(spec: PlatformSpec) -> dict[str, str]:
    """`"linux/arm64/v8"` or `{"os": …, "architecture": …}` → an OCI platform object."""
    if isinstance(spec, Mapping):
        if "os" not in spec or "architecture" not in spec:
            raise UsageError(f"platform: got {dict(spec)!r}, expected keys os and architecture")
        return {str(k): str(v) for k, v in spec.items()}
    parts = spec.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"platform: got {spec!r}, expected os/architecture[/variant]")
    out = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def _rfc3339(when: datetime) -> str:
    if when.tzinfo is None:
        raise UsageError(f"created: got naive datetime {when.isoformat()}, expected a timezone")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class ImageBlobs:
    """One image, ready to push: manifest bytes, config bytes and layer blobs."""

    manifest: bytes = field(repr=False)
    manifest_digest: str
    media_type: str
    config: bytes = field(repr=False)
    config_digest: str
    layers: tuple[bytes, ...] = field(repr=False)
    layer_digests: tuple[str, ...]
    platform: dict[str, str] | None = field(default=None, hash=False)

    @property
    def digest(self) -> str:
        return self.manifest_digest

    @property
    def blobs(self) -> dict[str, bytes]:
        """Config and layers by digest (what must be in the repository before the manifest)."""
        out = {self.config_digest: self.config}
        out.update(zip(self.layer_digests, self.layers, strict=True))
        return out

    @property
    def manifests(self) -> dict[str, tuple[bytes, str]]:
        return {self.manifest_digest: (self.manifest, self.media_type)}

    def descriptor(self) -> Descriptor:
        return Descriptor(
            media_type=self.media_type,
            digest=self.manifest_digest,
            size=len(self.manifest),
            platform=dict(self.platform) if self.platform else None,
        )


@dataclass(frozen=True, slots=True)
class IndexBlobs:
    """A multi-platform image: an OCI image index over `children`."""

    index: bytes = field(repr=False)
    digest: str
    children: tuple[ImageBlobs, ...]
    media_type: str = OCI_INDEX

    @property
    def manifest(self) -> bytes:
        return self.index

    @property
    def manifest_digest(self) -> str:
        return self.digest

    @property
    def blobs(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for child in self.children:
            out.update(child.blobs)
        return out

    @property
    def manifests(self) -> dict[str, tuple[bytes, str]]:
        """Child manifests by digest (pushed before the index itself)."""
        return {c.manifest_digest: (c.manifest, c.media_type) for c in self.children}

    def descriptor(self) -> Descriptor:
        return Descriptor(media_type=self.media_type, digest=self.digest, size=len(self.index))


Content = ImageBlobs | IndexBlobs


def _layer(seed: int, number: int, size: int, compress: bool, mtime: int) -> tuple[bytes, str]:
    """A tar with one file of seeded random bytes; returns (blob, diff_id)."""
    rng = random.Random(f"regwarden-layer:{seed}:{number}")  # noqa: S311  (test data)
    payload = rng.randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"data/layer-{number}.bin")
        info.size = len(payload)
        info.mtime = mtime
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = buf.getvalue()
    diff_id = _digest(tar_bytes)
    if compress:
        return gzip.compress(tar_bytes, compresslevel=6, mtime=0), diff_id
    return tar_bytes, diff_id


def make_image(
    *,
    layers: int = 1,
    layer_size: int = 1024,
    labels: Mapping[str, str] | None = None,
    created: datetime | None = None,
    platform: PlatformSpec | None = "linux/amd64",
    seed: int = 0,
    compress: bool = True,
    annotations: Mapping[str, str] | None = None,
) -> ImageBlobs:
    """A reproducible image in memory: same arguments, same digests.

    `seed` picks the layer contents; `annotations` land on the manifest (a cheap way to
    make many distinct manifests over the same blobs).
    """
    if layers < 0 or layer_size < 0:
        raise UsageError(f"layers/layer_size: got {layers}/{layer_size}, expected >= 0")
    plat = parse_platform(platform) if platform is not None else None
    mtime = int(created.timestamp()) if created is not None else 0
    blobs: list[bytes] = []
    diff_ids: list[str] = []
    for number in range(layers):
        blob, diff_id = _layer(seed, number, layer_size, compress, mtime)
        blobs.append(blob)
        diff_ids.append(diff_id)
    config_doc: dict[str, Any] = {}
    if created is not None:
        config_doc["created"] = _rfc3339(created)
    config_doc["architecture"] = (plat or {}).get("architecture", "amd64")
    config_doc["os"] = (plat or {}).get("os", "linux")
    if plat and "variant" in plat:
        config_doc["variant"] = plat["variant"]
    config_doc["config"] = {"Labels": dict(labels)} if labels else {}
    config_doc["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config_doc["history"] = [
        {"created_by": f"regwarden devtools layer {n} (seed {seed})"} for n in range(layers)
    ]
    config = _json(config_doc)
    layer_type = OCI_LAYER_GZIP if compress else OCI_LAYER
    layer_digests = tuple(_digest(b) for b in blobs)
    manifest_doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
        "layers": [
            {"mediaType": layer_type, "digest": d, "size": len(b)}
            for d, b in zip(layer_digests, blobs, strict=True)
        ],
    }
    notes = dict(annotations or {})
    if created is not None:
        notes.setdefault(ANNOTATION_CREATED, _rfc3339(created))
    if notes:
        manifest_doc["annotations"] = notes
    manifest = _json(manifest_doc)
    return ImageBlobs(
        manifest=manifest,
        manifest_digest=_digest(manifest),
        media_type=OCI_MANIFEST,
        config=config,
        config_digest=_digest(config),
        layers=tuple(blobs),
        layer_digests=layer_digests,
        platform=plat,
    )


def make_index(
    children: Sequence[ImageBlobs], *, annotations: Mapping[str, str] | None = None
) -> IndexBlobs:
    """An OCI image index over `children` (each keeps its platform)."""
    if not children:
        raise UsageError("make_index: got no children, expected at least one image")
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [c.descriptor().to_dict() for c in children],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    raw = _json(doc)
    return IndexBlobs(index=raw, digest=_digest(raw), children=tuple(children))


def make_multiarch(
    *, platforms: Sequence[PlatformSpec] = DEFAULT_PLATFORMS, seed: int = 0, **kwargs: Any
) -> IndexBlobs:
    """An index with one child per platform (distinct layers per child); `kwargs` as make_image."""
    children = [
        make_image(platform=p, seed=seed * 1000 + n, **kwargs) for n, p in enumerate(platforms)
    ]
    return make_index(children)


# -- OCI image layout on disk ------------------------------------------------------------------


def _blob_path(root: Path, digest: str) -> Path:
    algorithm, _, hexpart = digest.partition(":")
    return root / "blobs" / algorithm / hexpart


def write_layout(directory: Path | str, content: Content, *, tag: str = "latest") -> Path:
    """Add `content` to the OCI image layout at `directory` under `tag` (replacing that tag)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    blobs = dict(content.blobs)
    for digest, (raw, _media) in content.manifests.items():
        blobs[digest] = raw
    blobs[content.manifest_digest] = content.manifest
    for digest, data in blobs.items():
        path = _blob_path(root, digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    index_path = root / "index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text())
    else:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    entries = [
        m
        for m in index.get("manifests", [])
        if (m.get("annotations") or {}).get(ANNOTATION_REF_NAME) != tag
    ]
    entry = content.descriptor().to_dict()
    entry.pop("platform", None)
    entry["annotations"] = {ANNOTATION_REF_NAME: tag}
    entries.append(entry)
    index["manifests"] = entries
    index_path.write_text(json.dumps(index, indent=2))
    return root


def build_image(
    directory: Path | str,
    *,
    tag: str = "latest",
    layers: int = 1,
    layer_size: int = 1024,
    labels: Mapping[str, str] | None = None,
    created: datetime | None = None,
    platform: PlatformSpec | None = "linux/amd64",
    seed: int = 0,
    compress: bool = True,
    annotations: Mapping[str, str] | None = None,
) -> ImageBlobs:
    """Write a single-platform image to an OCI layout; return its blobs and digests."""
    image = make_image(
        layers=layers,
        layer_size=layer_size,
        labels=labels,
        created=created,
        platform=platform,
        seed=seed,
        compress=compress,
        annotations=annotations,
    )
    write_layout(directory, image, tag=tag)
    return image


def build_index(
    directory: Path | str,
    *,
    tag: str = "latest",
    platforms: Sequence[PlatformSpec] = DEFAULT_PLATFORMS,
    layers: int = 1,
    layer_size: int = 1024,
    labels: Mapping[str, str] | None = None,
    created: datetime | None = None,
    seed: int = 0,
    compress: bool = True,
) -> IndexBlobs:
    """Write a multi-platform image (index + one child per platform) to an OCI layout."""
    index = make_multiarch(
        platforms=platforms,
        seed=seed,
        layers=layers,
        layer_size=layer_size,
        labels=labels,
        created=created,
        compress=compress,
    )
    write_layout(directory, index, tag=tag)
    return index


@dataclass(frozen=True, slots=True)
class LayoutEntry:
    """One tagged entry of an OCI layout and where to read its content."""

    root: Path
    descriptor: Descriptor
    tag: str | None

    def read(self, digest: str) -> bytes:
        """A blob's bytes, verified against its digest."""
        path = _blob_path(self.root, digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"OCI layout {self.root}: blob {digest} is missing") from None
        if _digest(data) != digest:
            raise UsageError(f"OCI layout {self.root}: blob {digest} does not match its digest")
        return data


def open_layout(directory: Path | str, tag: str | None = None) -> LayoutEntry:
    """Find `tag` (or the only entry when `tag` is None) in an OCI layout's index.json."""
    root = Path(directory)
    try:
        index = json.loads((root / "index.json").read_text())
    except FileNotFoundError:
        raise UsageError(f"{root} is not an OCI image layout (no index.json)") from None
    except ValueError as exc:
        raise UsageError(f"{root}/index.json is not valid JSON: {exc}") from None
    entries = index.get("manifests") or []
    tags = [(m.get("annotations") or {}).get(ANNOTATION_REF_NAME) for m in entries]
    if tag is None:
        if len(entries) != 1:
            raise UsageError(
                f"OCI layout {root}: got {len(entries)} entries and no tag, expected one of "
                f"{', '.join(str(t) for t in tags)}"
            )
        chosen = entries[0]
    else:
        matches = [m for m, t in zip(entries, tags, strict=True) if t == tag]
        if not matches:
            valid = ", ".join(str(t) for t in tags if t) or "(none)"
            raise UsageError(f"OCI layout {root}: no tag {tag!r}; valid: {valid}")
        chosen = matches[-1]
    descriptor = Descriptor.from_dict(chosen, where=f"{root}/index.json")
    return LayoutEntry(root=root, descriptor=descriptor, tag=tag)


def walk_layout(entry: LayoutEntry) -> Iterator[tuple[str, bytes, str | None]]:
    """(digest, bytes, manifest media type or None for blobs), children before parents."""
    yield from _walk(entry, entry.descriptor)


def _walk(entry: LayoutEntry, desc: Descriptor) -> Iterator[tuple[str, bytes, str | None]]:
    raw = entry.read(desc.digest)
    doc = json.loads(raw)
    media_type = doc.get("mediaType") or desc.media_type
    if "manifests" in doc:
        for child in doc["manifests"]:
            yield from _walk(entry, Descriptor.from_dict(child))
    else:
        config = doc.get("config")
        if config:
            yield config["digest"], entry.read(config["digest"]), None
        for layer in doc.get("layers") or []:
            yield layer["digest"], entry.read(layer["digest"]), None
    yield desc.digest, raw, media_type
