"""`regwarden invoke on_push` on every events/azure sample (a real CLI process), each
sample's image moved to a real local registry: what the pipeline makes of each kind of
ACR event in each schema, and a cosign signature's event re-evaluating its subject."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from support.cli import run_cli
from support.registries import PushImage

from regwarden.devtools import LocalRegistry
from regwarden.oci import RegistryClient, compute_digest

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events" / "azure"
HOST, REPOSITORY = "demo.azurecr.io", "apps/api"
DIGEST = "sha256:" + hashlib.sha256(b"regwarden demo api 1.4.2").hexdigest()
REFERRER = "sha256:" + hashlib.sha256(b"regwarden demo api 1.4.2 bundle").hexdigest()
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OPEN_POLICY = (
    "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n  - match: 't/**'\n    team: payments\n"
)


def _invoke(tmp_path: Path, event: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGWARDEN_")}
    return run_cli(
        "--ledger",
        str(tmp_path / "ledger.db"),
        "invoke",
        "on_push",
        str(event),
        "--policy",
        str(tmp_path / "regwarden.yaml"),
        "--output",
        "json",
        env=env,
    )


def _moved(path: Path, dest: Path, swaps: dict[str, str]) -> Path:
    """The sample with its registry, repository and digests swapped (same shape)."""
    text = path.read_text()
    for before, after in swaps.items():
        text = text.replace(before, after)
    dest.write_text(text)
    return dest


def _bundle_referrer(client: RegistryClient, repo: str, subject: str, size: int) -> str:
    """An OCI 1.1 referrer of `subject` (a Sigstore bundle's shape), pushed by digest."""
    payload = json.dumps({"signed": subject}).encode()
    client.push_blob(repo, b"{}")
    client.push_blob(repo, payload)
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": compute_digest(b"{}"),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                    "digest": compute_digest(payload),
                    "size": len(payload),
                }
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": size},
        }
    ).encode()
    return client.put_manifest(repo, compute_digest(raw), raw, OCI_MANIFEST)


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.name)
def test_invoke_on_push_runs_each_azure_sample(
    path: Path,
    tmp_path: Path,
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
) -> None:
    (tmp_path / "regwarden.yaml").write_text(OPEN_POLICY)
    path_repo = f"{repo}/api"
    image = push(path_repo, "1.4.2", seed=37)
    digest = image.manifest_digest
    referrer = _bundle_referrer(client, path_repo, digest, len(image.manifest))
    swaps = {
        HOST: registry.host,
        f'"{REPOSITORY}': f'"{path_repo}',  # target.repository and subject
        DIGEST: digest,
        DIGEST.replace(":", "-"): digest.replace(":", "-"),
        REFERRER: referrer,
    }
    proc = _invoke(tmp_path, _moved(path, tmp_path / path.name, swaps))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    name = f"{registry.host}/{path_repo}"
    stem = path.name.split(".")[0]
    if "chart" in stem or "validation" in stem:
        assert rows == [], proc.stderr  # no image: nothing handled
        return
    (row,) = rows
    kind, judged, outcome = {
        "image-pushed": ("pushed", f"{name}:1.4.2@{digest}", "PASSED"),
        "image-pushed-unprefixed": ("pushed", f"{name}:1.4.2@{digest}", "PASSED"),
        "quarantine": ("pushed", f"{name}:1.4.2@{digest}", "PASSED"),
        "image-deleted": ("deleted", f"{name}@{digest}", "delete: nothing to gate"),
        # a signature tag or a referrer: the subject is judged, never the artifact
        "cosign-sig": ("signed", f"{name}@{digest}", "PASSED"),
        "referrer": ("pushed", f"{name}@{digest}", "PASSED"),
    }[stem.split("-", 1)[1].removeprefix("batch-")]
    assert (row["event"], row["image"]) == (kind, judged), proc.stderr
    assert (row["outcome"] or row["ignored"]) == outcome, proc.stderr


@pytest.fixture
def gated(tmp_path: Path) -> Path:
    from regwarden.signatures.keys import generate_private_key

    pem = generate_private_key("ecdsa-p256").public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n"
        "  - match: 't/**'\n    team: payments\n"
        "    signatures: {required: true, cosign: {keys: ['file://cosign.pub']}, "
        "gracePeriod: 1s}\n"
    )
    return tmp_path


def _event_of(sample: str, dest: Path, host: str, repo: str, digest: str, tag: str) -> Path:
    doc = json.loads((EVENTS / sample).read_bytes())
    target = doc[0]["data"]["target"]
    target.update(repository=repo, digest=digest, tag=tag)
    doc[0]["data"]["request"]["host"] = host
    dest.write_text(json.dumps(doc))
    return dest


def test_an_unsigned_push_is_failed_and_quarantined(
    registry: LocalRegistry, repo: str, push: PushImage, gated: Path
) -> None:
    image = push(repo, "1.0.0", seed=84)
    event = _event_of(
        "eventgrid-image-pushed.json",
        gated / "push.json",
        registry.host,
        repo,
        image.manifest_digest,
        "1.0.0",
    )
    proc = _invoke(gated, event)
    assert proc.returncode == 1, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["image"] == f"{registry.host}/{repo}:1.0.0@{image.manifest_digest}"
    assert row["outcome"] == "FAILED"
    assert row["actions"][0].startswith("quarantine (move")


def test_a_cosign_signature_push_re_evaluates_its_subject(
    registry: LocalRegistry, repo: str, push: PushImage, gated: Path
) -> None:
    image = push(repo, "2.0.0", seed=85)
    subject = image.manifest_digest
    event = _event_of(
        "eventgrid-cosign-sig.json",
        gated / "sig.json",
        registry.host,
        repo,
        "sha256:" + "0" * 64,
        subject.replace(":", "-") + ".sig",
    )
    proc = _invoke(gated, event)
    (row,) = json.loads(proc.stdout)
    assert (row["event"], row["image"]) == ("signed", f"{registry.host}/{repo}@{subject}")
    # no valid signature behind the tag (none was pushed): the subject is judged, and waits
    # for one within its grace period, which starts at this first sighting
    assert row["outcome"] == "PENDING", proc.stderr
    assert row["recheckAt"] is not None
    assert proc.returncode == 1
