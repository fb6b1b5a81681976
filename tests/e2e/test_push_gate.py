"""Push → notification → verdict → action → alert, end to end over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
from support.gate import TOKEN, Gate, now

from regwarden.devtools import Vuln, make_image, push_image, trivy_report, vuln_predicate
from regwarden.errors import NotFound
from regwarden.oci import RegistryClient
from regwarden.signatures import (
    attest_legacy,
    existing_attachment,
    publish,
    sign_legacy,
    signature_tag,
)
from regwarden.signatures.keys import load_private_key

pytestmark = pytest.mark.e2e

CI_AGENT = "ci-pipeline/1.0"  # pushes as a CI system would, not as regwarden


def ci_client(gate: Gate) -> RegistryClient:
    return RegistryClient(gate.host, user_agent=CI_AGENT, backoff=0.05)


def sign(gate: Gate, client: RegistryClient, repo: str, digest: str) -> None:
    key = load_private_key(gate.key.read_bytes(), "pw")
    tag = signature_tag(digest, "sig")
    art = sign_legacy(
        image_digest=digest,
        docker_reference=f"{gate.host}/{repo}",
        key=key,
        existing_manifest=existing_attachment(client, repo, tag),
    )
    publish(client, repo, art)


def attest_scan(
    gate: Gate, client: RegistryClient, repo: str, digest: str, vulns: list[Vuln]
) -> None:
    key = load_private_key(gate.key.read_bytes(), "pw")
    t = now()
    predicate = vuln_predicate(
        trivy_report(f"{gate.host}/{repo}", vulns, created=t),
        started=t - timedelta(seconds=5),
        finished=t,
    )
    tag = signature_tag(digest, "att")
    art = attest_legacy(
        image_digest=digest,
        repository=f"{gate.host}/{repo}",
        key=key,
        predicate_type="vuln",
        predicate=predicate,
        existing_manifest=existing_attachment(client, repo, tag),
    )
    publish(client, repo, art)


LOW = [Vuln("CVE-2099-0001", "LOW", "zlib", "1.3", "1.3.1")]
CRITICAL = [
    Vuln("CVE-2099-0002", "CRITICAL", "openssl", "3.0.1", "3.0.15", 9.8),
    Vuln("CVE-2099-0003", "HIGH", "busybox", "1.36", None),
]


def exists(client: RegistryClient, repo: str, digest: str) -> bool:
    return client.head_manifest(repo, digest) is not None


def test_signed_clean_image_passes_after_signature_arrives(gate: Gate) -> None:
    repo = "apps/clean"
    with ci_client(gate) as client:
        image = make_image(seed=101)
        digest = push_image(client, repo, image, tag="1.0.0")
        gate.wait(lambda: gate.verdict(repo, digest) == "PENDING", what="PENDING verdict")
        sign(gate, client, repo, digest)  # the signature arrives after the image
        attest_scan(gate, client, repo, digest, LOW)
        gate.wait(lambda: gate.verdict(repo, digest) == "PASSED", what="PASSED verdict")
        assert exists(client, repo, digest)
        assert client.head_manifest(repo, "1.0.0") is not None
    assert not [a for a in gate.alerts() if a["image"].endswith(digest)]  # nothing to report


def test_unsigned_image_is_quarantined_after_grace(gate: Gate) -> None:
    repo = "apps/unsigned"
    with ci_client(gate) as client:
        digest = push_image(client, repo, make_image(seed=102), tag="2.0.0")
        gate.wait(lambda: gate.verdict(repo, digest) == "FAILED", what="FAILED after grace")
        gate.wait(lambda: not exists(client, repo, digest), what="moved out of the repo")
        assert exists(client, f"quarantine/{repo}", digest)
    alert = gate.wait(
        lambda: [a for a in gate.alerts() if a["image"].endswith(digest)], what="alert"
    )[0]
    assert alert["outcome"] == "FAILED" and alert["action"] == "quarantine"
    assert alert["team"] == "payments"
    assert "quarantine release" in alert["release_command"]
    assert any("signatures" in r for r in alert["reasons"])


def test_critical_finding_is_quarantined_with_findings_in_alert(gate: Gate) -> None:
    repo = "apps/vulnerable"
    with ci_client(gate) as client:
        digest = push_image(client, repo, make_image(seed=103), tag="3.0.0")
        sign(gate, client, repo, digest)
        attest_scan(gate, client, repo, digest, CRITICAL)
        gate.wait(lambda: gate.verdict(repo, digest) == "FAILED", what="FAILED verdict")
        gate.wait(lambda: exists(client, f"quarantine/{repo}", digest), what="quarantined")
    alert = gate.wait(
        lambda: [a for a in gate.alerts() if a["image"].endswith(digest)], what="alert"
    )[0]
    assert alert["severity"] == "critical"  # a name, as every channel prints it
    found = {f["id"]: f for f in alert["top_findings"]}
    assert found["CVE-2099-0002"]["severity"] == "critical"
    assert found["CVE-2099-0002"]["fixed_version"] == "3.0.15"


def test_immutable_tag_overwrite_is_quarantined_and_rolled_back(gate: Gate) -> None:
    repo = "apps/immutable"
    with ci_client(gate) as client:
        first = push_image(client, repo, make_image(seed=104), tag="4.0.0")
        sign(gate, client, repo, first)
        attest_scan(gate, client, repo, first, LOW)
        gate.wait(lambda: gate.verdict(repo, first) == "PASSED", what="first PASSED")
        second = push_image(client, repo, make_image(seed=105), tag="4.0.0")
        sign(gate, client, repo, second)
        attest_scan(gate, client, repo, second, LOW)
        gate.wait(lambda: gate.verdict(repo, second) == "FAILED", what="overwrite FAILED")
        gate.wait(lambda: exists(client, f"quarantine/{repo}", second), what="quarantined")
        # the tag points at the image that passed again
        gate.wait(
            lambda: (
                (client.head_manifest(repo, "4.0.0") or None) is not None
                and client.head_manifest(repo, "4.0.0").digest == first
            ),  # type: ignore[union-attr]
            what="tag rolled back",
        )


def test_duplicate_delivery_acts_once(gate: Gate) -> None:
    repo = "apps/dup"
    with ci_client(gate) as client:
        digest = push_image(client, repo, make_image(seed=106), tag="5.0.0")
        gate.wait(lambda: gate.verdict(repo, digest), what="first verdict")
    envelope = {
        "events": [
            {
                "id": "dup-event-1",
                "timestamp": now().isoformat(),
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "repository": repo,
                    "tag": "5.0.0",
                    "size": 1,
                },
                "request": {"host": gate.host, "useragent": CI_AGENT, "method": "PUT"},
                "actor": {},
                "source": {"addr": "x"},
            }
        ]
    }
    for _ in range(2):
        r = httpx.post(
            f"{gate.serve_url}/events/distribution",
            json=envelope,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 202
    gate.wait(lambda: gate.verdict(repo, digest) == "FAILED", what="FAILED")
    gate.wait(lambda: [a for a in gate.alerts() if a["image"].endswith(digest)], what="alert")
    from regwarden.store import SqliteLedger

    ledger = SqliteLedger(gate.ledger_path)
    actions = [a for a in ledger.actions() if a.digest == digest and a.kind == "quarantine"]
    ledger.close()
    assert len(actions) == 1
    assert len([a for a in gate.alerts() if a["image"].endswith(digest)]) == 1


def test_receiver_rejects_bad_callers_and_bodies(gate: Gate) -> None:
    url = f"{gate.serve_url}/events/distribution"
    assert (
        httpx.post(url, content=b"{}", headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    assert httpx.post(url, content=b"{}").status_code == 401
    bad = httpx.post(url, content=b"{not json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bad.status_code == 400
    assert httpx.get(f"{gate.serve_url}/healthz").json()["ok"] is True


def test_move_resumes_after_a_500_between_copy_and_delete(gate: Gate) -> None:
    repo = "apps/flaky"
    # the first manifest DELETE (regwarden's, after the copy) fails twice, then succeeds
    gate.proxy.inject(500, count=2, method="DELETE", path=r"/v2/apps/flaky/manifests/")
    with ci_client(gate) as client:
        digest = push_image(client, repo, make_image(seed=107), tag="6.0.0")
        gate.wait(lambda: gate.verdict(repo, digest) == "FAILED", what="FAILED")
        gate.wait(lambda: not exists(client, repo, digest), timeout=60, what="move finished")
        assert exists(client, f"quarantine/{repo}", digest)
    assert gate.proxy.count(method="DELETE", path=r"/v2/apps/flaky/manifests/") >= 3


def test_release_restores_the_tags(gate: Gate) -> None:
    repo = "apps/release"
    with ci_client(gate) as client:
        digest = push_image(client, repo, make_image(seed=108), tag="7.0.0")
        gate.wait(
            lambda: (
                exists(client, f"quarantine/{repo}", digest) and not exists(client, repo, digest)
            ),
            what="quarantined",
        )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "regwarden",
            "--ledger",
            str(gate.ledger_path),
            "quarantine",
            "release",
            f"{gate.host}/{repo}@{digest}",
            "--reason",
            "approved by security",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["restoredTags"] == ["7.0.0"]
    with ci_client(gate) as client:
        assert client.head_manifest(repo, "7.0.0").digest == digest  # type: ignore[union-attr]
        with pytest.raises(NotFound):
            client.get_manifest(f"quarantine/{repo}", digest)
    # the release's own writes do not put it back in quarantine
    import time

    time.sleep(1.5)
    with ci_client(gate) as client:
        assert exists(client, repo, digest)
