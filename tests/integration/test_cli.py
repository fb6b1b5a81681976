"""The `regwarden` command as a user runs it: real process, real registry, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.cli import run_cli
from support.registries import PushImage

from regwarden.devtools import LocalRegistry, free_port, make_multiarch, push_image
from regwarden.oci import RegistryClient

pytestmark = pytest.mark.integration


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env)


def test_images_json_groups_tags_and_sizes_indexes(
    registry: LocalRegistry, client: RegistryClient, repo: str, push: PushImage
) -> None:
    a = push(
        repo,
        "1.0.0",
        layers=2,
        layer_size=100,
        seed=1,
        labels={"org.opencontainers.image.source": "x"},
    )
    client.put_manifest(repo, "stable", a.manifest, a.media_type)
    index = make_multiarch(layers=1, layer_size=50, seed=2)
    push_image(client, repo, index, tag="2.0.0")

    proc = run("images", f"{registry.host}/{repo}", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["digest"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {a.manifest_digest, index.manifest_digest}
    assert rows[a.manifest_digest]["tags"] == ["1.0.0", "stable"]
    assert rows[a.manifest_digest]["size"] == len(a.config) + sum(len(b) for b in a.layers)
    idx = rows[index.manifest_digest]
    assert idx["tags"] == ["2.0.0"]
    assert len(idx["platforms"]) == 2
    assert idx["size"] == sum(len(c.config) + sum(len(b) for b in c.layers) for c in index.children)

    table = run("images", f"{registry.host}/{repo}")
    assert table.returncode == 0
    assert "1.0.0, stable" in table.stdout and "2 image(s)" in table.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("images", "ghcr.io/Acme/api"), 2, "must be lowercase"),
        (("images", "127.0.0.1:5000/a:tag"), 2, "expected a repository"),
        (("images", "europe-docker.pkg.dev/proj/repo/img"), 2, "Google Artifact Registry"),
        (("retention", "plan", "--policy", "p.yaml"), 2, "needs the registry host"),
        (("images",), 2, "Missing argument"),
        (("images", "x", "--bogus"), 2, "No such option"),
    ],
)
def test_usage_errors_exit_2_without_traceback(
    args: tuple[str, ...], code: int, message: str
) -> None:
    proc = run(*args)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_registry_exits_3() -> None:
    port = free_port()  # nothing listens here
    proc = run("images", f"127.0.0.1:{port}/nothing")
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr


def test_an_unreachable_acr_control_plane_exits_3_naming_the_registry() -> None:
    """ACR's provider has landed (it was a placeholder answering exit 2): a registry it
    cannot reach is an infrastructure error, one line, exit 3. Its control plane is sent
    to a closed loopback port, so nothing leaves the machine."""
    env = {**os.environ, "REGWARDEN_AZURE_ENDPOINT_ACR": f"https://127.0.0.1:{free_port()}"}
    proc = run("images", "acme.azurecr.io/api", env=env)
    assert proc.returncode == 3, proc.stderr
    assert "ACR acme.azurecr.io" in proc.stderr and "Connection refused" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plain_http_to_remote_host_needs_insecure() -> None:
    proc = run("images", "registry.invalid/x")
    assert proc.returncode == 3  # https attempted (and unreachable), never plain http
    proc = run("--insecure", "images", "registry.invalid/x")
    assert proc.returncode == 3
    assert "http://registry.invalid" in proc.stderr


def test_missing_repository_is_not_an_infrastructure_error(registry: LocalRegistry) -> None:
    proc = run("images", f"{registry.host}/does/not/exist")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_teaches() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for word in ("images", "verify", "retention", "quarantine", "policy", "demo", "Exit codes"):
        assert word in proc.stdout


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("regwarden ")


def test_policy_validate_reports_path_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "regwarden.yaml"
    bad.write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n"
        "  - match: 'payments/**'\n    vulnerabilities:\n      maxSeverity: extreme\n"
    )
    proc = run("policy", "validate", str(bad), "--output", "json")
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    assert report["valid"] is False
    (problem,) = report["problems"]
    assert problem["path"] == "repositories[0].vulnerabilities.maxSeverity"
    assert problem["line"] == 6
    text = run("policy", "validate", str(bad))
    assert f"{bad}:6: repositories[0].vulnerabilities.maxSeverity" in text.stderr


def test_policy_schema_is_json_schema() -> None:
    proc = run("policy", "schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert "repositories" in json.dumps(schema)


def test_example_policy_validates() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "regwarden.yaml"
    proc = run("policy", "validate", str(example))
    assert proc.returncode == 0, proc.stderr


def test_invoke_on_push_runs_the_pipeline_in_process(
    registry: LocalRegistry, repo: str, push: PushImage, tmp_path: Path
) -> None:
    """`regwarden invoke on_push EVENT` with a distribution envelope: an unsigned image in a
    repository whose policy needs signatures fails and is quarantined (exit 1)."""
    image = push(repo, "1.0.0", seed=77)
    key = tmp_path / "cosign.pub"
    from regwarden.signatures.keys import generate_private_key

    pem = generate_private_key("ecdsa-p256").public_key.pem
    key.write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    policy = tmp_path / "regwarden.yaml"
    policy.write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n"
        f"  - match: '{repo.split('/')[0]}/**'\n    team: payments\n"
        "    signatures: {required: true, cosign: {keys: ['file://cosign.pub']}, "
        "gracePeriod: 1s}\n"
    )
    event = tmp_path / "push.json"
    event.write_text(
        json.dumps(
            {
                "events": [
                    {
                        "id": "invoke-1",
                        "timestamp": "2026-01-01T00:00:00Z",
                        "action": "push",
                        "target": {
                            "mediaType": image.media_type,
                            "digest": image.manifest_digest,
                            "repository": repo,
                            "tag": "1.0.0",
                            "size": len(image.manifest),
                        },
                        "request": {"host": registry.host, "useragent": "ci/1.0", "method": "PUT"},
                    }
                ]
            }
        )
    )
    ledger = tmp_path / "ledger.db"
    proc = run(
        "--ledger",
        str(ledger),
        "invoke",
        "on_push",
        str(event),
        "--policy",
        str(policy),
        "--output",
        "json",
    )
    assert proc.returncode == 1, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["outcome"] == "FAILED"
    assert row["actions"][0].startswith("quarantine (move")
    again = run(
        "--ledger",
        str(ledger),
        "invoke",
        "on_push",
        str(event),
        "--policy",
        str(policy),
        "--output",
        "json",
    )
    assert json.loads(again.stdout)[0]["ignored"] == "duplicate delivery"
    # it was moved: checking it in its old repository is a clean "does not exist"
    check = run(
        "--ledger",
        str(ledger),
        "check",
        f"{registry.host}/{repo}@{image.manifest_digest}",
        "--policy",
        str(policy),
    )
    assert check.returncode == 2
    assert "does not exist" in check.stderr
