"""Discovery: every signature attached to an image digest, from a registry or an OCI layout.

Looked up, in the signature repository (the image's own unless the policy names another):
- cosign legacy `sha256-<hex>.sig` and `.att` tags (several layers = several signatures);
- OCI 1.1 referrers (the referrers API, or the `sha256-<hex>` tag schema where the
  registry has none): Sigstore bundles and Notation envelopes.
Each referrer manifest is fetched and its own type checked: index entries can lie.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, cast

from ..errors import NotFound, RegistryError, UsageError
from ..model import SignatureResult
from ..oci import Descriptor, Manifest, compute_digest, gather
from ._model import BUNDLE_MEDIA_TYPES, SignatureCandidate, SignatureLayer
from ._sign import signature_tag

NOTATION_ARTIFACT = "application/vnd.cncf.notary.signature"
NOTATION_ENVELOPES = ("application/jose+json", "application/cose")
_REF_NAME = "org.opencontainers.image.ref.name"
NotationFormat = Literal["notation-jws", "notation-cose"]


class ContentSource(Protocol):
    """What discovery reads; `RegistryClient` and `LayoutSource` both provide it."""

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None: ...

    def get_manifest(self, repo: str, reference: str) -> Manifest: ...

    def get_blob(self, repo: str, digest: str) -> bytes: ...

    def referrers(self, repo: str, digest: str) -> list[Descriptor]: ...


@dataclass(frozen=True, slots=True)
class NotationEnvelope:
    manifest_digest: str
    media_type: str
    blob: bytes


@dataclass(frozen=True, slots=True)
class Discovered:
    subject: Descriptor
    """The image manifest itself (Notation signs its media type, digest and size)."""
    cosign: tuple[SignatureCandidate, ...]
    notation: tuple[NotationEnvelope, ...]
    broken: tuple[SignatureResult, ...]
    """Signatures that could not even be read (missing blob, lying index entry, a Notation
    manifest whose layer is not an envelope): invalid results, never silently dropped."""


def _layers(manifest: Manifest) -> list[SignatureLayer]:
    out = []
    for layer in manifest.data.get("layers") or []:
        if isinstance(layer, dict) and isinstance(layer.get("digest"), str):
            out.append(
                SignatureLayer(
                    media_type=str(layer.get("mediaType", "")),
                    digest=layer["digest"],
                    size=layer.get("size") if isinstance(layer.get("size"), int) else None,
                    annotations={
                        str(k): str(v) for k, v in (layer.get("annotations") or {}).items()
                    },
                )
            )
    return out


def notation_format(media_type: str) -> NotationFormat:
    """The result label for a Notation envelope. Anything but COSE is labelled JWS,
    Notation's default envelope: a layer that is neither still needs a notation label
    (its reason says what it really is)."""
    return "notation-cose" if media_type == NOTATION_ENVELOPES[1] else "notation-jws"


def _notation_layer_problem(layers: list[SignatureLayer]) -> str | None:
    """Why a Notation signature manifest holds no readable envelope, or None.

    The Notary Project's signature manifest has exactly one layer, the JWS or COSE
    envelope (notation-go refuses any other shape, and so does this). The manifest's own
    digest is reported beside the reason, so the reason does not repeat it."""
    expected = " or ".join(NOTATION_ENVELOPES)
    if not layers:
        return f"Notation signature with no layer (expected one envelope: {expected})"
    if len(layers) > 1:
        return f"Notation signature with {len(layers)} layers (expected one envelope: {expected})"
    if layers[0].media_type not in NOTATION_ENVELOPES:
        got = layers[0].media_type or "without a media type"
        return (
            f"not a Notation signature envelope: layer {layers[0].digest} is {got} "
            f"(expected {expected})"
        )
    return None


def _own_type(manifest: Manifest) -> str:
    config = manifest.data.get("config") or {}
    return str(manifest.data.get("artifactType") or config.get("mediaType") or "")


SubjectSource = Callable[[], Descriptor | None]
"""Yields the image's own descriptor, or None when the image does not exist."""


def discover(
    source: ContentSource,
    repo: str,
    digest: str,
    *,
    signature_repo: str | None = None,
    subject: SubjectSource | None = None,
) -> Discovered:
    """Everything signature-like attached to `repo@digest`. Raises NotFound for the image.

    The `.sig` and `.att` tags, the referrers and the image itself are looked up together
    (`oci.gather`): they do not depend on each other, and one round trip beats four.
    `subject`, a call that yields the image's descriptor once the caller has read its
    manifest, spares the HEAD request for it."""
    where = signature_repo or repo
    if subject is None:
        subject = functools.partial(source.head_manifest, repo, digest)

    def tagged(suffix: str) -> Callable[[], Manifest | None]:
        def get() -> Manifest | None:
            try:
                return source.get_manifest(where, signature_tag(digest, suffix))
            except NotFound:
                return None

        return get

    subject_, sig, att, referrers = gather(
        [
            subject,
            tagged("sig"),
            tagged("att"),
            lambda: source.referrers(where, digest),
        ]
    )
    own = cast("Descriptor | None", subject_)
    if own is None:
        raise NotFound(f"image {repo}@{digest} does not exist")
    cosign: list[SignatureCandidate] = []
    notation: list[NotationEnvelope] = []
    broken: list[SignatureResult] = []

    def fetch(manifest: Manifest, layer: SignatureLayer, fmt: str) -> bytes | None:
        try:
            return source.get_blob(where, layer.digest)
        except RegistryError as exc:
            if not isinstance(exc, NotFound):
                raise  # infrastructure: let the caller fail closed and retry
            broken.append(
                SignatureResult(
                    format=fmt,
                    digest=layer.digest,
                    verified=False,
                    reason=f"layer blob of {manifest.digest} is missing",
                )
            )
            return None

    for manifest in (cast("Manifest | None", sig), cast("Manifest | None", att)):
        if manifest is None:
            continue
        for layer in _layers(manifest):
            blob = fetch(manifest, layer, "cosign-legacy")
            if blob is not None:
                cosign.append(SignatureCandidate(manifest.digest, layer, blob))

    for entry in cast("list[Descriptor]", referrers):
        try:
            manifest = source.get_manifest(where, entry.digest)
        except NotFound:
            continue
        subject_ref = manifest.data.get("subject") or {}
        if subject_ref.get("digest") != digest:
            broken.append(
                SignatureResult(
                    format="cosign-bundle",
                    digest=entry.digest,
                    verified=False,
                    reason=f"listed as a referrer of {digest} but its subject is "
                    f"{subject_ref.get('digest')!r}",
                )
            )
            continue
        kind = _own_type(manifest)
        if kind in BUNDLE_MEDIA_TYPES:
            for layer in _layers(manifest):
                if layer.media_type in BUNDLE_MEDIA_TYPES:
                    blob = fetch(manifest, layer, "cosign-bundle")
                    if blob is not None:
                        cosign.append(SignatureCandidate(manifest.digest, layer, blob))
        elif kind == NOTATION_ARTIFACT:
            layers = _layers(manifest)
            problem = _notation_layer_problem(layers)
            if problem is not None:
                # A signature that says it is one but carries no envelope is a bad
                # signature, not an absent one: the reader must see why it does not count.
                fmt = notation_format(layers[0].media_type if layers else "")
                broken.append(
                    SignatureResult(
                        format=fmt, digest=manifest.digest, verified=False, reason=problem
                    )
                )
                continue
            layer = layers[0]
            blob = fetch(manifest, layer, notation_format(layer.media_type))
            if blob is not None:
                notation.append(NotationEnvelope(manifest.digest, layer.media_type, blob))
    return Discovered(own, tuple(cosign), tuple(notation), tuple(broken))


class LayoutSource:
    """An OCI image layout on disk, read as if it were one repository of a registry.

    Referrers are the layout's manifests whose `subject` is the digest asked for; tags are
    the `org.opencontainers.image.ref.name` annotations of `index.json`.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        try:
            self._index = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            raise UsageError(f"{self.root} is not an OCI image layout (no index.json)") from None
        except ValueError as exc:
            raise UsageError(f"{self.root}/index.json is not valid JSON: {exc}") from None
        self._entries = [
            Descriptor.from_dict(m, where=f"{self.root}/index.json")
            for m in self._index.get("manifests") or []
        ]

    def _blob(self, digest: str) -> bytes:
        algo, _, hexpart = digest.partition(":")
        path = self.root / "blobs" / algo / hexpart
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"OCI layout {self.root}: blob {digest} is missing") from None
        if compute_digest(data) != digest:
            raise RegistryError(f"OCI layout {self.root}: blob {digest} does not match")
        return data

    def resolve(self, tag: str | None) -> Descriptor:
        """The entry tagged `tag`, or the only image entry when no tag is given."""
        if tag is not None:
            for e in reversed(self._entries):
                if e.annotations.get(_REF_NAME) == tag:
                    return e
            valid = (
                ", ".join(sorted({e.annotations.get(_REF_NAME, "") for e in self._entries} - {""}))
                or "(none)"
            )
            raise UsageError(f"OCI layout {self.root}: no tag {tag!r}; valid: {valid}")
        images = [e for e in self._entries if not self._has_subject(e)]
        if len(images) != 1:
            raise UsageError(
                f"OCI layout {self.root} holds {len(images)} images; name one with oci:DIR:TAG"
            )
        return images[0]

    def _has_subject(self, entry: Descriptor) -> bool:
        try:
            return "subject" in json.loads(self._blob(entry.digest))
        except (NotFound, ValueError):
            return False

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None:
        for e in self._entries:
            if reference in (e.digest, e.annotations.get(_REF_NAME)):
                return e
        try:
            raw = self._blob(reference)
        except (NotFound, RegistryError, ValueError):
            return None
        media = json.loads(raw).get("mediaType", "")
        return Descriptor(media_type=media, digest=reference, size=len(raw))

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        desc = self.head_manifest(repo, reference)
        if desc is None:
            raise NotFound(f"OCI layout {self.root}: no manifest {reference!r}")
        return Manifest.parse(self._blob(desc.digest), media_type=desc.media_type)

    def get_blob(self, repo: str, digest: str) -> bytes:
        return self._blob(digest)

    def referrers(self, repo: str, digest: str) -> list[Descriptor]:
        out = []
        for algo_dir in (self.root / "blobs").iterdir():
            for path in algo_dir.iterdir():
                if path.stat().st_size > 4 << 20:
                    continue
                try:
                    doc = json.loads(path.read_bytes())
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(doc, dict) and (doc.get("subject") or {}).get("digest") == digest:
                    out.append(
                        Descriptor(
                            media_type=str(doc.get("mediaType", "")),
                            digest=f"{algo_dir.name}:{path.name}",
                            size=path.stat().st_size,
                            artifact_type=doc.get("artifactType"),
                        )
                    )
        return sorted(out, key=lambda d: d.digest)
