"""Secrets from Key Vault (`functions/azure/_keyvault.py`), driven through
azure-keyvault-secrets' real SecretClient at FakeKeyVault (HTTPS with a test CA, Key
Vault's challenge auth): the 401 challenge then the bearer token, the warm instance's
cache and `fresh`, a missing, forbidden or disabled secret named (never its value), Key
Vault's name rule checked before any request, and a policy's Slack webhook
`secret://slack-hook` resolved through the vault and delivered to."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from support.fake_keyvault import RESOURCE, FakeKeyVault
from support.loopback import LoopbackServer

from functions.azure import _keyvault
from functions.azure._keyvault import KeyVaultSecrets, fetch_secret, vault_url
from regwarden import azure_clients
from regwarden.errors import UsageError
from regwarden.model import Outcome, Severity
from regwarden.notify import Alert, build_channels
from regwarden.policy import load_policy_text, policy_secrets
from regwarden.reference import ImageRef
from regwarden.warm import SecretEnv

pytest.importorskip("azure.keyvault.secrets")

VAULT = "https://acme-regwarden.vault.azure.net"


@pytest.fixture
def vault() -> Iterator[FakeKeyVault]:
    with FakeKeyVault() as fake:
        yield fake


def _env(vault: FakeKeyVault) -> dict[str, str]:
    return {
        "REGWARDEN_KEY_VAULT": VAULT,
        "REGWARDEN_AZURE_ENDPOINT_KEYVAULT": vault.url,
        "REGWARDEN_AZURE_CA_BUNDLE": vault.ca_file,
    }


def test_a_secret_is_read_after_key_vaults_challenge_with_a_bearer_token(
    vault: FakeKeyVault,
) -> None:
    vault.put("slack-hook", "https://hooks.slack.test/services/T0/B0/xyz")
    credential = vault.credential()
    secrets = KeyVaultSecrets(_env(vault), credential=credential)
    assert secrets("secret://slack-hook") == "https://hooks.slack.test/services/T0/B0/xyz"
    # the SDK's challenge: first without a token (401 + WWW-Authenticate), then with one
    assert [(s.path, s.authorization, s.status) for s in vault.requests] == [
        ("/secrets/slack-hook/", None, 401),
        ("/secrets/slack-hook/", f"Bearer {vault.token}", 200),
    ]
    assert credential.scopes == [(f"{RESOURCE}/.default",)]
    assert secrets.vault == vault.url


def test_values_are_cached_per_warm_instance_and_fresh_reads_past_the_cache(
    vault: FakeKeyVault,
) -> None:
    vault.put("hmac-key", "first-value-0001")
    secrets = KeyVaultSecrets(_env(vault), credential=vault.credential())
    assert secrets("hmac-key") == "first-value-0001"
    assert secrets("secret://hmac-key") == "first-value-0001"
    assert vault.accesses("hmac-key") == 1  # the second read came from the cache
    vault.put("hmac-key", "second-value-002")
    assert secrets("hmac-key") == "first-value-0001"  # until it ages out
    assert secrets("hmac-key", fresh=True) == "second-value-002"
    assert vault.accesses("hmac-key") == 2
    assert secrets("hmac-key") == "second-value-002"
    expired = KeyVaultSecrets(_env(vault), credential=vault.credential(), max_age=0.0)
    expired("hmac-key")
    expired("hmac-key")
    assert vault.accesses("hmac-key") == 4


def test_a_missing_forbidden_or_disabled_secret_names_the_secret_and_vault(
    vault: FakeKeyVault,
) -> None:
    vault.put("locked", "locked-value-123")
    vault.forbid("locked")
    vault.put("retired", "retired-value-45", enabled=False)
    secrets = KeyVaultSecrets(_env(vault), credential=vault.credential())
    with pytest.raises(UsageError, match=rf"secret 'nope' in Key Vault {vault.url}: not found"):
        secrets("nope")
    with pytest.raises(UsageError) as denied:
        secrets("locked")
    assert "secret 'locked'" in str(denied.value)
    assert "access denied (HTTP 403 Forbidden/ForbiddenByRbac)" in str(denied.value)
    assert "Key Vault Secrets User" in str(denied.value)
    assert "locked-value-123" not in str(denied.value)
    with pytest.raises(UsageError, match=r"secret 'retired' in Key Vault .*: is disabled"):
        secrets("retired")
    # a failed read is not cached: the secret is read again once it exists
    vault.put("nope", "now-it-exists-1")
    assert secrets("nope") == "now-it-exists-1"


def test_a_token_the_vault_refuses_is_an_error_naming_the_secret(vault: FakeKeyVault) -> None:
    vault.put("hook", "hook-value-00001")
    secrets = KeyVaultSecrets(_env(vault), credential=FakeKeyVault().credential())
    with pytest.raises(UsageError, match=r"secret 'hook' in Key Vault .*: HTTP 401 Unauthorized"):
        secrets("hook")
    assert vault.accesses("hook") == 0


@pytest.mark.parametrize(
    "name", ["regwarden/slack-hook", "slack_hook", "slack.hook", "", "x" * 128, "secret://"]
)
def test_names_outside_key_vaults_rule_are_refused_before_any_request(
    vault: FakeKeyVault, name: str
) -> None:
    secrets = KeyVaultSecrets(_env(vault), credential=vault.credential())
    with pytest.raises(UsageError, match="a Key Vault secret name is 1-127 letters, digits"):
        secrets(name)
    assert vault.requests == []
    vault.put("x" * 127, "longest-name-ok")
    assert secrets("x" * 127) == "longest-name-ok"


def test_the_vault_comes_from_the_environment_https_only() -> None:
    assert vault_url({"REGWARDEN_KEY_VAULT": VAULT + "/"}) == VAULT
    with pytest.raises(UsageError, match="REGWARDEN_KEY_VAULT is not set"):
        vault_url({})
    with pytest.raises(UsageError, match=r"expected https://VAULT\.vault\.azure\.net"):
        vault_url({"REGWARDEN_KEY_VAULT": "http://acme.vault.azure.net"})
    with pytest.raises(UsageError, match=r"expected https://VAULT\.vault\.azure\.net"):
        vault_url({"REGWARDEN_KEY_VAULT": VAULT + "/secrets/x"})


def test_without_the_test_ca_the_stand_ins_certificate_is_refused(vault: FakeKeyVault) -> None:
    vault.put("hook", "hook-value-00001")
    env = {k: v for k, v in _env(vault).items() if k != "REGWARDEN_AZURE_CA_BUNDLE"}
    secrets = KeyVaultSecrets(env, credential=vault.credential())
    with pytest.raises(UsageError, match=r"secret 'hook' in Key Vault .*: no answer"):
        secrets("hook")
    assert vault.requests == []


def test_fetch_secret_reads_as_the_managed_identity_through_one_cache_per_vault(
    vault: FakeKeyVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    credential = vault.credential()
    monkeypatch.setattr(azure_clients, "default_credential", lambda: credential)
    monkeypatch.setattr(_keyvault, "_STORES", {})
    vault.put("policy-key", "policy-value-001")
    assert fetch_secret("secret://policy-key", _env(vault)) == "policy-value-001"
    assert fetch_secret("policy-key", dict(_env(vault))) == "policy-value-001"
    assert vault.accesses("policy-key") == 1
    vault.put("policy-key", "policy-value-002")
    assert fetch_secret("policy-key", _env(vault), fresh=True) == "policy-value-002"
    assert credential.scopes and all(s == (f"{RESOURCE}/.default",) for s in credential.scopes)


class _Receiver:
    """A loopback HTTP receiver standing in for Slack: records each POST (path, body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.arrived = threading.Event()
        receiver = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                receiver.arrived.set()

        self.server = LoopbackServer(_Handler)


def test_a_policys_slack_webhook_is_resolved_through_key_vault(
    vault: FakeKeyVault, tmp_path: Path
) -> None:
    policy = load_policy_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "notifications:\n  channels:\n"
        "    team-slack: {type: slack, url: 'secret://slack-hook'}\n",
        source="regwarden.yaml",
        base_dir=tmp_path,
    )
    slack = _Receiver()
    with slack.server:
        vault.put("slack-hook", f"{slack.server.url}/services/T0/B0/from-key-vault")
        names = policy_secrets(policy)
        assert names == {"REGWARDEN_SECRET_SLACK_HOOK": "slack-hook"}
        base = {**_env(vault), "REGWARDEN_SECRET_SLACK_HOOK": "https://not-this.example/hook"}
        env = SecretEnv(base, names, KeyVaultSecrets(base, credential=vault.credential()))
        channel = build_channels(policy, env)["team-slack"]
        alert = Alert(
            time=datetime(2026, 12, 7, 12, tzinfo=UTC),
            image=ImageRef.parse("acme.azurecr.io/apps/api@sha256:" + "a" * 64),
            team="payments",
            outcome=Outcome.FAILED,
            severity=Severity.HIGH,
            action="quarantine",
            summary="FAILED: quarantine",
        )
        channel.send(alert)
        assert slack.arrived.wait(10)
    ((path, body),) = slack.posts
    assert path == "/services/T0/B0/from-key-vault"  # the vault's value, not the process env's
    assert "FAILED" in body["text"]
    assert vault.accesses("slack-hook") == 1
