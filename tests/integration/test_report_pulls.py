"""The report's pulls end to end (issue #16): images pushed to the real local registry,
pulls of them fed through the real AccessMonitor (distribution pull notifications, parsed
as `regwarden serve` parses them) into a real SQLite ledger, then `regwarden report
--output json` and the HTML: most pulled, who pulls what, not pulled in N days where
tracking covers them, and "unknown since tracking began" where it does not."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.registries import PushImage

from regwarden.access import AccessMonitor, parse_distribution_access
from regwarden.devtools import LocalRegistry
from regwarden.notify import Router, StreamChannel
from regwarden.policy import load_policy_text
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration


def _pulls(registry: LocalRegistry, repo: str, image: Any, who: str, n: int, at: datetime) -> bytes:
    """A distribution notification envelope of `n` manifest pulls, as the registry sends."""
    events = [
        {
            "id": f"pull-{uuid.uuid4().hex}",
            "timestamp": (at + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "action": "pull",
            "target": {
                "mediaType": image.media_type,
                "digest": image.manifest_digest,
                "size": len(image.manifest),
                "repository": repo,
            },
            "request": {
                "id": f"r-{i}",
                "addr": "10.2.3.4:51734",
                "host": registry.host,
                "method": "GET",
                "useragent": "containerd/v1.7.13",
            },
            "actor": {"name": who},
        }
        for i in range(n)
    ]
    return json.dumps({"events": events}).encode()


def test_report_shows_most_pulled_who_pulls_what_and_unknown_pull_state(
    registry: LocalRegistry, push: PushImage, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    long_ago = now - timedelta(days=400)
    prefix = f"t/pulls-{uuid.uuid4().hex[:8]}"
    app, web = f"{prefix}/app", f"{prefix}/web"
    hot = push(app, "2.0.0", seed=201, created=long_ago)
    warm = push(app, "1.0.0", seed=202, created=long_ago)
    cold = push(app, "0.9.0", seed=203, created=long_ago)  # never pulled, tracked 100 days
    web_pulled = push(web, "nightly", seed=204, created=long_ago)
    web_cold = push(web, "old", seed=205, created=long_ago)  # never pulled, tracked 1 hour
    policy_file = tmp_path / "regwarden.yaml"
    policy_file.write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n"
        f"  - match: '{app}'\n    team: apps\n"
        f"  - match: '{web}'\n    team: web\n"
        "notifications:\n  channels:\n    out: {type: stdout}\n"
    )
    policy = load_policy_text(policy_file.read_text(), source="regwarden.yaml", base_dir="/")
    channels = {name: StreamChannel(name) for name in policy.notifications.channels}
    router = Router(lambda a: [], channels)
    ledger_path = tmp_path / "ledger.db"
    ledger = SqliteLedger(ledger_path)
    try:
        monitor = AccessMonitor.from_policy(policy, ledger, router)

        def feed(body: bytes, at: datetime) -> None:
            events = parse_distribution_access(body, content_type="application/json")
            monitor.handle(events, now=at)
            monitor.flush(now=at, force=True)

        # the app repository's pulls are tracked from 100 days ago, the web one's from 1 h
        first = now - timedelta(days=100)
        feed(_pulls(registry, app, warm, "ci", 1, first), first)
        recent = now - timedelta(hours=1)
        feed(_pulls(registry, app, hot, "system:serviceaccount:prod:deployer", 30, recent), recent)
        feed(_pulls(registry, app, warm, "ci", 5, recent), recent)
        feed(
            _pulls(registry, web, web_pulled, "system:serviceaccount:prod:deployer", 3, recent),
            recent,
        )
        assert ledger.pull_tracking_since(registry.host, app) == first
    finally:
        ledger.close()

    args = (
        "--ledger", str(ledger_path), "report", "--registry", registry.host,
        "--repository", f"{prefix}/*", "--policy", str(policy_file), "--stale-days", "30",
    )  # fmt: skip
    proc = run_cli(*args, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    pulls = json.loads(proc.stdout)["pulls"]
    assert [
        (i["repository"], i["digest"], i["pulls"], i["team"]) for i in pulls["most_pulled"]
    ] == [
        (app, hot.manifest_digest, 30, "apps"),
        (app, warm.manifest_digest, 6, "apps"),
        (web, web_pulled.manifest_digest, 3, "web"),
    ]
    assert pulls["total_pulls"] == 39 and pulls["tracked_repositories"] == 2
    assert [(g["name"], g["pulls"]) for g in pulls["by_team"]] == [("apps", 36), ("web", 3)]
    who = {p["principal"]: p for p in pulls["principals"]}
    deployer = who["system:serviceaccount:prod:deployer"]
    assert deployer["pulls"] == 33 and deployer["images"] == 2
    assert [(g["name"], g["pulls"]) for g in deployer["repositories"]] == [(app, 30), (web, 3)]
    assert [(g["name"], g["pulls"]) for g in who["ci"]["repositories"]] == [(app, 6)]
    # tracked for 100 days: the app image nobody pulled is not pulled within 30 days ...
    assert [(r["digest"], r["detail"]) for r in pulls["not_pulled"]] == [
        (cold.manifest_digest, "last pulled: never")
    ]
    # ... but the web one, tracked for an hour, is unknown (never "not pulled")
    assert [(u["repository"], u["images"]) for u in pulls["unknown"]] == [(web, 1)]
    assert pulls["unknown"][0]["tracking_since"].startswith(recent.date().isoformat())
    assert web_cold.manifest_digest not in {r["digest"] for r in pulls["not_pulled"]}

    page = tmp_path / "report.html"
    proc = run_cli(*args, "--out", str(page))
    assert proc.returncode == 0, proc.stderr
    html = page.read_text()
    assert "<h2 id='pulls'>Pulls</h2>" in html and "Most pulled images" in html
    assert "system:serviceaccount:prod:deployer" in html and "Who pulls what" in html
    assert f"unknown since tracking began {recent.date().isoformat()}" in html
