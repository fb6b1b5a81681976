"""The registry's own scan is read when the policy names no scan source: ECR on moto (server
mode), through the real `Runtime.evidence` and `EcrScanSource`.

Before, with `vulnerabilities.sources` absent nothing native was read: an image whose ECR
scan had a CRITICAL finding stayed PENDING, then FAILED for "no scan".
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import ecr_registry as ecr_support
from support import moto_server as support
from support.moto_server import (
    ACCOUNT,
    REGISTRY_HOST,
    MotoServer,
    oci_manifest,
    put_manifest,
)

from regwarden.gate import Facts, evaluate
from regwarden.gate._from_policy import gate_rules
from regwarden.model import CheckOutcome, Outcome
from regwarden.policy import load_policy_text
from regwarden.providers.ecr import EcrRegistry
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime
from regwarden.store import SqliteLedger

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy
registry = ecr_support.registry

pytestmark = pytest.mark.integration

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  vulnerabilities: {maxSeverity: high}
"""


@pytest.fixture
def runtime(tmp_path: Path, registry: EcrRegistry) -> Iterator[Runtime[SqliteLedger]]:
    policy = load_policy_text(POLICY, source="ecr.yaml", base_dir=tmp_path)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    rt = Runtime(policy, ledger=ledger, env={}, registry_factory=lambda host: registry)
    yield rt
    rt.close()
    ledger.close()


def test_ecr_scan_with_a_critical_finding_fails_the_image_with_sources_unset(
    runtime: Runtime[SqliteLedger], registry: EcrRegistry, moto: MotoServer
) -> None:
    ecr: Any = moto.client("ecr")
    repository = "defaults/app"
    ecr.create_repository(repositoryName=repository)
    raw, _ = oci_manifest("defaults")
    digest = put_manifest(ecr, repository, raw, tag="1.0.1")
    ecr.start_image_scan(repositoryName=repository, imageId={"imageDigest": digest})
    scanned = datetime(2026, 12, 1, tzinfo=UTC)
    moto.set_ecr_scan_findings(
        {
            "registryId": ACCOUNT,
            "repositoryName": repository,
            "imageId": {"imageDigest": digest},
            "imageScanStatus": {"status": "COMPLETE", "description": "done"},
            "imageScanFindings": {
                "imageScanCompletedAt": scanned.timestamp(),
                "findingSeverityCounts": {"CRITICAL": 1},
                "findings": [
                    {
                        "name": "CVE-2099-4242",
                        "severity": "CRITICAL",
                        "attributes": [{"key": "package_name", "value": "openssl"}],
                    }
                ],
            },
        }
    )
    image = ImageRef.parse(f"{REGISTRY_HOST}/{repository}@{digest}")
    rules = gate_rules(runtime.policy.for_repository(repository))

    found = runtime.evidence(runtime.registry(REGISTRY_HOST), image, rules)

    assert found.scan is not None and found.unavailable == ()
    assert [f.id for f in found.scan.findings] == ["CVE-2099-4242"]
    now = scanned + timedelta(minutes=5)  # well within scanTimeout: it would be PENDING
    facts = Facts(image=image, tags=("1.0.1",), pushed_at=scanned, scan=found.scan)
    verdict = evaluate(facts, rules, now)
    assert verdict.outcome is Outcome.FAILED
    (check,) = [c for c in verdict.checks if c.name == "vulnerabilities"]
    assert check.outcome is CheckOutcome.FAIL and "CVE-2099-4242" in check.reason
