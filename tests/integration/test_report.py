"""`regwarden report` on the real local registry: images pushed by the project's devtools
(two images over the same layers, so unique storage is smaller than the per-image sum),
a ledger filled by the real pipeline (`invoke on_push`: an unsigned push quarantined,
then released with `quarantine release`), the JSON's shape, and the trend drawn from two
successive reports kept in the ledger."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.registries import PushImage

from regwarden.devtools import LocalRegistry

pytestmark = pytest.mark.integration

BASE = "org.opencontainers.image.base.name"


def _event(registry: LocalRegistry, repo: str, image: Any, tag: str) -> dict[str, Any]:
    return {
        "events": [
            {
                "id": f"report-{uuid.uuid4().hex}",
                "timestamp": "2026-01-01T00:00:00Z",
                "action": "push",
                "target": {
                    "mediaType": image.media_type,
                    "digest": image.manifest_digest,
                    "repository": repo,
                    "tag": tag,
                    "size": len(image.manifest),
                },
                "request": {"host": registry.host, "useragent": "ci/1.0", "method": "PUT"},
            }
        ]
    }


@pytest.fixture
def world(registry: LocalRegistry, push: PushImage, tmp_path: Path) -> dict[str, Any]:
    """Two teams' repositories under a fresh prefix; one unsigned push judged by the real
    pipeline (quarantined by move), then released by an operator."""
    prefix = f"t/report-{uuid.uuid4().hex[:8]}"
    app = push(f"{prefix}/app", "1.0.0", seed=101, layers=2, layer_size=4096)
    # the same blobs, another manifest: shares both layers and the config with `app`
    app_latest = push(
        f"{prefix}/app",
        "latest",
        seed=101,
        layers=2,
        layer_size=4096,
        annotations={BASE: "docker.io/library/debian:12"},
    )
    web = push(f"{prefix}/web", "nightly", seed=102, layers=1, layer_size=2048)
    key = tmp_path / "cosign.pub"
    from regwarden.signatures.keys import generate_private_key

    pem = generate_private_key("ecdsa-p256").public_key.pem
    key.write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    policy = tmp_path / "regwarden.yaml"
    policy.write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n"
        f"  - match: '{prefix}/pay'\n    team: payments\n"
        "    signatures: {required: true, cosign: {keys: ['file://cosign.pub']}, "
        "gracePeriod: 1s}\n"
        f"  - match: '{prefix}/app'\n    team: apps\n"
        f"  - match: '{prefix}/web'\n    team: web\n"
    )
    ledger = tmp_path / "ledger.db"
    pay = push(f"{prefix}/pay", "2.0.0", seed=103, layers=1, layer_size=1024)
    event = tmp_path / "push.json"
    event.write_text(json.dumps(_event(registry, f"{prefix}/pay", pay, "2.0.0")))
    judged = run_cli(
        "--ledger", str(ledger), "invoke", "on_push", str(event), "--policy", str(policy),
        "--output", "json",
    )  # fmt: skip
    assert judged.returncode == 1, judged.stderr
    assert json.loads(judged.stdout)[0]["outcome"] == "FAILED"
    released = run_cli(
        "--ledger", str(ledger), "quarantine", "release",
        f"{registry.host}/{prefix}/pay@{pay.manifest_digest}",
        "--reason", "false positive", "--by", "alice",
    )  # fmt: skip
    assert released.returncode == 0, released.stderr
    return {
        "prefix": prefix,
        "policy": policy,
        "ledger": ledger,
        "images": {"app": app, "app_latest": app_latest, "web": web, "pay": pay},
    }


def _report(registry: LocalRegistry, world: dict[str, Any], *args: str) -> Any:
    proc = run_cli(
        "--ledger", str(world["ledger"]), "report", "--registry", registry.host,
        "--repository", f"{world['prefix']}/*", "--policy", str(world["policy"]), *args,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def _unique(*images: Any) -> tuple[int, int]:
    """Unique bytes and blobs, counted here from what was pushed (config + layers)."""
    blobs: dict[str, int] = {}
    for image in images:
        blobs[image.config_digest] = len(image.config)
        for digest, layer in zip(image.layer_digests, image.layers, strict=True):
            blobs[digest] = len(layer)
    return sum(blobs.values()), len(blobs)


def test_report_json_counts_unique_blobs_teams_quarantines_and_a_trend(
    registry: LocalRegistry, world: dict[str, Any], tmp_path: Path
) -> None:
    imgs = world["images"]
    first = json.loads(_report(registry, world, "-o", "json").stdout)
    assert set(first) >= {
        "registry", "generated_at", "images", "repositories", "teams", "storage", "age",
        "security", "hygiene", "retention_history",
    }  # fmt: skip
    assert first["images"] == 4  # app 1.0.0, app latest, web, pay (restored by the release)
    unique, blobs = _unique(imgs["app"], imgs["app_latest"], imgs["web"], imgs["pay"])
    storage = first["storage"]
    assert (storage["unique_bytes"], storage["unique_blobs"]) == (unique, blobs)
    # the two app manifests share every blob: the per-image sum counts them twice
    app_bytes, _ = _unique(imgs["app"])
    assert storage["naive_bytes"] == unique + app_bytes
    assert "garbage collection" in storage["note"]
    by_team = {g["name"]: g for g in storage["by_team"]}
    assert by_team["apps"] == {"name": "apps", "bytes": app_bytes, "images": 2}
    assert {t["team"] for t in first["teams"]} == {"apps", "web", "payments"}
    (q,) = first["security"]["quarantines"]
    assert q["digest"] == imgs["pay"].manifest_digest
    assert q["team"] == "payments"
    assert q["released_at"] is not None
    assert q["released_because"] == "alice: false positive"
    assert q["reason"] == "image is not signed"
    assert first["security"]["verdicts"].get("FAILED") == 1
    assert first["security"]["unsigned"] == 4
    hygiene = first["hygiene"]
    assert [r["repository"] for r in hygiene["latest_in_use"]] == [f"{world['prefix']}/app"]
    assert hygiene["base_images"] == {"docker.io/library/debian:12": 1}
    assert "nightly" in hygiene["non_semver_examples"]
    assert first["age"]["retention_plan"] is not None  # a plan was made: nothing deleted
    assert len(storage["trend"]) == 1

    second = json.loads(_report(registry, world, "-o", "json").stdout)
    trend = second["storage"]["trend"]
    assert len(trend) == 2  # the first report's summary, kept in the ledger, then this one
    assert trend[0]["at"] == first["generated_at"]
    assert [p["bytes"] for p in trend] == [unique, unique]


def test_report_html_is_one_offline_file(
    registry: LocalRegistry, world: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    _report(registry, world, "--out", str(out))
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") >= 5  # storage by team, by repository, trend, ages, signatures
    for needle in ("<script", "<link", 'src="http', 'href="http', "url(http", "@import"):
        assert needle not in page
    assert "alice: false positive" in page
    assert "garbage collection" in page


def test_report_refuses_html_without_out(registry: LocalRegistry, tmp_path: Path) -> None:
    proc = run_cli(
        "--ledger", str(tmp_path / "l.db"), "report", "--registry", registry.host,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--out" in proc.stderr
