"""`regwarden attest --type vuln` against a real registry: a predicate the gate cannot read
(a raw Trivy or Grype report, a whole statement, a wrapper without the report) is refused
with exit 2 and how to wrap it, before anything is pushed; the cosign-vuln wrapper is
accepted, and what it pushed is read back the way the gate reads it."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.registries import PushImage

from regwarden.devtools import LocalRegistry, Vuln, trivy_report, vuln_predicate
from regwarden.errors import NotFound
from regwarden.model import Severity
from regwarden.oci import RegistryClient, referrers_tag
from regwarden.scanning import parse_cosign_vuln
from regwarden.signatures import (
    COSIGN_VULN_PREDICATE,
    CosignPolicy,
    discover,
    signature_tag,
    verify_attestations,
)
from regwarden.signatures.keys import encrypt_private_key, generate_private_key

pytestmark = pytest.mark.integration
SCANNED = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
VULNS = [Vuln("CVE-2026-0001", "critical", "openssl", "3.0.1", fixed="3.0.2", score=9.8)]


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A cosign-encrypted signing key (password 'pw') and its public half."""
    private = generate_private_key("ecdsa-p256")
    path = tmp_path_factory.mktemp("attest-key") / "cosign.key"
    path.write_bytes(encrypt_private_key(private, "pw", scrypt_n=32768))
    return path, private.public_key


def attest(
    registry: LocalRegistry,
    repo: str,
    key: tuple[Path, Any],
    kind: str,
    predicate: str,
    *more: str,
) -> subprocess.CompletedProcess[str]:
    """`regwarden attest <registry>/<repo>:1.0.0 --key KEY --type KIND --predicate P MORE…`."""
    return run_cli(
        "attest",
        f"{registry.host}/{repo}:1.0.0",
        "--key",
        str(key[0]),
        "--type",
        kind,
        "--predicate",
        predicate,
        *more,
        env={"COSIGN_PASSWORD": "pw", "PATH": "/usr/bin:/bin", "COLUMNS": "400"},
    )


def write(tmp_path: Path, name: str, doc: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def nothing_attached(client: RegistryClient, repo: str, digest: str) -> None:
    assert client.list_tags(repo) == ["1.0.0"]  # no .att tag, no sha256-<hex> referrers tag
    assert client.referrers(repo, digest) == []
    with pytest.raises(NotFound):
        client.get_manifest(repo, signature_tag(digest, "att"))


RAW_TRIVY = trivy_report("app", VULNS, created=SCANNED)
GRYPE = {
    "matches": [
        {
            "vulnerability": {"id": "CVE-2026-0001", "severity": "Critical"},
            "artifact": {"name": "openssl", "version": "3.0.1"},
        }
    ],
    "descriptor": {"name": "grype", "version": "0.74.0"},
}
WRAPPED = vuln_predicate(RAW_TRIVY, started=SCANNED - timedelta(seconds=5), finished=SCANNED)
STATEMENT = {
    "_type": "https://in-toto.io/Statement/v1",
    "subject": [{"digest": {"sha256": "ab" * 32}}],
    "predicateType": COSIGN_VULN_PREDICATE,
    "predicate": WRAPPED,
}
NO_RESULT = {**WRAPPED, "scanner": {"uri": "pkg:github/aquasecurity/trivy@0.50.1"}}


@pytest.mark.parametrize("fmt", ["legacy", "bundle"])
@pytest.mark.parametrize(
    ("doc", "said"),
    [
        (RAW_TRIVY, "is a raw Trivy report, not a cosign vuln predicate"),
        (GRYPE, "is a raw Grype report, not a cosign vuln predicate"),
        (STATEMENT, "is a whole in-toto statement; give only its 'predicate'"),
        (NO_RESULT, "predicate.scanner.result"),
    ],
    ids=["raw-trivy", "raw-grype", "statement", "no-result"],
)
def test_unreadable_vuln_predicate_is_refused_and_nothing_is_pushed(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    key: tuple[Path, Any],
    tmp_path: Path,
    fmt: str,
    doc: dict[str, Any],
    said: str,
) -> None:
    image = push(repo, "1.0.0", seed=41)
    predicate = write(tmp_path, "predicate.json", doc)
    proc = attest(registry, repo, key, "vuln", predicate, "--format", fmt)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())  # rich may wrap long lines
    assert said in message
    assert "nothing was pushed" in message
    assert "trivy image --format cosign-vuln" in message  # how to make the right shape
    assert (
        '"scanner": {"uri":' in message and '"result": <the Trivy or Grype JSON report>' in message
    )
    assert '"metadata": {"scanStartedOn":' in message
    nothing_attached(client, repo, image.manifest_digest)


def test_a_vuln_uri_type_is_checked_too(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    key: tuple[Path, Any],
    tmp_path: Path,
) -> None:
    image = push(repo, "1.0.0", seed=42)
    proc = attest(
        registry, repo, key, COSIGN_VULN_PREDICATE, write(tmp_path, "trivy.json", RAW_TRIVY)
    )
    assert proc.returncode == 2, proc.stderr
    assert "raw Trivy report" in proc.stderr
    nothing_attached(client, repo, image.manifest_digest)


def test_other_predicate_types_are_not_read_as_vuln_reports(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    key: tuple[Path, Any],
    tmp_path: Path,
) -> None:
    """The check is for what the gate reads as a scan; provenance is passed through."""
    push(repo, "1.0.0", seed=43)
    provenance = {"builder": {"id": "https://ci.example.com/builder"}, "buildType": "x"}
    proc = attest(
        registry, repo, key, "slsaprovenance", write(tmp_path, "provenance.json", provenance)
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("fmt", ["legacy", "bundle"])
def test_wrapped_report_is_accepted_and_the_gate_reads_it(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    key: tuple[Path, Any],
    tmp_path: Path,
    fmt: str,
) -> None:
    image = push(repo, "1.0.0", seed=44)
    digest = image.manifest_digest
    proc = attest(
        registry,
        repo,
        key,
        "vuln",
        write(tmp_path, "vuln.json", WRAPPED),
        "--format",
        fmt,
        "--output",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["attested"] is True
    tags = client.list_tags(repo)
    if fmt == "legacy":
        assert signature_tag(digest, "att") in tags
    else:
        assert referrers_tag(digest) in tags  # distribution 2.8: the tag schema
        assert len(client.referrers(repo, digest)) == 1

    # read back as the gate does: discover, verify the attestation, parse its statement
    found = discover(client, repo, digest)
    policy = CosignPolicy(keys=(key[1],), predicate_types=frozenset({COSIGN_VULN_PREDICATE}))
    (att,) = verify_attestations(found.cosign, image_digest=digest, policy=policy)
    assert att.result.verified, att.result.reason
    assert att.predicate_type == COSIGN_VULN_PREDICATE and att.statement is not None
    report = parse_cosign_vuln(json.dumps(att.statement).encode(), digest=digest)
    assert report.source == "cosign-vuln" and report.scanned_at == SCANNED
    assert [(f.id, f.severity) for f in report.findings] == [("CVE-2026-0001", Severity.CRITICAL)]
