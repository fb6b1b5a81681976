"""`regwarden attach` against the real local registry: the report is pushed as an OCI
referrer of the image's digest (distribution 2.8 lacks the referrers API, so the
`sha256-<hex>` tag lists it), signed on request as `regwarden sign` signs; a file that is
not the scanner's JSON, or that names another image, is refused before anything is pushed."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.registries import PushImage

from regwarden.devtools import LocalRegistry, Vuln, trivy_report
from regwarden.errors import NotFound
from regwarden.oci import RegistryClient, referrers_tag
from regwarden.reference import ImageRef
from regwarden.scanning.referrer_reports import (
    CREATED,
    GRYPE_REPORT_TYPE,
    REPORT_LAYER_TYPE,
    TRIVY_REPORT_TYPE,
)
from regwarden.signatures import CosignPolicy, verify_image
from regwarden.signatures.keys import PublicKey, encrypt_private_key, generate_private_key

pytestmark = pytest.mark.integration

EMPTY = "application/vnd.oci.empty.v1+json"
VULNS = [
    Vuln("CVE-2099-8001", "CRITICAL", "openssl", "3.0.1", "3.0.15", 9.8),
    Vuln("CVE-2099-8002", "LOW", "zlib", "1.3"),
]


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PublicKey]:
    private = generate_private_key("ecdsa-p256")
    path = tmp_path_factory.mktemp("attach-key") / "cosign.key"
    path.write_bytes(encrypt_private_key(private, "pw", scrypt_n=32768))
    return path, private.public_key


def attach(registry: LocalRegistry, ref: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "attach",
        f"{registry.host}/{ref}",
        *args,
        env={"COSIGN_PASSWORD": "pw", "PATH": "/usr/bin:/bin", "COLUMNS": "400"},
    )


def trivy_file(tmp_path: Path, name: str, digest: str | None = None) -> Path:
    doc = trivy_report(name, VULNS, created=datetime(2026, 12, 1, tzinfo=UTC))
    if digest is not None:
        doc["Metadata"]["RepoDigests"] = [f"{name}@{digest}"]
    path = tmp_path / "trivy.json"
    path.write_text(json.dumps(doc))
    return path


def grype_file(tmp_path: Path, digest: str) -> Path:
    doc: dict[str, Any] = {
        "matches": [
            {
                "vulnerability": {"id": "CVE-2099-8003", "severity": "High"},
                "artifact": {"name": "busybox", "version": "1.36"},
            }
        ],
        "source": {"type": "image", "target": {"manifestDigest": digest}},
        "descriptor": {"name": "grype", "version": "0.94.0"},
    }
    path = tmp_path / "grype.json"
    path.write_text(json.dumps(doc))
    return path


def nothing_attached(client: RegistryClient, repo: str, digest: str) -> None:
    assert client.referrers(repo, digest) == []
    assert client.list_tags(repo) == ["1.0.0"]


def test_a_signed_trivy_report_is_attached_to_the_digest_the_tag_names(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    key: tuple[Path, PublicKey],
    tmp_path: Path,
) -> None:
    digest = push(repo, "1.0.0", seed=951).digest
    report = trivy_file(tmp_path, f"{registry.host}/{repo}", digest)
    before = datetime.now(UTC).replace(microsecond=0)
    proc = attach(
        registry, f"{repo}:1.0.0", "--type", "trivy", "--report", str(report), "--sign",
        "--key", str(key[0]), "-o", "json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["type"] == "trivy" and out["findings"] == 2 and out["signed"] is True
    assert out["counts"] == {"critical": 1, "low": 1}
    referrer = out["referrer"]

    listed = client.referrers(repo, digest)
    assert [(d.digest, d.artifact_type) for d in listed] == [(referrer, TRIVY_REPORT_TYPE)]
    index = client.get_manifest(repo, referrers_tag(digest))  # the tag-schema fallback
    assert [d.digest for d in index.manifests] == [referrer]
    manifest = client.get_manifest(repo, referrer)
    assert manifest.artifact_type == TRIVY_REPORT_TYPE
    assert manifest.subject is not None and manifest.subject.digest == digest
    assert manifest.config is not None and manifest.config.media_type == EMPTY
    (layer,) = manifest.layers
    assert layer.media_type == REPORT_LAYER_TYPE
    assert client.get_blob(repo, layer.digest) == report.read_bytes()
    created = datetime.fromisoformat(manifest.annotations[CREATED].replace("Z", "+00:00"))
    assert before <= created <= datetime.now(UTC) + timedelta(seconds=1)
    # signed as `regwarden sign` signs: a .sig for the referrer, valid under the key
    verified = verify_image(
        client,
        ImageRef(registry=registry.host, repository=repo, digest=referrer),
        cosign=CosignPolicy(keys=(key[1],)),
        notation=None,
        now=datetime.now(UTC),
    )
    assert verified.met, verified.reason


def test_an_unsigned_grype_report_and_a_bundle_signature(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    key: tuple[Path, PublicKey],
    tmp_path: Path,
) -> None:
    digest = push(repo, "1.0.0", seed=952).digest
    report = grype_file(tmp_path, digest)
    plain = attach(registry, f"{repo}@{digest}", "--type", "grype", "--report", str(report))
    assert plain.returncode == 0, plain.stderr
    first = plain.stdout.strip().splitlines()[-1]  # the digest, on a line of its own
    assert "unsigned" in plain.stdout and first.startswith("sha256:")
    assert [d.artifact_type for d in client.referrers(repo, digest)] == [GRYPE_REPORT_TYPE]

    signed = attach(
        registry, f"{repo}:1.0.0", "--type", "grype", "--report", str(report), "--sign",
        "--key", str(key[0]), "--format", "bundle", "-o", "json",
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    referrer = json.loads(signed.stdout)["referrer"]
    verified = verify_image(
        client,
        ImageRef(registry=registry.host, repository=repo, digest=referrer),
        cosign=CosignPolicy(keys=(key[1],)),
        notation=None,
        now=datetime.now(UTC),
    )
    assert verified.met and {r.format for r in verified.results} == {"cosign-bundle"}


@pytest.mark.parametrize(
    ("kind", "doc", "said"),
    [
        ("trivy", {"matches": []}, "SchemaVersion"),
        ("grype", {"SchemaVersion": 2, "Results": []}, "matches"),
        ("trivy", "not json", "Trivy report"),
    ],
    ids=["grype-as-trivy", "trivy-as-grype", "not-json"],
)
def test_a_file_that_is_not_the_scanners_json_is_refused_and_nothing_pushed(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    tmp_path: Path,
    kind: str,
    doc: object,
    said: str,
) -> None:
    digest = push(repo, "1.0.0", seed=953).digest
    path = tmp_path / "report.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    proc = attach(registry, f"{repo}:1.0.0", "--type", kind, "--report", str(path))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    message = " ".join(proc.stderr.split())
    assert said in message and "nothing was pushed" in message, message
    assert "Traceback" not in proc.stderr
    nothing_attached(client, repo, digest)


def test_a_report_for_another_image_is_refused(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    tmp_path: Path,
) -> None:
    digest = push(repo, "1.0.0", seed=954).digest
    other = "sha256:" + "cd" * 32
    for report, kind in (
        (trivy_file(tmp_path, f"{registry.host}/{repo}", other), "trivy"),
        (grype_file(tmp_path, other), "grype"),
    ):
        proc = attach(registry, f"{repo}:1.0.0", "--type", kind, "--report", str(report))
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        message = " ".join(proc.stderr.split())
        assert f"is about another image: it names {other}, not {digest}" in message, message
    # an image ID (config digest) that is not this image's config is another image too
    doc = json.loads(trivy_file(tmp_path, "app").read_text())
    doc["Metadata"]["ImageID"] = other
    (tmp_path / "id.json").write_text(json.dumps(doc))
    proc = attach(
        registry, f"{repo}:1.0.0", "--type", "trivy", "--report", str(tmp_path / "id.json")
    )
    assert proc.returncode == 2 and "its image ID" in " ".join(proc.stderr.split())
    nothing_attached(client, repo, digest)


def test_sign_needs_a_key_and_a_missing_image_is_not_found(
    registry: LocalRegistry, client: RegistryClient, repo: str, push: PushImage, tmp_path: Path
) -> None:
    digest = push(repo, "1.0.0", seed=955).digest
    report = trivy_file(tmp_path, "app", digest)
    proc = attach(registry, f"{repo}:1.0.0", "--type", "trivy", "--report", str(report), "--sign")
    assert proc.returncode == 2 and "--sign needs --key" in proc.stderr
    nothing_attached(client, repo, digest)
    gone = attach(registry, f"{repo}:9.9.9", "--type", "trivy", "--report", str(report))
    assert gone.returncode != 0 and "does not exist" in gone.stderr
    with pytest.raises(NotFound):
        client.get_manifest(repo, referrers_tag(digest))
