"""`regwarden attach`: push a Trivy or Grype JSON report as an OCI referrer of the image
(the `trivy-referrer` / `grype-referrer` scan sources), optionally signed."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..reference import ImageRef
from ._render import print_json

if TYPE_CHECKING:
    from ..oci import RegistryClient
    from ..signatures.keys import PrivateKey


def run_attach(
    image: str,
    *,
    kind_name: str,
    report_path: str,
    key: str | None,
    sign: bool,
    fmt: str,
    output: str,
    insecure: bool,
) -> None:
    from ..oci import Descriptor
    from ..scanning import ScanFormatError
    from ..scanning.referrer_reports import attach_report, check_report, report_kind
    from ._signing import open_target

    kind = report_kind(kind_name)
    if sign and not key:
        raise UsageError("--sign needs --key (the private key that signs the report referrer)")
    if key and not sign:
        raise UsageError("--key is only used with --sign")
    try:
        data = Path(report_path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read report {report_path!r}: {exc.strerror}") from None
    private = _private_key(key) if sign and key else None  # a wrong password fails before any push
    created = datetime.now(UTC)
    with open_target(image, insecure=insecure, writable=True) as target:
        ref, client = target.image, target.source
        assert ref.digest is not None

        def config_digest() -> str | None:
            own = client.get_manifest(ref.repository, ref.digest)
            config = None if own.is_index else own.config
            return config.digest if config is not None else None

        # The gate's own parser judges the file, so nothing is pushed that it would refuse.
        try:
            report = check_report(
                kind, data, image_digest=ref.digest, config_digest=config_digest, created=created
            )
        except ScanFormatError as exc:
            raise UsageError(
                f"report {report_path!r} is not a {kind.label} for {ref.name}@{ref.digest}: "
                f"{exc.message}; nothing was pushed",
                hint=f"`{kind.name}` JSON: "
                + (
                    "trivy image --format json --output report.json IMAGE"
                    if kind.name == "trivy"
                    else "grype IMAGE -o json --file report.json"
                ),
            ) from None
        subject = Descriptor(media_type=target.media_type, digest=ref.digest, size=target.size)
        digest = attach_report(client, ref.repository, kind, subject, data, created=created)
        signature: str | None = None
        if private is not None:
            signature = _sign_referrer(client, ref, digest, private, fmt)
    counts = {str(s): n for s, n in report.counts().items() if n}
    if output == "json":
        print_json(
            {
                "image": str(ref),
                "type": kind.name,
                "artifactType": kind.artifact_type,
                "referrer": digest,
                "findings": len(report.findings),
                "counts": counts,
                "signed": signature is not None,
                "signature": signature,
                "keyId": private.public_key.key_id if private is not None else None,
            }
        )
    else:
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no findings"
        signed = f", signed with key {private.public_key.key_id[:16]}" if private else ", unsigned"
        print(f"attached {kind.label} ({summary}) to {ref} → {ref.name}@{digest}{signed}")
        print(digest)


def _private_key(path: str) -> PrivateKey:
    from ..signatures.keys import load_private_key

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read key file {path!r}: {exc.strerror}") from None
    return load_private_key(data, env=os.environ)


def _sign_referrer(
    client: RegistryClient, ref: ImageRef, digest: str, private: PrivateKey, fmt: str
) -> str:
    """Sign the report referrer as `regwarden sign` signs an image: a `.sig` tag or a
    bundle referrer of the referrer. Returns the signature manifest's digest."""
    from ..signatures import existing_attachment, publish, sign_bundle, sign_legacy, signature_tag

    manifest = client.get_manifest(ref.repository, digest)
    if fmt == "legacy":
        tag = signature_tag(digest, "sig")
        artifact = sign_legacy(
            image_digest=digest,
            docker_reference=ref.name,
            key=private,
            existing_manifest=existing_attachment(client, ref.repository, tag),
        )
    else:
        artifact = sign_bundle(
            subject={"mediaType": manifest.media_type, "digest": digest, "size": len(manifest.raw)},
            key=private,
            created=datetime.now(UTC),
        )
    return publish(client, ref.repository, artifact)
