"""What `check`, `invoke` and `serve` need before they start, as a user runs them (real
process, real registry): `check` takes no action, so it needs no alert-channel secret;
`serve` and `invoke` refuse to start (exit 2) without one, and on a policy with settings
no code would carry out."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.cli import run_cli
from support.registries import PushImage

from regwarden.devtools import LocalRegistry

pytestmark = pytest.mark.integration

HOOK_VARIABLE = "REGWARDEN_SECRET_TEAM_HOOK"
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
repositories:
  - match: "{top}/**"
    team: payments
    tags: {{pattern: semver}}
{extra}notifications:
  channels:
    hook: {{type: webhook, url: "secret://team/hook"}}
  routes:
    - {{match: {{team: payments}}, to: [hook]}}
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGWARDEN_")}
    # serve would block forever if it started: run_cli's timeout fails the test
    return run_cli(*args, env={**base, **(env or {})})


def write_policy(tmp_path: Path, repo: str, extra: str = "") -> Path:
    policy = tmp_path / "regwarden.yaml"
    policy.write_text(POLICY.format(top=repo.split("/")[0], extra=extra))
    return policy


def push_event(tmp_path: Path, registry: LocalRegistry, repo: str, digest: str) -> Path:
    event = tmp_path / "push.json"
    target: dict[str, object] = {"mediaType": "application/vnd.oci.image.manifest.v1+json"}
    target |= {"digest": digest, "repository": repo, "tag": "1.0.0", "size": 1}
    body = {
        "id": "startup-1",
        "timestamp": "2026-01-01T00:00:00Z",
        "action": "push",
        "target": target,
        "request": {"host": registry.host, "useragent": "ci/1.0", "method": "PUT"},
    }
    event.write_text(json.dumps({"events": [body]}))
    return event


def test_check_needs_no_channel_secret_but_invoke_and_serve_do(
    registry: LocalRegistry, repo: str, push: PushImage, tmp_path: Path
) -> None:
    digest = push(repo, "1.0.0", seed=8801).digest
    policy = write_policy(tmp_path, repo)
    ledger = ("--ledger", str(tmp_path / "ledger.db"))

    check = run(*ledger, "check", f"{registry.host}/{repo}:1.0.0", "--policy", str(policy))
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("PASSED")

    event = push_event(tmp_path, registry, repo, digest)
    invoke = run(*ledger, "invoke", "on_push", str(event), "--policy", str(policy))
    assert invoke.returncode == 2, invoke.stdout
    assert "secret 'team/hook' not found" in invoke.stderr and HOOK_VARIABLE in invoke.stderr

    tokens = tmp_path / "tokens"
    tokens.write_text("t0ken\n")
    serve = run(
        *ledger, "serve", "--policy", str(policy), "--auth-token-file", str(tokens), "--port", "0"
    )
    assert serve.returncode == 2, serve.stdout
    assert "secret 'team/hook' not found" in serve.stderr

    # with the secret set, invoke runs the pipeline (and only then needs the hook)
    again = run(
        *ledger,
        "invoke",
        "on_push",
        str(event),
        "--policy",
        str(policy),
        env={HOOK_VARIABLE: "http://127.0.0.1:9/unused"},
    )
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("extra", "path", "why"),
    [
        (
            "    vulnerabilities: {maxSeverity: high, sources: [trivy-referrer]}\n",
            "repositories[0].vulnerabilities.sources[0]",
            "scan source 'trivy-referrer' counts only signed report referrers",
        ),
        (
            "    quarantine: {strategy: lock}\n",
            "repositories[0].quarantine.strategy",
            "quarantine strategy 'lock' needs a registry that locks manifests (acr)",
        ),
    ],
)
def test_serve_invoke_and_check_refuse_settings_no_code_would_carry_out(
    registry: LocalRegistry, repo: str, tmp_path: Path, extra: str, path: str, why: str
) -> None:
    policy = write_policy(tmp_path, repo, extra)
    env = {HOOK_VARIABLE: "http://127.0.0.1:9/unused"}
    ledger = ("--ledger", str(tmp_path / "ledger.db"))
    validate = run("policy", "validate", str(policy))
    assert validate.returncode == 2 and path in validate.stderr and why in validate.stderr

    event = push_event(tmp_path, registry, repo, "sha256:" + "0" * 64)
    tokens = tmp_path / "tokens"
    tokens.write_text("t0ken\n")
    for args in (
        ("invoke", "on_push", str(event), "--policy", str(policy)),
        ("serve", "--policy", str(policy), "--auth-token-file", str(tokens), "--port", "0"),
        ("check", f"{registry.host}/{repo}:1.0.0", "--policy", str(policy)),
    ):
        proc = run(*ledger, *args, env=env)
        assert proc.returncode == 2, (args[0], proc.stdout, proc.stderr)
        assert "refusing to start" in proc.stderr and path in proc.stderr, args[0]
        assert why in proc.stderr, args[0]
