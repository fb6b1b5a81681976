"""Reports made by the real Trivy and Grype (../shared/fixtures; skipped if absent) round-trip
through `regwarden attach --sign` and the push gate (`trivy-referrer` / `grype-referrer`
with signed report referrers required) on the real local registry.

The fixtures were made for images we cannot push byte for byte, and `attach` refuses a
report that names another image; so each is bound to the image pushed here by rewriting
only its identity fields (Trivy `Metadata.ImageID` and `RepoDigests`; Grype
`source.target.manifestDigest`, `imageID` and `repoDigests`). The findings are untouched,
and the counts expected of the gate are computed here by walking the raw JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.registries import PushImage

from regwarden.devtools import LocalRegistry
from regwarden.model import CheckOutcome
from regwarden.oci import RegistryClient
from regwarden.pipeline import Pipeline
from regwarden.reference import ImageRef
from regwarden.runtime import load_runtime
from regwarden.signatures.keys import encrypt_private_key, generate_private_key

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
TRIVY_DIR = FIXTURES / "trivy"
GRYPE_DIR = FIXTURES / "grype"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.integration,
    pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is not present"),
]


def _reports(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    # the cosign vuln predicate is not a Trivy JSON report: attach refuses it (tested below)
    return sorted(p for p in directory.glob("*.json") if "cosign-vuln" not in p.name)


TRIVY = _reports(TRIVY_DIR)
GRYPE = _reports(GRYPE_DIR)


def trivy_counts(doc: dict[str, Any]) -> Counter[str]:
    return Counter(
        v["Severity"].lower()
        for result in doc.get("Results") or []
        for v in result.get("Vulnerabilities") or []
    )


def grype_counts(doc: dict[str, Any]) -> Counter[str]:
    return Counter(m["vulnerability"]["severity"].lower() for m in doc.get("matches") or [])


@pytest.fixture
def gate(tmp_path: Path, repo: str) -> Iterator[tuple[Pipeline, Path]]:
    private = generate_private_key("ecdsa-p256")
    (tmp_path / "cosign.key").write_bytes(encrypt_private_key(private, "pw", scrypt_n=32768))
    pem = private.public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n"
        f'  - match: "{repo}"\n'
        '    signatures: {required: false, cosign: {keys: ["file://cosign.pub"]}}\n'
        "    vulnerabilities: {maxSeverity: high, sources: [trivy-referrer, grype-referrer]}\n"
    )
    runtime = load_runtime(tmp_path / "regwarden.yaml", ledger=tmp_path / "ledger.db")
    try:
        yield runtime.pipeline(), tmp_path / "cosign.key"
    finally:
        runtime.close()


def bound(path: Path, kind: str, name: str, digest: str, config: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    if kind == "trivy":
        doc["Metadata"]["ImageID"] = config
        doc["Metadata"]["RepoDigests"] = [f"{name}@{digest}"]
    else:
        target = doc["source"]["target"]
        target.update(manifestDigest=digest, imageID=config, repoDigests=[f"{name}@{digest}"])
    return doc


def round_trip(
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    gate: tuple[Pipeline, Path],
    tmp_path: Path,
    repo: str,
    kind: str,
    fixture: Path,
) -> tuple[Counter[str], dict[str, Any], CheckOutcome]:
    pipeline, key = gate
    content = push(repo, "1.0.0", seed=961)
    digest = content.digest
    config = client.get_manifest(repo, digest).config
    assert config is not None
    name = f"{registry.host}/{repo}"
    doc = bound(fixture, kind, name, digest, config.digest)
    report = tmp_path / f"{kind}.json"
    report.write_text(json.dumps(doc))
    proc = run_cli(
        "attach", f"{name}:1.0.0", "--type", kind, "--report", str(report), "--sign",
        "--key", str(key), "-o", "json",
        env={"COSIGN_PASSWORD": "pw", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = trivy_counts(doc) if kind == "trivy" else grype_counts(doc)
    assert json.loads(proc.stdout)["counts"] == dict(expected)

    image = ImageRef(registry=registry.host, repository=repo, digest=digest)
    verdict = pipeline.assess(image, now=datetime.now(UTC))
    (check,) = [c for c in verdict.checks if c.name == "vulnerabilities"]
    (source,) = check.details["sources"]  # type: ignore[misc]
    return expected, source, check.outcome


@pytest.mark.parametrize("fixture", TRIVY, ids=[p.stem for p in TRIVY])
def test_trivy_fixtures_round_trip_through_attach_and_the_gate(
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    gate: tuple[Pipeline, Path],
    tmp_path: Path,
    repo: str,
    fixture: Path,
) -> None:
    expected, source, outcome = round_trip(
        registry, client, push, gate, tmp_path, repo, "trivy", fixture
    )
    assert source["source"] == "trivy-referrer"
    assert source["counts"] == dict(expected)
    above = expected["critical"] > 0
    assert outcome is (CheckOutcome.FAIL if above else CheckOutcome.PASS), source


@pytest.mark.parametrize("fixture", GRYPE, ids=[p.stem for p in GRYPE])
def test_grype_fixtures_round_trip_through_attach_and_the_gate(
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    gate: tuple[Pipeline, Path],
    tmp_path: Path,
    repo: str,
    fixture: Path,
) -> None:
    expected, source, outcome = round_trip(
        registry, client, push, gate, tmp_path, repo, "grype", fixture
    )
    assert source["source"] == "grype-referrer"
    assert source["counts"] == dict(expected)
    above = expected["critical"] > 0
    assert outcome is (CheckOutcome.FAIL if above else CheckOutcome.PASS), source


def test_the_cosign_vuln_predicate_is_not_a_trivy_report(
    registry: LocalRegistry, push: PushImage, repo: str
) -> None:
    predicate = TRIVY_DIR / "trivy-v0.30.1-cosign-vuln.alpine-3.10.json"
    if not predicate.is_file():
        pytest.skip("no cosign vuln fixture")
    push(repo, "1.0.0", seed=962)
    proc = run_cli(
        "attach", f"{registry.host}/{repo}:1.0.0", "--type", "trivy", "--report", str(predicate),
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "400"},
    )  # fmt: skip
    assert proc.returncode == 2 and "nothing was pushed" in " ".join(proc.stderr.split())
