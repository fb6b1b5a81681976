"""Scan reports attached to the image as OCI referrers: the `trivy-referrer` and
`grype-referrer` scan sources, and what `regwarden attach` pushes.

A report referrer is an OCI image manifest whose `subject` is the image, `artifactType`
one of `REPORT_TYPES`, config the empty descriptor, and one `application/json` layer
holding the scanner's own JSON (what `oras attach --artifact-type T report.json:application/json`
makes), annotated with `org.opencontainers.image.created`.

Anyone who may push to the repository may attach a report, so by default
(`vulnerabilities.referrers.requireSigned`) a report counts only when the referrer itself
carries a valid signature under the repository's signature policy. The newest signed
report of the type counts (by its created annotation, then digest): an unsigned one is
ignored, so pushing one can neither hide nor replace a signed report. With none signed the
reader says why (`NoScanYet`) and the image stays PENDING until `scanTimeout`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from ..jsondoc import Node, load_json
from ..model import ScanReport
from ..reference import ImageRef
from ._errors import ScanFormatError
from ._grype import grype_report
from ._sources import NoScanYet
from ._trivy import trivy_report

if TYPE_CHECKING:
    from ..oci import Descriptor, Manifest, RegistryClient
    from ..policy import Policy
    from ..providers import Registry

__all__ = [
    "CREATED",
    "GRYPE_REPORT_TYPE",
    "REPORT_LAYER_TYPE",
    "REPORT_TYPES",
    "TRIVY_REPORT_TYPE",
    "ReferrerReportSource",
    "ReportKind",
    "attach_report",
    "check_report",
    "report_kind",
    "report_manifest",
]

TRIVY_REPORT_TYPE = "application/vnd.regwarden.report.trivy+json"
GRYPE_REPORT_TYPE = "application/vnd.regwarden.report.grype+json"
REPORT_LAYER_TYPE = "application/json"
CREATED = "org.opencontainers.image.created"
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
_EMPTY = b"{}"
_EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
#: A report is JSON text: bigger than this is not a report we read into memory.
MAX_REPORT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReportKind:
    """One scanner whose report may be attached."""

    name: str
    """`trivy` or `grype` (`regwarden attach --type`)."""
    artifact_type: str
    source: str
    """The scan source name in `vulnerabilities.sources`."""
    label: str
    build: Callable[[Node, str, datetime | None], ScanReport]
    named: Callable[[Node], tuple[set[str], set[str]]]
    """(manifest digests, config digests) the report says it is about."""


def _trivy_build(root: Node, digest: str, created: datetime | None) -> ScanReport:
    report = trivy_report(root, digest=digest, source="trivy-referrer")
    if report.scanned_at is None and created is not None:
        report = report.model_copy(update={"scanned_at": created})
    return report


def _grype_build(root: Node, digest: str, created: datetime | None) -> ScanReport:
    report = grype_report(root, digest=digest, source="grype-referrer")
    if report.scanned_at is None and created is not None:
        report = report.model_copy(update={"scanned_at": created})
    return report


def _named_digest(text: str | None) -> str | None:
    """`name@sha256:…` → the digest; anything else (a tag, a file path) names none."""
    if not text or "@" not in text:
        return None
    digest = text.rpartition("@")[2]
    return digest if digest.startswith("sha256:") else None


def _trivy_named(root: Node) -> tuple[set[str], set[str]]:
    manifests: set[str] = set()
    configs: set[str] = set()
    artifact = _named_digest(root.field("ArtifactName").opt_text())
    if artifact is not None:
        manifests.add(artifact)
    metadata = root.field("Metadata")
    if metadata.present:
        for item in metadata.field("RepoDigests").opt_array():
            found = _named_digest(item.opt_text())
            if found is not None:
                manifests.add(found)
        image_id = metadata.field("ImageID").opt_text()
        if image_id:
            configs.add(image_id)
    return manifests, configs


def _grype_named(root: Node) -> tuple[set[str], set[str]]:
    manifests: set[str] = set()
    configs: set[str] = set()
    source = root.field("source")
    target = source.field("target") if source.present else source
    if target.present and isinstance(target.value, dict):
        digest = target.field("manifestDigest").opt_text()
        if digest:
            manifests.add(digest)
        for item in target.field("repoDigests").opt_array():
            found = _named_digest(item.opt_text())
            if found is not None:
                manifests.add(found)
        image_id = target.field("imageID").opt_text()
        if image_id:
            configs.add(image_id)
        user_input = _named_digest(target.field("userInput").opt_text())
        if user_input is not None:
            manifests.add(user_input)
    return manifests, configs


KINDS: dict[str, ReportKind] = {
    "trivy": ReportKind(
        "trivy", TRIVY_REPORT_TYPE, "trivy-referrer", "Trivy report", _trivy_build, _trivy_named
    ),
    "grype": ReportKind(
        "grype", GRYPE_REPORT_TYPE, "grype-referrer", "Grype report", _grype_build, _grype_named
    ),
}
REPORT_TYPES = frozenset(kind.artifact_type for kind in KINDS.values())


def report_kind(name: str) -> ReportKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown report kind {name!r}; valid: trivy, grype") from None


def check_report(
    kind: ReportKind,
    data: bytes,
    *,
    image_digest: str,
    config_digest: Callable[[], str | None],
    created: datetime | None = None,
) -> ScanReport:
    """Parse `data` as `kind`'s JSON for the image `image_digest`: ScanFormatError when it
    is not that scanner's JSON, or when it names another image (a manifest digest in
    `ArtifactName`/`RepoDigests`/`manifestDigest`, or an image ID that is not the image's
    config digest; `config_digest` is asked only when the report names one)."""
    root = load_json(data, label=kind.label, error=ScanFormatError)
    root.mapping()
    manifests, configs = kind.named(root)
    if manifests and image_digest not in manifests:
        raise ScanFormatError(
            f"{kind.label} is about another image: it names {', '.join(sorted(manifests))}, "
            f"not {image_digest}"
        )
    if configs and not manifests:
        config = config_digest()
        if config is not None and config not in configs:
            raise ScanFormatError(
                f"{kind.label} is about another image: its image ID "
                f"{', '.join(sorted(configs))} is not {image_digest}'s config {config}"
            )
    return kind.build(root, image_digest, created)


def report_manifest(
    kind: ReportKind, subject: Descriptor, report: bytes, *, created: datetime
) -> bytes:
    """The referrer manifest that attaches `report` to `subject` (canonical, compact JSON)."""
    from ..oci import compute_digest

    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": _OCI_MANIFEST,
        "artifactType": kind.artifact_type,
        "config": {"mediaType": _EMPTY_TYPE, "digest": _EMPTY_DIGEST, "size": len(_EMPTY)},
        "layers": [
            {
                "mediaType": REPORT_LAYER_TYPE,
                "digest": compute_digest(report),
                "size": len(report),
            }
        ],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.size,
        },
        "annotations": {CREATED: created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def attach_report(
    client: RegistryClient,
    repo: str,
    kind: ReportKind,
    subject: Descriptor,
    report: bytes,
    *,
    created: datetime,
) -> str:
    """Push `report` as a referrer of `subject` in `repo`; return the referrer's digest.
    The referrers tag schema is kept where the registry lacks the API (`push_referrer`)."""
    for blob in (_EMPTY, report):
        client.push_blob(repo, blob)
    raw = report_manifest(kind, subject, report, created=created)
    return client.push_referrer(repo, raw, _OCI_MANIFEST)


def _created(annotations: Mapping[str, str] | None) -> datetime | None:
    text = (annotations or {}).get(CREATED)
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def newest_first(descriptors: list[Descriptor]) -> list[Descriptor]:
    """Newest by the created annotation, then by digest (a stable order for equal times);
    a referrer without a readable date sorts last."""
    floor = datetime.min.replace(tzinfo=UTC)
    return sorted(
        descriptors,
        key=lambda d: (_created(d.annotations) or floor, d.digest),
        reverse=True,
    )


class ReferrerReportSource:
    """The scan reader of one report kind: `(registry, image) -> ScanReport | None`."""

    def __init__(
        self,
        kind: ReportKind,
        policy: Policy,
        *,
        env: Mapping[str, str],
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.kind = kind
        self.policy = policy
        self.env = env
        self._clock = clock or (lambda: datetime.now(UTC))

    def __call__(self, registry: Registry, image: ImageRef, /) -> ScanReport | None:
        assert image.digest is not None
        client = registry.data_plane()
        found = client.referrers(
            image.repository, image.digest, artifact_type=self.kind.artifact_type
        )
        if not found:
            return None
        effective = self.policy.for_repository(image.repository)
        vulnerabilities = effective.vulnerabilities
        require_signed = vulnerabilities is None or vulnerabilities.referrers.require_signed
        verify = self._verifier(effective) if require_signed else None
        refused: list[str] = []
        for entry in newest_first(found):
            try:
                manifest = client.get_manifest(image.repository, entry.digest)
            except NotFound:
                continue  # deleted since it was listed
            if verify is not None:
                why = verify(client, image.with_digest(entry.digest))
                if why is not None:
                    refused.append(f"{entry.digest[:19]}: {why}")
                    continue
            return self._read(client, image, manifest)
        raise NoScanYet(
            f"a {self.kind.name} report is attached but not signed: "
            + "; ".join(refused)
            + " (vulnerabilities.referrers.requireSigned)"
        )

    def _verifier(self, effective: Any) -> Callable[[RegistryClient, ImageRef], str | None]:
        """Why a referrer's signatures do not meet the repository's signature policy
        (None when they do), with the gate's own verification functions."""
        from ..signatures import (
            cosign_policy,
            notation_trust,
            result_formats,
            signature_repository,
            verify_image,
        )

        base = self.policy.base_dir or Path.cwd()
        cosign = cosign_policy(effective, base_dir=base, env=self.env)
        notation = notation_trust(effective, base_dir=base)
        formats = result_formats(effective)
        where = signature_repository(effective)

        def why(client: RegistryClient, referrer: ImageRef) -> str | None:
            if cosign is None and notation is None:
                return "the repository's policy has no signature keys or identities to verify it"
            report = verify_image(
                client,
                referrer,
                cosign=cosign,
                notation=notation,
                require="all",
                now=self._clock(),
                signature_repo=where,
                formats=formats,
            )
            return None if report.met else report.reason

        return why

    def _read(self, client: RegistryClient, image: ImageRef, manifest: Manifest) -> ScanReport:
        """The report a referrer that counts carries; ScanFormatError when it is not a
        report referrer of this image (it counts, so a broken one is a failed scan)."""
        assert image.digest is not None
        what = f"{self.kind.source} referrer {manifest.digest}"
        subject = manifest.subject
        if subject is None or subject.digest != image.digest:
            raise ScanFormatError(f"{what}: its subject is not {image.digest}")
        if manifest.artifact_type != self.kind.artifact_type:
            raise ScanFormatError(
                f"{what}: artifactType {manifest.artifact_type!r}, "
                f"expected {self.kind.artifact_type!r}"
            )
        layers = manifest.layers
        if len(layers) != 1 or layers[0].media_type != REPORT_LAYER_TYPE:
            raise ScanFormatError(
                f"{what}: expected one layer of media type {REPORT_LAYER_TYPE}, got "
                + (", ".join(layer.media_type for layer in layers) or "none")
            )
        data = client.get_blob(image.repository, layers[0].digest, max_bytes=MAX_REPORT_BYTES)

        def config_digest() -> str | None:
            own = client.get_manifest(image.repository, image.digest or "")
            config = None if own.is_index else own.config
            return config.digest if config is not None else None

        try:
            return check_report(
                self.kind,
                data,
                image_digest=image.digest,
                config_digest=config_digest,
                created=_created(manifest.annotations),
            )
        except ScanFormatError as exc:
            raise ScanFormatError(f"{what}: {exc}") from None
