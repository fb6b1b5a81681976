"""Several scan sources on one image, the worst report wins: the real pipeline (`Runtime`)
against the real local registry, Harbor's scan from the fake Harbor API
(tests/support/harbor, recorded Harbor 2.10 answers) and cosign vuln attestations pushed
with `regwarden attest` and verified with the repository's attestation key.

The Harbor reports are dated 2024 and the attestations an hour ago, so in each case here the
newest report is the clean one: judging only the newest would pass every image below."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import harbor as harbor_support
from support.cli import run_cli
from support.harbor import FakeHarbor, robot_docker_config, shape
from support.registries import PushImage

from regwarden.devtools import LocalRegistry, Vuln, trivy_report, vuln_predicate
from regwarden.model import CheckOutcome, CheckResult, EventKind, ImageEvent, Outcome, Severity
from regwarden.notify import Alert
from regwarden.oci import RegistryClient
from regwarden.pipeline import Handled
from regwarden.policy import load_policy_text
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime
from regwarden.scanning.harbor_api import ENV_API_BASE
from regwarden.signatures.keys import encrypt_private_key, generate_private_key
from regwarden.store import SqliteLedger

harbor = harbor_support.harbor

pytestmark = pytest.mark.integration

PROJECT = "hb"
POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
repositories:
  - match: "{PROJECT}/**"
    attestations: {{keys: ["file://cosign.pub"]}}
    vulnerabilities:
      maxSeverity: high
      scanTimeout: 30m
      sources: [harbor, cosign-vuln]
"""
SCANNED = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
CRITICAL = [Vuln("CVE-2026-0001", "critical", "openssl", "3.0.1", fixed="3.0.2", score=9.8)]


@pytest.fixture
def key(tmp_path: Path) -> Path:
    """A cosign-encrypted signing key (password 'pw'); its public half is the policy's
    `file://cosign.pub`."""
    private = generate_private_key("ecdsa-p256")
    path = tmp_path / "cosign.key"
    path.write_bytes(encrypt_private_key(private, "pw", scrypt_n=32768))
    pem = private.public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    return path


@dataclass
class Sent:
    """A channel that keeps the alerts it is given."""

    name: str = "recorded"
    alerts: list[Alert] = field(default_factory=list)

    def send(self, alert: Alert) -> None:
        self.alerts.append(alert)


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def runtime(
    tmp_path: Path, registry: LocalRegistry, harbor: FakeHarbor, key: Path, sent: Sent
) -> Iterator[Runtime[SqliteLedger]]:
    docker = robot_docker_config(tmp_path / "docker", registry.host)
    policy = load_policy_text(POLICY, source="several.yaml", base_dir=tmp_path)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    rt = Runtime(
        policy,
        ledger=ledger,
        env={"DOCKER_CONFIG": str(docker), ENV_API_BASE: harbor.url},
        extra_channels=(sent,),
    )
    yield rt
    rt.close()
    ledger.close()


@pytest.fixture
def repository() -> str:
    return f"{PROJECT}/{uuid.uuid4().hex[:10]}/app"


def trivy_predicate(vulns: list[Vuln], scanned: datetime) -> dict[str, Any]:
    report = trivy_report("app", vulns, created=scanned)
    return vuln_predicate(report, started=scanned - timedelta(seconds=5), finished=scanned)


def grype_predicate(scanned: datetime) -> dict[str, Any]:
    """A clean `grype -o json` report wrapped the way cosign's vuln predicate carries it."""
    clean = {"matches": [], "descriptor": {"name": "grype", "version": "0.74.0"}}
    stamp = scanned.isoformat().replace("+00:00", "Z")
    return {
        "invocation": {"parameters": None, "uri": "", "event_id": "", "builder.id": ""},
        "scanner": {
            "uri": "pkg:github/anchore/grype@0.74.0",
            "version": "0.74.0",
            "db": {"uri": "", "version": ""},
            "result": clean,
        },
        "metadata": {"scanStartedOn": stamp, "scanFinishedOn": stamp},
    }


def attest(
    registry: LocalRegistry, repository: str, key: Path, predicate: dict[str, Any], tmp: Path
) -> None:
    path = tmp / f"vuln-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(predicate))
    proc = run_cli(
        "attest",
        f"{registry.host}/{repository}:1.0.0",
        "--key",
        str(key),
        "--type",
        "vuln",
        "--predicate",
        str(path),
        env={"COSIGN_PASSWORD": "pw", "PATH": "/usr/bin:/bin", "COLUMNS": "400"},
    )
    assert proc.returncode == 0, proc.stderr


def handle(runtime: Runtime[SqliteLedger], host: str, repository: str, digest: str) -> Handled:
    now = datetime.now(UTC)
    event = ImageEvent(
        kind=EventKind.PUSHED,
        source="distribution",
        image=ImageRef.parse(f"{host}/{repository}:1.0.0@{digest}"),
        time=now,
        delivery_id=uuid.uuid4().hex,
    )
    return runtime.pipeline().handle(event, now=now)


def vulnerabilities(handled: Handled) -> CheckResult:
    assert handled.verdict is not None, handled.ignored
    (check,) = [c for c in handled.verdict.checks if c.name == "vulnerabilities"]
    return check


def outcomes(check: CheckResult) -> list[tuple[object, object, object]]:
    entries = check.details["sources"]
    assert isinstance(entries, list)
    return sorted((e["source"], e["scanner"].split()[0], e["outcome"]) for e in entries)


def test_a_critical_attested_trivy_report_fails_beside_a_clean_harbor_scan(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    harbor: FakeHarbor,
    repository: str,
    key: Path,
    tmp_path: Path,
) -> None:
    digest = push(repository, "1.0.0", seed=1701).digest
    harbor.add(
        repository,
        digest,
        artifact=shape("artifact_success_clean.json", digest=digest),
        vulnerabilities=shape("vulnerabilities_clean.json", digest=digest),
    )
    attest(registry, repository, key, trivy_predicate(CRITICAL, SCANNED), tmp_path)

    handled = handle(runtime, registry.host, repository, digest)

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    check = vulnerabilities(handled)
    assert check.outcome is CheckOutcome.FAIL
    assert check.reason.startswith("cosign-vuln: 1 finding(s) above high: CVE-2026-0001")
    assert "harbor-scanner: within policy (no findings)" in check.reason
    assert outcomes(check) == [
        ("cosign-vuln", "trivy", "fail"),
        ("harbor-scanner", "Trivy", "pass"),
    ]
    assert client.head_manifest(f"quarantine/{repository}", digest) is not None


def test_a_critical_harbor_scan_fails_beside_a_newer_clean_attestation(
    runtime: Runtime[SqliteLedger],
    sent: Sent,
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    harbor: FakeHarbor,
    repository: str,
    key: Path,
    tmp_path: Path,
) -> None:
    digest = push(repository, "1.0.0", seed=1702).digest
    harbor.add(
        repository,
        digest,
        artifact=shape("artifact_success_critical.json", digest=digest),
        vulnerabilities=shape("vulnerabilities_critical.json", digest=digest),
    )
    attest(registry, repository, key, trivy_predicate([], SCANNED), tmp_path)

    handled = handle(runtime, registry.host, repository, digest)

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    check = vulnerabilities(handled)
    assert check.reason.startswith("harbor-scanner: 1 finding(s) above high")
    assert "CVE-2099-1001" in check.reason
    assert "cosign-vuln: within policy (no findings)" in check.reason
    assert client.head_manifest(f"quarantine/{repository}", digest) is not None
    # The alert shows the finding that decided, though the newest report is clean.
    (alert,) = sent.alerts
    assert alert.severity is Severity.CRITICAL
    assert [f.id for f in alert.top_findings][:1] == ["CVE-2099-1001"]


def test_an_older_critical_trivy_attestation_counts_beside_a_newer_clean_grype_one(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    push: PushImage,
    harbor: FakeHarbor,
    repository: str,
    key: Path,
    tmp_path: Path,
) -> None:
    """Attestations are kept per scanner: a Grype attestation does not supersede a Trivy one,
    while a newer Trivy attestation does supersede the older Trivy one."""
    digest = push(repository, "1.0.0", seed=1703).digest
    harbor.add(
        repository,
        digest,
        artifact=shape("artifact_success_clean.json", digest=digest),
        vulnerabilities=shape("vulnerabilities_clean.json", digest=digest),
    )
    attest(registry, repository, key, trivy_predicate(CRITICAL, SCANNED), tmp_path)
    attest(registry, repository, key, grype_predicate(SCANNED + timedelta(minutes=10)), tmp_path)

    handled = handle(runtime, registry.host, repository, digest)

    check = vulnerabilities(handled)
    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    assert check.reason.startswith("cosign-vuln (trivy 0.50.1): 1 finding(s) above high")
    assert outcomes(check) == [
        ("cosign-vuln", "grype", "pass"),
        ("cosign-vuln", "trivy", "fail"),
        ("harbor-scanner", "Trivy", "pass"),
    ]


def test_a_newer_attestation_by_the_same_scanner_supersedes_the_older(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    push: PushImage,
    harbor: FakeHarbor,
    repository: str,
    key: Path,
    tmp_path: Path,
) -> None:
    """A re-scan: the critical finding was fixed and Trivy, a newer run, says clean."""
    digest = push(repository, "1.0.0", seed=1704).digest
    harbor.add(
        repository,
        digest,
        artifact=shape("artifact_success_clean.json", digest=digest),
        vulnerabilities=shape("vulnerabilities_clean.json", digest=digest),
    )
    attest(registry, repository, key, trivy_predicate(CRITICAL, SCANNED), tmp_path)
    rescan = trivy_predicate([], SCANNED + timedelta(minutes=20))
    attest(registry, repository, key, rescan, tmp_path)

    handled = handle(runtime, registry.host, repository, digest)

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.PASSED
    check = vulnerabilities(handled)
    assert outcomes(check) == [
        ("cosign-vuln", "trivy", "pass"),
        ("harbor-scanner", "Trivy", "pass"),
    ]
