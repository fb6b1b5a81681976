"""The push gate with Harbor as its scan source: the real pipeline (`Runtime`) against the
real local registry, with the fake Harbor API (tests/support/harbor) on its own port standing
in for Harbor's API (`REGWARDEN_HARBOR_API`), credentials from a docker config file."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import harbor as harbor_support
from support.harbor import FakeHarbor, robot_docker_config, shape
from support.registries import PushImage

from regwarden.devtools import LocalRegistry
from regwarden.model import CheckOutcome, EventKind, ImageEvent, Outcome
from regwarden.oci import RegistryClient
from regwarden.pipeline import Handled
from regwarden.policy import load_policy_text
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime
from regwarden.scanning.harbor_api import ENV_API_BASE
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
    vulnerabilities:
      maxSeverity: high
      scanTimeout: 30m
      sources: [harbor]
"""


@pytest.fixture
def runtime(
    tmp_path: Path, registry: LocalRegistry, harbor: FakeHarbor
) -> Iterator[Runtime[SqliteLedger]]:
    docker = robot_docker_config(tmp_path / "docker", registry.host)
    policy = load_policy_text(POLICY, source="harbor-policy.yaml", base_dir=tmp_path)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    rt = Runtime(
        policy,
        ledger=ledger,
        env={"DOCKER_CONFIG": str(docker), ENV_API_BASE: harbor.url},
    )
    yield rt
    rt.close()
    ledger.close()


@pytest.fixture
def repository() -> str:
    """A nested repository in the Harbor project: `hb/<unique>/app`."""
    return f"{PROJECT}/{uuid.uuid4().hex[:10]}/app"


def pushed(push: PushImage, repository: str, seed: int) -> str:
    return push(repository, "1.0.0", seed=seed).digest


def handle(runtime: Runtime[SqliteLedger], host: str, repository: str, digest: str) -> Handled:
    now = datetime.now(UTC)
    event = ImageEvent(
        kind=EventKind.PUSHED,
        source="distribution",
        image=ImageRef.parse(f"{host}/{repository}:1.0.0@{digest}"),
        time=now,
        delivery_id=uuid.uuid4().hex,
        user_agent="ci-pipeline/1.0",
    )
    return runtime.pipeline().handle(event, now=now)


def vulnerabilities_check(handled: Handled) -> tuple[CheckOutcome, str]:
    assert handled.verdict is not None, handled.ignored
    (check,) = [c for c in handled.verdict.checks if c.name == "vulnerabilities"]
    return check.outcome, check.reason


def test_critical_finding_in_harbor_fails_and_quarantines(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    harbor: FakeHarbor,
    repository: str,
) -> None:
    digest = pushed(push, repository, seed=701)
    harbor.add(
        repository,
        digest,
        artifact=shape("artifact_success_critical.json", digest=digest),
        vulnerabilities=shape("vulnerabilities_critical.json", digest=digest),
    )

    handled = handle(runtime, registry.host, repository, digest)

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    outcome, reason = vulnerabilities_check(handled)
    assert outcome is CheckOutcome.FAIL
    assert "1 finding(s) above high" in reason and "CVE-2099-1001" in reason
    assert any(a.startswith("quarantine") for a in handled.actions), handled.actions
    assert client.head_manifest(f"quarantine/{repository}", digest) is not None
    assert client.head_manifest(repository, digest) is None
    # Harbor was asked about this artifact: project, then the rest encoded twice
    rest = repository.split("/", 1)[1].replace("/", "%252F")
    artifact = f"/api/v2.0/projects/{PROJECT}/repositories/{rest}/artifacts/{digest}"
    assert [r.path for r in harbor.requests] == [artifact, artifact + "/additions/vulnerabilities"]
    assert all(r.status == 200 for r in harbor.requests)


def test_clean_harbor_report_passes(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    harbor: FakeHarbor,
    repository: str,
) -> None:
    digest = pushed(push, repository, seed=702)
    harbor.add(
        repository,
        digest,
        artifact=shape("artifact_success_clean.json", digest=digest),
        vulnerabilities=shape("vulnerabilities_clean.json", digest=digest),
    )

    handled = handle(runtime, registry.host, repository, digest)

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.PASSED
    outcome, reason = vulnerabilities_check(handled)
    assert (outcome, reason) == (CheckOutcome.PASS, "within policy (no findings)")
    assert handled.actions == ()
    assert client.head_manifest(repository, digest) is not None
    assert client.head_manifest(f"quarantine/{repository}", digest) is None


def test_running_harbor_scan_holds_the_image_pending(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    harbor: FakeHarbor,
    repository: str,
) -> None:
    digest = pushed(push, repository, seed=703)
    harbor.add(repository, digest, artifact=shape("artifact_running.json", digest=digest))

    handled = handle(runtime, registry.host, repository, digest)

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.PENDING
    outcome, reason = vulnerabilities_check(handled)
    assert outcome is CheckOutcome.PENDING and reason.startswith("no scan yet")
    assert handled.recheck_at is not None
    assert client.head_manifest(repository, digest) is not None  # strategy move: left alone
    assert len(harbor.requests) == 1  # no report fetched for a running scan


def test_failed_harbor_scan_fails_closed(
    runtime: Runtime[SqliteLedger],
    registry: LocalRegistry,
    client: RegistryClient,
    push: PushImage,
    harbor: FakeHarbor,
    repository: str,
) -> None:
    digest = pushed(push, repository, seed=704)
    harbor.add(repository, digest, artifact=shape("artifact_error.json", digest=digest))

    handled = handle(runtime, registry.host, repository, digest)

    assert handled.verdict is not None and handled.verdict.outcome is Outcome.FAILED
    outcome, reason = vulnerabilities_check(handled)
    assert outcome is CheckOutcome.FAIL
    assert reason.startswith("scan failed: Harbor scan of") and "'Error'" in reason
    assert client.head_manifest(f"quarantine/{repository}", digest) is not None
