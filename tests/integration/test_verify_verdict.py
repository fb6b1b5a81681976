"""`regwarden verify IMAGE --verdict --key K [--max-age]` on the real local registry, with
verdict attestations written by the attestation writers regwarden's gate uses (legacy
`.att` and bundle referrers): exit 0 only for a valid, fresh PASSED; 1 with the reason
for none, another key, a statement about another digest, a newer FAILED over an older
PASSED, and a stale PASSED; a gcpkms:// key (Cloud KMS stand-in) signs and verifies."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.fake_gcpkms import FakeCloudKms
from support.registries import PushImage

from regwarden.attest import VERDICT_PREDICATE
from regwarden.attest._signer_gcp import GcpKmsSigner
from regwarden.devtools import LocalRegistry
from regwarden.oci import RegistryClient
from regwarden.signatures import (
    PrivateKey,
    attest_bundle,
    attest_legacy,
    existing_attachment,
    publish,
    signature_tag,
)
from regwarden.signatures.keys import generate_private_key

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def signing() -> PrivateKey:
    return generate_private_key("ecdsa-p256")


@pytest.fixture(scope="module")
def public_pem(signing: PrivateKey, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("verdict-key") / "regwarden.pub"
    path.write_bytes(signing.public_key.pem)
    return str(path)


def predicate(verdict: str, decided: datetime, digest: str) -> dict[str, Any]:
    return {
        "verdict": verdict,
        "decidedAt": decided.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "image": {"registry": "r", "repository": "app", "digest": digest},
        "policy": {"name": "policy.yaml", "digest": "sha256:" + "0" * 64},
        "regwarden": {"version": "test"},
        "checks": [],
        "evidence": {"signatures": [], "scans": []},
    }


def attest_att(
    client: RegistryClient,
    repo: str,
    digest: str,
    key: Any,
    verdict: str,
    decided: datetime,
    *,
    about: str | None = None,
) -> None:
    """A legacy `.att` layer (appended, as cosign does); `about`: the statement's subject
    when it is another digest than the one whose `.att` tag receives it."""
    subject = about or digest
    tag = signature_tag(digest, "att")
    artifact = attest_legacy(
        image_digest=subject,
        repository=f"r/{repo}",
        key=key,
        predicate_type=VERDICT_PREDICATE,
        predicate=predicate(verdict, decided, subject),
        existing_manifest=existing_attachment(client, repo, tag),
    )
    publish(client, repo, dataclasses.replace(artifact, tag=tag))


def verify(
    registry: LocalRegistry, repo: str, key: str, *more: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "verify",
        f"{registry.host}/{repo}:1.0.0",
        "--verdict",
        "--key",
        key,
        *more,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "400", **(env or {})},
    )


def outcome(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in proc.stderr, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_fresh_passed_legacy_attestation_is_accepted(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    signing: PrivateKey,
    public_pem: str,
) -> None:
    image = push(repo, "1.0.0", seed=71)
    attest_att(client, repo, image.manifest_digest, signing, "PASSED", NOW - timedelta(hours=1))

    proc = verify(registry, repo, public_pem, "--max-age", "1d", "-o", "json")

    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    doc = outcome(proc)
    assert doc["ok"] is True and doc["verdict"] == "PASSED"
    assert doc["digest"] == image.manifest_digest
    [seen] = doc["attestations"]
    assert seen["valid"] and seen["format"] == "cosign-legacy"
    table = verify(registry, repo, public_pem)
    assert table.returncode == 0 and "PASSED, decided" in table.stdout


def test_fresh_passed_bundle_attestation_is_accepted(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    signing: PrivateKey,
    public_pem: str,
) -> None:
    image = push(repo, "1.0.0", seed=72)
    descriptor = image.descriptor()
    subject = {
        "mediaType": descriptor.media_type,
        "digest": descriptor.digest,
        "size": descriptor.size,
    }
    decided = NOW - timedelta(minutes=5)
    artifact = attest_bundle(
        subject=subject,
        key=signing,
        predicate_type=VERDICT_PREDICATE,
        predicate=predicate("PASSED", decided, image.manifest_digest),
        created=decided,
    )
    publish(client, repo, artifact)

    proc = verify(registry, repo, public_pem, "--max-age", "1h", "-o", "json")

    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert outcome(proc)["attestations"][0]["format"] == "cosign-bundle"


def test_no_verdict_attestation_is_refused(
    registry: LocalRegistry, repo: str, push: PushImage, public_pem: str
) -> None:
    push(repo, "1.0.0", seed=73)

    proc = verify(registry, repo, public_pem, "-o", "json")

    assert proc.returncode == 1
    assert outcome(proc)["reason"] == "no verdict attestation found on the image"


def test_verdict_signed_by_another_key_or_about_another_digest_is_refused(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    signing: PrivateKey,
    public_pem: str,
) -> None:
    image = push(repo, "1.0.0", seed=74)
    other = push(repo, "other", seed=75)
    digest = image.manifest_digest
    attest_att(client, repo, digest, generate_private_key(), "PASSED", NOW)
    attest_att(client, repo, digest, signing, "PASSED", NOW, about=other.manifest_digest)

    proc = verify(registry, repo, public_pem, "-o", "json")

    assert proc.returncode == 1
    doc = outcome(proc)
    assert doc["reason"].startswith("2 verdict attestation(s) found, none valid with key")
    reasons = sorted(s["reason"] for s in doc["attestations"])
    assert "does not verify with any of the 1 configured key(s)" in reasons[0]
    assert f"statement subjects do not include {digest}" in reasons[1]


def test_newer_failed_outvotes_older_passed_and_stale_passed_is_refused(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    signing: PrivateKey,
    public_pem: str,
) -> None:
    image = push(repo, "1.0.0", seed=76)
    digest = image.manifest_digest
    attest_att(client, repo, digest, signing, "PASSED", NOW - timedelta(days=3))

    stale = verify(registry, repo, public_pem, "--max-age", "2d", "-o", "json")
    unbounded = verify(registry, repo, public_pem, "-o", "json")

    assert stale.returncode == 1
    assert "stale" in outcome(stale)["reason"] and "older than the 2d allowed" in stale.stdout
    assert unbounded.returncode == 0, unbounded.stdout

    attest_att(client, repo, digest, signing, "FAILED", NOW - timedelta(days=1))
    failed = verify(registry, repo, public_pem, "-o", "json")

    assert failed.returncode == 1
    doc = outcome(failed)
    assert doc["verdict"] == "FAILED" and doc["reason"].startswith("the newest verdict is FAILED")
    assert len(doc["attestations"]) == 2


def test_bad_input_is_exit_2(registry: LocalRegistry, repo: str, push: PushImage) -> None:
    push(repo, "1.0.0", seed=77)
    assert verify(registry, repo, "a.pub", "--key", "b.pub").returncode == 2
    proc = verify(registry, repo, "/nonexistent.pub", "--max-age", "soon")
    assert proc.returncode == 2 and "--max-age" in proc.stderr


@pytest.fixture
def cloudkms() -> Iterator[FakeCloudKms]:
    with FakeCloudKms() as fake:
        yield fake


def test_gcpkms_signed_verdict_verifies_with_the_kms_key(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    cloudkms: FakeCloudKms,
    tmp_path: Path,
) -> None:
    key = "projects/p/locations/global/keyRings/regwarden/cryptoKeys/verdicts"
    name = cloudkms.add_version(key)
    env = {"REGWARDEN_GCP_ENDPOINT_CLOUDKMS": cloudkms.url}
    image = push(repo, "1.0.0", seed=78)
    signer = GcpKmsSigner(f"gcpkms://{key}", env)
    attest_att(client, repo, image.manifest_digest, signer, "PASSED", NOW)
    pem = tmp_path / "kms.pub"
    pem.write_bytes(cloudkms.public_pem(name))

    by_url = verify(registry, repo, f"gcpkms://{key}", "--max-age", "1h", env=env)
    by_pem = verify(registry, repo, str(pem), "--max-age", "1h")

    assert by_url.returncode == 0, (by_url.stdout, by_url.stderr)
    assert by_pem.returncode == 0, (by_pem.stdout, by_pem.stderr)
    assert os.environ.get("REGWARDEN_GCP_ENDPOINT_CLOUDKMS") is None
