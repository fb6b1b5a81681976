"""A Notation signature manifest pushed to a real registry (distribution 2.8: found through
the `sha256-<hex>` referrers tag) whose layer is not an envelope: `regwarden verify` and
the gate's `regwarden check` both report an invalid signature with the reason, exit 1."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from support.cli import run_cli
from support.notation_artifacts import SignatureManifest, signature_manifest
from support.registries import PushImage

from regwarden.devtools import LocalRegistry
from regwarden.oci import RegistryClient, referrers_tag
from regwarden.signatures.notation._sign import demo_identity

pytestmark = pytest.mark.integration
TAR = "application/vnd.oci.image.layer.v1.tar"
REASON = "not a Notation signature envelope: layer sha256:"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={"PATH": "/usr/bin:/bin"})


def push_signature(client: RegistryClient, repo: str, signature: SignatureManifest) -> str:
    for digest, data in signature.blobs.items():
        client.push_blob(repo, data, digest)
    return client.push_referrer(
        repo, signature.manifest, "application/vnd.oci.image.manifest.v1+json"
    )


@pytest.fixture
def trust(tmp_path: Path) -> tuple[Path, Path]:
    """A trust policy for every scope and a store with a fresh root nobody signed with."""
    _, root = demo_identity(datetime.now(UTC), kind="ec", size=256)
    policy = tmp_path / "notation" / "trustpolicy.json"
    store = tmp_path / "notation" / "truststore"
    (store / "x509" / "ca" / "acme").mkdir(parents=True)
    (store / "x509" / "ca" / "acme" / "root.crt").write_bytes(root.public_bytes(Encoding.PEM))
    statement = {
        "name": "all",
        "registryScopes": ["*"],
        "signatureVerification": {"level": "strict"},
        "trustStores": ["ca:acme"],
        "trustedIdentities": ["*"],
    }
    policy.write_text(json.dumps({"version": "1.0", "trustPolicies": [statement]}))
    return policy, store


def test_verify_and_check_report_the_bad_envelope(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    trust: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    image = push(repo, "1.0.0", seed=31)
    subject = (image.media_type, image.manifest_digest, len(image.manifest))
    sig = push_signature(client, repo, signature_manifest(subject, [(TAR, b"invalid signature")]))
    # distribution 2.8 has no referrers API: the signature is listed under the tag schema
    listed = client.get_manifest(repo, referrers_tag(image.manifest_digest)).manifests
    assert [d.digest for d in listed] == [sig]

    policy, store = trust
    ref = f"{registry.host}/{repo}:1.0.0"
    proc = cli(
        "--insecure",
        "verify",
        ref,
        "--trust-policy",
        str(policy),
        "--trust-store",
        str(store),
        "--output",
        "json",
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["reason"] != "no signatures found"
    ((found),) = doc["signatures"]
    assert (found["digest"], found["verified"]) == (sig, False)
    assert found["reason"].startswith(REASON) and TAR in found["reason"]

    # the gate reads the same evidence: the signature check fails with the same reason
    gate_policy = tmp_path / "regwarden.yaml"
    gate_policy.write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n"
        f"  - match: '{repo.split('/')[0]}/**'\n    team: payments\n"
        "    signatures:\n      required: true\n      notation:\n"
        "        trustPolicy: file://notation/trustpolicy.json\n"
        "        trustStore: file://notation/truststore\n"
    )
    check = cli(
        "--insecure",
        "--ledger",
        str(tmp_path / "ledger.db"),
        "check",
        f"{registry.host}/{repo}@{image.manifest_digest}",
        "--policy",
        str(gate_policy),
        "--output",
        "json",
    )
    assert check.returncode == 1, check.stderr
    assert REASON in check.stdout, check.stdout
