"""Trivy and Grype reports attached to the image as OCI referrers (`trivy-referrer`,
`grype-referrer`), judged by the real pipeline against the real local docker-registry
(distribution 2.8: no referrers API, so the `sha256-<hex>` referrers tag is what is read).
A report referrer counts only when signed under the repository's signature policy unless
`referrers.requireSigned: false`; a signature pushed later re-evaluates the image (through
`regwarden serve` fed by the registry's own notifications)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.gate import TOKEN, generate_keys
from support.streams import Serve

from regwarden.devtools import LocalRegistry, Vuln, free_port, make_image, push_image, trivy_report
from regwarden.model import CheckOutcome, EventKind, ImageEvent, Outcome, Verdict
from regwarden.oci import Descriptor, RegistryClient, referrers_tag
from regwarden.pipeline import Handled, Pipeline
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime, load_runtime
from regwarden.scanning.referrer_reports import (
    GRYPE_REPORT_TYPE,
    KINDS,
    TRIVY_REPORT_TYPE,
    attach_report,
)
from regwarden.signatures import publish, sign_legacy
from regwarden.signatures.keys import PrivateKey, generate_private_key
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CI = "ci-pipeline/1.0"
CRITICAL = [Vuln("CVE-2099-7001", "CRITICAL", "openssl", "3.0.1", "3.0.15", 9.8)]
LOW = [Vuln("CVE-2099-7002", "LOW", "zlib", "1.3", "1.3.1")]


@pytest.fixture
def key(tmp_path: Path) -> PrivateKey:
    key = generate_private_key("ecdsa-p256")
    pem = key.public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    return key


def runtime(tmp_path: Path, repo: str, sources: str, *, require_signed: bool = True) -> Runtime:
    (tmp_path / "regwarden.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "defaults: {quarantine: {strategy: move}}\nrepositories:\n"
        f'  - match: "{repo}"\n    team: t\n'
        '    signatures: {required: true, cosign: {keys: ["file://cosign.pub"]}, '
        "gracePeriod: 1m}\n"
        f"    vulnerabilities: {{maxSeverity: high, scanTimeout: 10m, sources: [{sources}], "
        f"referrers: {{requireSigned: {str(require_signed).lower()}}}}}\n"
    )
    return load_runtime(tmp_path / "regwarden.yaml", ledger=tmp_path / "ledger.db")


@pytest.fixture
def gate(tmp_path: Path, repo: str, key: PrivateKey) -> Iterator[Pipeline]:
    rt = runtime(tmp_path, repo, "trivy-referrer, grype-referrer")
    try:
        yield rt.pipeline()
    finally:
        rt.close()


def push_event(host: str, repo: str, digest: str, *, at: datetime = T0) -> ImageEvent:
    return ImageEvent(
        kind=EventKind.PUSHED,
        source="distribution",
        image=ImageRef(registry=host, repository=repo, tag="1.0.0", digest=digest),
        time=at,
        delivery_id=f"push-{digest}-{at.isoformat()}",
        user_agent=CI,
    )


def sign(client: RegistryClient, host: str, repo: str, digest: str, key: PrivateKey) -> str:
    art = sign_legacy(image_digest=digest, docker_reference=f"{host}/{repo}", key=key)
    return publish(client, repo, art)


def signed_image(
    client: RegistryClient, host: str, repo: str, key: PrivateKey, seed: int
) -> tuple[str, Descriptor]:
    content = make_image(seed=seed)
    digest = push_image(client, repo, content, tag="1.0.0")
    sign(client, host, repo, digest, key)
    desc = client.head_manifest(repo, digest)
    assert desc is not None
    return digest, desc


def trivy(host: str, repo: str, digest: str, vulns: list[Vuln]) -> bytes:
    doc = trivy_report(f"{host}/{repo}:1.0.0", vulns, created=T0 - timedelta(minutes=5))
    doc["Metadata"]["RepoDigests"] = [f"{host}/{repo}@{digest}"]
    return json.dumps(doc).encode()


def grype(host: str, repo: str, digest: str, vulns: list[Vuln]) -> bytes:
    matches = [
        {
            "vulnerability": {"id": v.id, "severity": v.severity.title(), "fix": {"state": ""}},
            "artifact": {"name": v.package, "version": v.installed},
        }
        for v in vulns
    ]
    doc: dict[str, Any] = {
        "matches": matches,
        "source": {"type": "image", "target": {"manifestDigest": digest}},
        "descriptor": {"name": "grype", "version": "0.94.0", "timestamp": "2026-12-01T11:55:00Z"},
    }
    return json.dumps(doc).encode()


def attach(
    client: RegistryClient, repo: str, kind: str, subject: Descriptor, data: bytes, **at: Any
) -> str:
    return attach_report(
        client,
        repo,
        KINDS[kind],
        subject,
        data,
        created=at.get("created", T0 - timedelta(minutes=4)),
    )


def vulnerabilities(verdict: Verdict | None) -> tuple[CheckOutcome, str]:
    assert verdict is not None
    (check,) = [c for c in verdict.checks if c.name == "vulnerabilities"]
    return check.outcome, check.reason


def judged(handled: Handled) -> Verdict:
    assert handled.verdict is not None, handled.ignored
    return handled.verdict


def test_a_signed_trivy_referrer_with_a_critical_finding_fails_the_image(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline, key: PrivateKey
) -> None:
    host = registry.host
    digest, desc = signed_image(client, host, repo, key, seed=901)
    referrer = attach(client, repo, "trivy", desc, trivy(host, repo, digest, CRITICAL))
    sign(client, host, repo, referrer, key)
    # distribution 2.8 has no referrers API: the referrer is listed in the tag schema
    index = client.get_manifest(repo, referrers_tag(digest))
    assert [(d.digest, d.artifact_type) for d in index.manifests] == [(referrer, TRIVY_REPORT_TYPE)]

    verdict = judged(gate.handle(push_event(host, repo, digest), now=T0))

    assert verdict.outcome is Outcome.FAILED
    outcome, reason = vulnerabilities(verdict)
    assert outcome is CheckOutcome.FAIL and "CVE-2099-7001" in reason, reason
    assert client.head_manifest(f"quarantine/{repo}", digest) is not None


def test_an_unsigned_report_is_refused_pending_then_fails_at_scan_timeout(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline, key: PrivateKey
) -> None:
    host = registry.host
    digest, desc = signed_image(client, host, repo, key, seed=902)
    attach(client, repo, "trivy", desc, trivy(host, repo, digest, LOW))  # clean, but unsigned

    first = judged(gate.handle(push_event(host, repo, digest), now=T0))
    assert first.outcome is Outcome.PENDING
    outcome, reason = vulnerabilities(first)
    assert outcome is CheckOutcome.PENDING
    assert "a trivy report is attached but not signed" in reason, reason

    late = T0 + timedelta(minutes=11)  # past scanTimeout
    again = judged(gate.recheck(ImageRef(registry=host, repository=repo, digest=digest), now=late))
    assert again.outcome is Outcome.FAILED
    outcome, reason = vulnerabilities(again)
    assert outcome is CheckOutcome.FAIL and "not signed" in reason, reason


def test_a_referrer_signed_by_another_key_does_not_count(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline, key: PrivateKey
) -> None:
    host = registry.host
    digest, desc = signed_image(client, host, repo, key, seed=903)
    referrer = attach(client, repo, "trivy", desc, trivy(host, repo, digest, LOW))
    sign(client, host, repo, referrer, generate_private_key("ecdsa-p256"))

    verdict = judged(gate.handle(push_event(host, repo, digest), now=T0))
    assert verdict.outcome is Outcome.PENDING
    _, reason = vulnerabilities(verdict)
    assert "not signed" in reason and "no valid signature from key" in reason, reason


def test_require_signed_false_accepts_an_unsigned_report(
    registry: LocalRegistry, client: RegistryClient, repo: str, key: PrivateKey, tmp_path: Path
) -> None:
    host = registry.host
    digest, desc = signed_image(client, host, repo, key, seed=904)
    attach(client, repo, "trivy", desc, trivy(host, repo, digest, CRITICAL))
    rt = runtime(tmp_path, repo, "trivy-referrer", require_signed=False)
    try:
        verdict = judged(rt.pipeline().handle(push_event(host, repo, digest), now=T0))
    finally:
        rt.close()
    assert verdict.outcome is Outcome.FAILED
    outcome, reason = vulnerabilities(verdict)
    assert outcome is CheckOutcome.FAIL and "CVE-2099-7001" in reason, reason


def test_a_clean_signed_grype_referrer_passes(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline, key: PrivateKey
) -> None:
    host = registry.host
    digest, desc = signed_image(client, host, repo, key, seed=905)
    referrer = attach(client, repo, "grype", desc, grype(host, repo, digest, LOW))
    sign(client, host, repo, referrer, key)
    assert [d.artifact_type for d in client.referrers(repo, digest)] == [GRYPE_REPORT_TYPE]

    verdict = judged(gate.handle(push_event(host, repo, digest), now=T0))

    assert verdict.outcome is Outcome.PASSED, verdict.checks
    outcome, _ = vulnerabilities(verdict)
    assert outcome is CheckOutcome.PASS


def test_a_clean_grype_report_beside_a_trivy_report_with_a_critical_finding_fails(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline, key: PrivateKey
) -> None:
    """Both sources report and the worst wins: the clean Grype report does not outweigh the
    CRITICAL Trivy finding, and the verdict says which source reported what."""
    host = registry.host
    digest, desc = signed_image(client, host, repo, key, seed=910)
    clean = attach(client, repo, "grype", desc, grype(host, repo, digest, LOW))
    critical = attach(
        client,
        repo,
        "trivy",
        desc,
        trivy(host, repo, digest, CRITICAL),
        created=T0 - timedelta(hours=1),  # the older of the two: age does not decide
    )
    for referrer in (clean, critical):
        sign(client, host, repo, referrer, key)

    verdict = judged(gate.handle(push_event(host, repo, digest), now=T0))

    assert verdict.outcome is Outcome.FAILED, verdict.checks
    (check,) = [c for c in verdict.checks if c.name == "vulnerabilities"]
    assert check.outcome is CheckOutcome.FAIL
    assert "trivy-referrer" in check.reason and "CVE-2099-7001" in check.reason, check.reason
    by_source = {s["source"]: s["outcome"] for s in check.details["sources"]}
    assert by_source == {"trivy-referrer": "fail", "grype-referrer": "pass"}, by_source
    assert client.head_manifest(f"quarantine/{repo}", digest) is not None


def test_the_newest_signed_report_counts_and_a_newer_unsigned_one_is_ignored(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline, key: PrivateKey
) -> None:
    host = registry.host
    digest, desc = signed_image(client, host, repo, key, seed=906)
    old = attach(
        client,
        repo,
        "trivy",
        desc,
        trivy(host, repo, digest, CRITICAL),
        created=T0 - timedelta(hours=2),
    )
    new = attach(
        client, repo, "trivy", desc, trivy(host, repo, digest, LOW), created=T0 - timedelta(hours=1)
    )
    sign(client, host, repo, old, key)
    sign(client, host, repo, new, key)
    # pushed last and newest by its date, but unsigned: it neither replaces nor hides the rest
    attach(client, repo, "trivy", desc, trivy(host, repo, digest, CRITICAL), created=T0)

    verdict = judged(gate.handle(push_event(host, repo, digest), now=T0))
    assert verdict.outcome is Outcome.PASSED, verdict.checks


def test_a_signed_report_about_another_image_is_a_failed_scan(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline, key: PrivateKey
) -> None:
    host = registry.host
    digest, desc = signed_image(client, host, repo, key, seed=907)
    other = "sha256:" + "ab" * 32
    referrer = attach(client, repo, "trivy", desc, trivy(host, repo, other, LOW))
    sign(client, host, repo, referrer, key)

    verdict = judged(gate.handle(push_event(host, repo, digest), now=T0))
    assert verdict.outcome is Outcome.FAILED
    outcome, reason = vulnerabilities(verdict)
    assert outcome is CheckOutcome.FAIL and "about another image" in reason, reason


def test_the_report_referrer_push_re_evaluates_the_image_and_is_never_judged(
    registry: LocalRegistry, client: RegistryClient, repo: str, gate: Pipeline, key: PrivateKey
) -> None:
    host = registry.host
    digest, desc = signed_image(client, host, repo, key, seed=908)
    first = judged(gate.handle(push_event(host, repo, digest), now=T0))
    assert first.outcome is Outcome.PENDING  # no report yet
    referrer = attach(client, repo, "trivy", desc, trivy(host, repo, digest, CRITICAL))
    sign(client, host, repo, referrer, key)
    event = ImageEvent(
        kind=EventKind.PUSHED,
        source="distribution",
        image=ImageRef(registry=host, repository=repo, digest=referrer),
        time=T0,
        delivery_id=f"push-{referrer}",
        user_agent=CI,
    )
    verdict = judged(gate.handle(event, now=T0 + timedelta(minutes=1)))
    assert verdict.image.digest == digest and verdict.outcome is Outcome.FAILED
    assert gate.ledger.last_verdict(host, repo, referrer) is None


# -- a late signature, through `regwarden serve` fed by the registry's notifications ----------

SERVE_POLICY = """\
apiVersion: regwarden/v1
kind: Policy
repositories:
  - match: "late/**"
    team: t
    signatures: {{required: true, cosign: {{keys: ["file://keys/cosign.pub"]}}, gracePeriod: 10m}}
    vulnerabilities: {{maxSeverity: high, scanTimeout: 10m, sources: [trivy-referrer]}}
"""


def test_a_late_signature_of_the_report_re_evaluates_its_image(tmp_path: Path) -> None:
    priv, _ = generate_keys(tmp_path)
    (tmp_path / "regwarden.yaml").write_text(SERVE_POLICY.format())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"COSIGN_PASSWORD": "pw", "PATH": "/usr/bin:/bin", "COLUMNS": "400"}
    with LocalRegistry(
        notifications=f"{url}/events/distribution",
        notification_headers={"Authorization": f"Bearer {TOKEN}"},
        notification_timeout="2s",
        notification_backoff="200ms",
    ) as reg:
        serve = Serve.start(tmp_path, tmp_path / "regwarden.yaml", port, registries=[reg.host])
        try:
            repo = "late/app"
            with RegistryClient(reg.host, user_agent=CI) as client:
                digest = push_image(client, repo, make_image(seed=909), tag="1.0.0")
            image = f"{reg.host}/{repo}@{digest}"
            signed = run_cli("sign", image, "--key", str(priv), env=env)
            assert signed.returncode == 0, signed.stderr
            report = tmp_path / "trivy.json"
            report.write_bytes(trivy(reg.host, repo, digest, CRITICAL))
            attached = run_cli(
                "attach", image, "--type", "trivy", "--report", str(report), "-o", "json", env=env
            )
            assert attached.returncode == 0, attached.stderr
            referrer = json.loads(attached.stdout)["referrer"]

            def verdict() -> str | None:
                ledger = SqliteLedger(serve.ledger_path)
                try:
                    return ledger.last_verdict(reg.host, repo, digest)
                finally:
                    ledger.close()

            # the image is signed and the report attached: only the report's signature lacks
            wait(lambda: verdict() == "PENDING", serve)
            # the report's signature arrives later: the image is judged on the report now
            late = run_cli("sign", f"{reg.host}/{repo}@{referrer}", "--key", str(priv), env=env)
            assert late.returncode == 0, late.stderr
            wait(lambda: verdict() == "FAILED", serve)
            log = serve.log.read_text()
            assert "CVE-2099-7001" in log or "1 finding" in log, log[-4000:]
        finally:
            serve.stop()


def wait(cond: Any, serve: Serve, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out\n--- serve log ---\n{serve.log.read_text()[-4000:]}")
