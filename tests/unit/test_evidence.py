"""`Runtime.evidence`: signatures, attestations and each scan source gathered on their own.

An infrastructure failure of one piece is recorded against that piece and hides nothing
else; the verdict is then ERROR with the cause, never FAILED/PENDING for "no scan" or "not
signed". The registry is a stand-in (its data plane answers what each test needs); the
scan sources are the real `EcrScanSource`/`HarborScanSource` classes with their network
call replaced, so what the runtime builds and how it classifies their errors is real.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from regwarden.errors import NotFound, RegistryError
from regwarden.gate import Facts, GateRules, evaluate
from regwarden.gate._from_policy import gate_rules
from regwarden.model import CheckOutcome, Finding, Outcome, ScanReport, Severity, Verdict
from regwarden.oci import Descriptor, Manifest
from regwarden.pipeline import Evidence
from regwarden.policy import load_policy_text
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime
from regwarden.scanning.ecr import EcrScanFailed, EcrScanResult, EcrScanSource
from regwarden.scanning.harbor_api import ENV_API_BASE, HarborScanSource
from regwarden.signatures.keys import generate_private_key
from regwarden.store import SqliteLedger

ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
HARBOR = "harbor.example.com"
DIGEST = "sha256:" + "ab" * 32
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
PUSHED = NOW - timedelta(hours=2)  # past every grace period and scan timeout below
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def critical_scan(source: str = "ecr") -> ScanReport:
    finding = Finding(id="CVE-2099-0001", severity=Severity.CRITICAL, package="openssl")
    return ScanReport(
        digest=DIGEST, scanner="amazon-ecr-basic", source=source, scanned_at=PUSHED,
        findings=(finding,),
    )  # fmt: skip


@dataclass
class DataPlane:
    """What signature discovery reads. `fail` is raised for the signature lookups (the
    `.sig`/`.att` tags and the referrers); `gate` is waited for before answering them."""

    fail: Exception | None = None
    gate: Callable[[], None] | None = None
    image_exists: bool = True
    lookups: list[str] = field(default_factory=list)

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None:
        return Descriptor(MANIFEST, DIGEST, 100) if self.image_exists else None

    def _lookup(self, what: str) -> None:
        self.lookups.append(what)
        if self.gate is not None:
            self.gate()
        if self.fail is not None:
            raise self.fail

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        self._lookup(reference)
        raise NotFound(f"{reference}: manifest unknown")

    def get_blob(self, repo: str, digest: str) -> bytes:
        raise NotFound(digest)

    def referrers(self, repo: str, digest: str) -> list[Descriptor]:
        self._lookup("referrers")
        return []


@dataclass
class StandInRegistry:
    host: str
    plane: DataPlane
    kind: str = "oci"
    capabilities: frozenset[str] = frozenset()

    def data_plane(self) -> DataPlane:
        return self.plane

    def close(self) -> None:
        pass


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    pem = generate_private_key("ecdsa-p256").public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    return tmp_path


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


SIGNED = '{required: true, cosign: {keys: ["file://cosign.pub"]}, gracePeriod: 10m}'


def runtime(
    key_dir: Path, ledger: SqliteLedger, body: str, env: dict[str, str] | None = None
) -> Runtime[SqliteLedger]:
    text = "apiVersion: regwarden/v1\nkind: Policy\n" + body
    policy = load_policy_text(text, source="test.yaml", base_dir=key_dir)
    return Runtime(policy, ledger=ledger, env=env or {})


def gather(
    rt: Runtime[SqliteLedger], host: str, plane: DataPlane
) -> tuple[Evidence, Verdict, GateRules]:
    image = ImageRef(registry=host, repository="app", digest=DIGEST)
    rules = gate_rules(rt.policy.for_repository("app"))
    found = rt.evidence(StandInRegistry(host, plane), image, rules)  # type: ignore[arg-type]
    facts = Facts(
        image=image,
        tags=(),
        pushed_at=PUSHED,
        signatures=found.signatures,
        signatures_unmet=found.signatures_unmet,
        signature_error=found.signature_error,
        scan=found.scan,
        scan_error=found.scan_error,
        provenance=found.provenance,
        unavailable=found.unavailable,
    )
    return found, evaluate(facts, rules, NOW), rules


def check(verdict: Verdict, name: str) -> tuple[CheckOutcome, str]:
    (found,) = [c for c in verdict.checks if c.name == name]
    return found.outcome, found.reason


def ecr_answers(monkeypatch: pytest.MonkeyPatch, answer: Callable[[], ScanReport | None]) -> None:
    def call(self: EcrScanSource, registry: Any, image: ImageRef) -> ScanReport | None:
        return answer()

    monkeypatch.setattr(EcrScanSource, "__call__", call)


# -- the registry's own scan is read by default -----------------------------------------------


def test_ecr_scan_is_read_when_sources_are_unset(
    key_dir: Path, ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's bug: with `sources` absent nothing native was read, so an ECR scan with a
    CRITICAL finding ended PENDING, then FAILED for "no scan"."""
    ecr_answers(monkeypatch, critical_scan)
    rt = runtime(key_dir, ledger, "defaults:\n  vulnerabilities: {maxSeverity: high}\n")

    found, verdict, _ = gather(rt, ECR, DataPlane())

    assert found.scan == critical_scan() and found.unavailable == ()
    assert verdict.outcome is Outcome.FAILED
    outcome, reason = check(verdict, "vulnerabilities")
    assert outcome is CheckOutcome.FAIL and "CVE-2099-0001" in reason


def test_no_signature_lookup_when_nothing_needs_one(
    key_dir: Path, ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    ecr_answers(monkeypatch, lambda: None)
    rt = runtime(key_dir, ledger, "defaults:\n  vulnerabilities: {maxSeverity: high}\n")
    plane = DataPlane(fail=RegistryError("must not be asked", status=503))

    found, _, _ = gather(rt, ECR, plane)

    assert plane.lookups == [] and found.signature_error is None and found.unavailable == ()


# -- one failure never hides the others ------------------------------------------------------


def test_signature_discovery_failure_is_an_error_and_the_scan_is_still_read(
    key_dir: Path, ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    ecr_answers(monkeypatch, critical_scan)
    rt = runtime(
        key_dir,
        ledger,
        f"defaults:\n  signatures: {SIGNED}\n  vulnerabilities: {{maxSeverity: high}}\n",
    )
    plane = DataPlane(fail=RegistryError("GET .sig: got HTTP 503", status=503))

    found, verdict, _ = gather(rt, ECR, plane)

    assert found.signature_error is not None and "HTTP 503" in found.signature_error
    assert found.scan == critical_scan()
    assert verdict.outcome is Outcome.ERROR
    outcome, reason = check(verdict, "signatures")
    assert outcome is CheckOutcome.ERROR and "HTTP 503" in reason
    assert "not signed" not in reason
    assert check(verdict, "vulnerabilities")[0] is CheckOutcome.FAIL  # read, and judged


def test_a_scan_source_failure_is_unavailable_not_no_scan(
    key_dir: Path, ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    def throttled() -> ScanReport | None:
        raise RegistryError("describe image scan findings failed: ThrottlingException")

    ecr_answers(monkeypatch, throttled)
    rt = runtime(
        key_dir,
        ledger,
        f"defaults:\n  signatures: {SIGNED}\n"
        "  vulnerabilities: {maxSeverity: high, failOpen: true}\n",
    )

    found, verdict, _ = gather(rt, ECR, DataPlane())

    assert found.unavailable == ("ecr: describe image scan findings failed: ThrottlingException",)
    assert found.scan is None and found.scan_error is None
    assert found.signature_error is None  # looked up; the image is simply not signed
    assert verdict.outcome is Outcome.ERROR
    outcome, reason = check(verdict, "vulnerabilities")
    assert outcome is CheckOutcome.ERROR  # not "no scan within 30m", not failOpen's WARN
    assert reason == "could not read the scan: " + found.unavailable[0]
    assert check(verdict, "signatures")[0] is CheckOutcome.FAIL
    assert check(verdict, "evidence")[0] is CheckOutcome.ERROR


def test_a_failed_scan_is_a_fact_about_the_scan(
    key_dir: Path, ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failed() -> ScanReport | None:
        result = EcrScanResult(DIGEST, "UNSUPPORTED_IMAGE", status=None)  # type: ignore[arg-type]
        raise EcrScanFailed(result, image=f"{ECR}/app@{DIGEST}")

    ecr_answers(monkeypatch, failed)
    rt = runtime(key_dir, ledger, "defaults:\n  vulnerabilities: {maxSeverity: high}\n")

    found, verdict, _ = gather(rt, ECR, DataPlane())

    assert found.unavailable == () and found.scan_error is not None
    assert "UNSUPPORTED_IMAGE" in found.scan_error
    assert verdict.outcome is Outcome.FAILED
    outcome, reason = check(verdict, "vulnerabilities")
    assert outcome is CheckOutcome.FAIL and reason.startswith("scan failed: ECR scan of")


def test_attestation_evidence_the_verdict_needs_is_unavailable_when_discovery_fails(
    key_dir: Path, ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    ecr_answers(monkeypatch, lambda: None)
    rt = runtime(
        key_dir,
        ledger,
        'defaults:\n  attestations: {keys: ["file://cosign.pub"]}\n'
        "  vulnerabilities: {maxSeverity: high}\n"
        "  provenance: {builderIds: ['https://ci.example/b']}\n",
    )
    plane = DataPlane(fail=RegistryError("GET .att: connection reset"))

    found, verdict, _ = gather(rt, "127.0.0.1:5000", plane)

    assert found.signature_error is None  # no signature verifier configured
    assert found.unavailable == (
        "cosign-vuln: signature discovery failed: GET .att: connection reset",
        "provenance: signature discovery failed: GET .att: connection reset",
    )
    assert verdict.outcome is Outcome.ERROR
    assert check(verdict, "vulnerabilities")[0] is CheckOutcome.ERROR
    outcome, reason = check(verdict, "provenance")
    assert outcome is CheckOutcome.ERROR and "connection reset" in reason


def test_explicit_sources_without_cosign_vuln_need_no_attestations(
    key_dir: Path, ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    ecr_answers(monkeypatch, critical_scan)
    rt = runtime(
        key_dir,
        ledger,
        'defaults:\n  attestations: {keys: ["file://cosign.pub"]}\n'
        "  vulnerabilities: {maxSeverity: high, sources: [ecr]}\n",
    )
    plane = DataPlane(fail=RegistryError("must not be asked", status=503))

    found, verdict, _ = gather(rt, ECR, plane)

    assert plane.lookups == [] and found.unavailable == ()
    assert verdict.outcome is Outcome.FAILED


def test_a_vanished_image_propagates_not_found_once_the_scans_are_done(
    key_dir: Path, ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished = threading.Event()

    def slow() -> ScanReport | None:
        finished.set()
        return None

    ecr_answers(monkeypatch, slow)
    rt = runtime(
        key_dir,
        ledger,
        f"defaults:\n  signatures: {SIGNED}\n  vulnerabilities: {{maxSeverity: high}}\n",
    )
    with pytest.raises(NotFound):
        gather(rt, ECR, DataPlane(image_exists=False))
    assert finished.is_set()


def test_scans_overlap_signature_discovery(
    key_dir: Path, ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's own scan does not wait for discovery: here the signature lookups
    answer only once the scan has started (in turn, this would time out)."""
    started = threading.Event()

    def scan() -> ScanReport | None:
        started.set()
        return critical_scan()

    ecr_answers(monkeypatch, scan)

    def wait_for_scan() -> None:
        assert started.wait(10), "the scan did not start while discovery was in flight"

    rt = runtime(
        key_dir,
        ledger,
        f"defaults:\n  signatures: {SIGNED}\n  vulnerabilities: {{maxSeverity: high}}\n",
    )
    found, _, _ = gather(rt, ECR, DataPlane(gate=wait_for_scan))

    assert found.scan == critical_scan() and found.signature_error is None


# -- Harbor: the API base from the registries section ---------------------------------------------


def test_harbor_api_comes_from_the_listed_registry_before_the_environment(
    key_dir: Path, ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str | None] = []

    def call(self: HarborScanSource, registry: Any, image: ImageRef) -> ScanReport | None:
        asked.append(self.api_base)
        raise RegistryError("Harbor artifact: GET …: got HTTP 502; gave up after 4 attempts")

    monkeypatch.setattr(HarborScanSource, "__call__", call)
    vuln = "defaults:\n  vulnerabilities: {maxSeverity: high}\n"
    listed = f"registries:\n  - {{host: {HARBOR}, kind: harbor, api: 'https://api.example'}}\n"
    env = {ENV_API_BASE: "https://from-env.example"}

    found, verdict, _ = gather(runtime(key_dir, ledger, listed + vuln, env), HARBOR, DataPlane())
    assert asked == ["https://api.example/api/v2.0"]
    assert found.unavailable == (
        "harbor: Harbor artifact: GET …: got HTTP 502; gave up after 4 attempts",
    )
    assert verdict.outcome is Outcome.ERROR

    # listed without `api`: the environment variable still says where the API is
    bare = f"registries:\n  - {{host: {HARBOR}, kind: harbor}}\n"
    gather(runtime(key_dir, ledger, bare + vuln, env), HARBOR, DataPlane())
    assert asked[-1] == "https://from-env.example/api/v2.0"
    # not listed: a distribution registry, which reads no Harbor scan unless told to
    found, _, _ = gather(runtime(key_dir, ledger, vuln, env), HARBOR, DataPlane())
    assert len(asked) == 2 and found.unavailable == ()
