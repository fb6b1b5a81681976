"""A multi-arch index on GAR judged on Artifact Analysis's scan of its linux/amd64 image,
through the Cloud Run functions: `on_push` for every `gcr` message `skopeo copy --all`
made, then `on_scan` for the occurrences Artifact Analysis files under the amd64 image
(none under the index: it scans only the first linux/amd64 image of a manifest list).

The occurrence names the child; the child is judged with its index, so its scan event
judges the index at once, not at the index's recheck when `scanTimeout` runs out.
Harness: `support.gcp_harness` (the real docker-registry behind FakeGar, FakeGrafeas,
FakePubSub, FakeTasks).
"""

from __future__ import annotations

import json
import shutil
from contextlib import closing
from datetime import timedelta
from typing import Any

import pytest
from support import gcp_harness
from support.gcp_harness import HOST, PROJECT, T0, Gcp, image

from regwarden.devtools import make_multiarch
from regwarden.scanning.artifact_analysis import resource_url

gcp = gcp_harness.gcp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo"),
]

POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: gar}}
defaults:
  mode: enforce
  quarantine: {{strategy: retag}}
repositories:
  - match: "{PROJECT}/scanned/**"
    team: bravo
    vulnerabilities: {{maxSeverity: high, scanTimeout: 30m}}
"""


@pytest.fixture
def gcp_policy() -> str:
    return POLICY


def results(gcp: Gcp, messages: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        status, answer = gcp.deliver(target, message, mode="binary")
        assert status == 200, answer
        out.extend(answer["results"])
    return out


def test_a_critical_finding_on_the_amd64_image_fails_the_held_index_at_once(gcp: Gcp) -> None:
    repo = image("scanned")
    index = make_multiarch(platforms=("linux/arm64", "linux/amd64"), seed=4301, layer_size=128)
    start = len(gcp.gar.gcr)
    digest = gcp.push_content(repo, "1.0", index)
    amd64 = next(
        c.manifest_digest
        for c in index.children
        if (c.platform or {}).get("architecture") == "amd64"
    )
    url = resource_url(HOST, repo, amd64)
    gcp.grafeas.set_discovery(url, "SCANNING")

    pushed = results(gcp, gcp.gcr(start), "on_push")

    (early,) = [r for r in pushed if "verdict" in r]
    assert early["image"].endswith(f"{repo}:1.0@{digest}") and early["verdict"] == "PENDING"
    assert early["recheck_at"] == (T0 + timedelta(minutes=30)).isoformat()
    # enforce with retag holds a PENDING image: its tag leaves through the AR tags API
    assert any(a.startswith("quarantine") for a in early["actions"])
    assert gcp.gar.calls("DELETE", r".*/packages/[^/]+/tags/1\.0")

    seen = len(gcp.grafeas.notifications)
    gcp.grafeas.add_vulnerability(
        url, "CVE-2026-0001", "CRITICAL", package="openssl", version="3.0.1", fixed="3.0.2"
    )
    gcp.grafeas.set_discovery(url, "FINISHED_SUCCESS")
    gcp.at(T0 + timedelta(minutes=6))  # past the children's settle window, before the recheck

    scanned = results(gcp, gcp.occurrences(seen), "on_scan")

    verdicts = [r for r in scanned if "verdict" in r]
    assert verdicts, scanned
    assert all(r["image"].endswith(f"{repo}@{digest}") for r in verdicts)  # the index's
    assert verdicts[-1]["verdict"] == "FAILED"
    (alert,) = [a for a in gcp.alerts() if a["attributes"]["verdict"] == "FAILED"]
    assert (alert["attributes"]["severity"], alert["attributes"]["team"]) == ("critical", "bravo")
    body = json.loads(alert["data"])
    reasons = json.dumps(body)
    assert "CVE-2026-0001" in reasons
    assert f"only this index's linux/amd64 image {amd64}" in reasons
    assert "not scanned: linux/arm64" in reasons
    with closing(gcp.ledger()) as ledger:
        assert ledger.last_verdict(HOST, repo, digest) == "FAILED"
        assert ledger.last_verdict(HOST, repo, amd64) is None  # never judged on its own
        assert ledger.quarantined(HOST, repo, digest) is not None
