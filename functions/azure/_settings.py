"""Settings for the Azure functions: app settings read from the environment once per cold
start (the Terraform in `infra/azure` sets them).

| variable                          | meaning                                                   |
| --------------------------------- | --------------------------------------------------------- |
| `REGWARDEN_POLICY`                | a file in the app's bundle, or `secret://NAME` (Key Vault)|
| `REGWARDEN_LEDGER`                | `azuretable://ACCOUNT[?prefix=…]` (or an SQLite path)     |
| `REGWARDEN_STORAGE_ACCOUNT`       | the storage account holding the queues                    |
| `REGWARDEN_KEY_VAULT`             | `https://VAULT.vault.azure.net`: `secret://NAME`          |
| `REGWARDEN_ALERTS_TOPIC`          | the alerts custom topic's endpoint (`…/api/events`)       |
| `REGWARDEN_RECHECK_QUEUE`         | PENDING rechecks (`regwarden-rechecks`)                   |
| `REGWARDEN_RETENTION_QUEUE`       | retention work (`regwarden-retention-work`)               |
| `REGWARDEN_AZURE_SUBSCRIPTION`    | Defender / Resource Graph subscriptions (comma list)      |
| `REGWARDEN_ALLOWED_HOSTS`         | registry hosts to contact besides the policy's (commas)   |
| `REGWARDEN_MAX_DEQUEUE`           | host.json's queues `maxDequeueCount` (5)                  |
| `REGWARDEN_POLICY_TTL`            | seconds a warm instance trusts policy and secrets (300)   |
| `REGWARDEN_RECOVERY_SETTLE`       | recovery: seconds an intent is left to its own call (600) |
| `REGWARDEN_SCAN_SCHEDULE`         | on_scan's NCRONTAB (read by the host: `%…%`)              |
| `REGWARDEN_RECOVERY_SCHEDULE`     | recovery's NCRONTAB (read by the host)                    |
| `REGWARDEN_RETENTION_SCHEDULE`    | retention_fanout's NCRONTAB (read by the host)            |
| `RETENTION_MODE`                  | retention: `plan` (default, deletes nothing) or `apply`   |
| `REGWARDEN_RETENTION_REGISTRY`    | retention: the registry listed (`NAME.azurecr.io`)        |
| `REGWARDEN_RETENTION_PREFIXES`    | retention: repository prefixes in scope (comma list)      |
| `REGWARDEN_RETENTION_INVENTORY`   | retention: `azure` (AKS + Container Apps) or `policy`     |
| `REGWARDEN_RETENTION_CONCURRENCY` | retention: deletions in flight per worker (4)             |
| `REGWARDEN_RETENTION_BUDGET`      | retention: seconds one worker call may spend (480)        |
| `AZURE_CLIENT_ID`                 | the user-assigned identity (read by azure-identity)       |

The three schedules are resolved by the Functions host from the app settings
(`%REGWARDEN_SCAN_SCHEDULE%` in the trigger), never by this module.

`secret://NAME` (the policy, or any secret the policy names) is the Key Vault secret NAME
in `REGWARDEN_KEY_VAULT`, fetched by `functions.azure._keyvault.fetch_secret`. A fetched
value is cached there for `SECRET_MAX_AGE` seconds per warm instance; every `REGWARDEN_POLICY_TTL`
seconds the function reads the policy and the secrets it used again, and rebuilds what was
built from them when one changed (`regwarden.warm`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from regwarden import warm
from regwarden.errors import PolicyError, UsageError
from regwarden.retention_scope import RETENTION_MODES, RetentionScope
from regwarden.warm import env_int

__all__ = [
    "RECHECK_QUEUE",
    "RETENTION_INVENTORIES",
    "RETENTION_MODES",
    "RETENTION_QUEUE",
    "RetentionSettings",
    "SecretFetcher",
    "Settings",
    "VaultSecrets",
    "load_source",
]

RECHECK_QUEUE = "regwarden-rechecks"
RETENTION_QUEUE = "regwarden-retention-work"
RETENTION_INVENTORIES = ("azure", "policy")
"""`azure`: AKS clusters and Container Apps (apps and jobs) of the subscription are in use,
plus the policy's other sources; `policy`: only those."""
_MAX_POLICY_BYTES = 1024 * 1024
_POLICY_FORMS = "a file in the function app's bundle, or secret://NAME (Key Vault)"


class SecretFetcher(Protocol):
    """(secret name, environment, fresh?) → its value: `_keyvault.fetch_secret`."""

    def __call__(self, name: str, env: Mapping[str, str], *, fresh: bool = False) -> str: ...


def _opt(env: Mapping[str, str], name: str) -> str | None:
    return (env.get(name) or "").strip() or None


def _hosts(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    from regwarden.intake import parse_host

    text = env.get(name, "")
    return tuple(parse_host(part, what=name) for part in text.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    """The gate functions' configuration (frozen: read once per cold start)."""

    policy: str
    ledger: str
    storage_account: str | None = None
    """The queues' storage account; None: no rechecks are scheduled (logged)."""
    key_vault: str | None = None
    alerts_topic: str | None = None
    """Every alert of a gate function is published here (`notify` fans out); None: the
    policy's own routes."""
    recheck_queue: str = RECHECK_QUEUE
    retention_queue: str = RETENTION_QUEUE
    subscriptions: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_dequeue: int = 5
    policy_ttl: int = 300
    recovery_settle: int = 600
    """Longer than a gate function's timeout: an intent younger than this may still be in
    the hands of the call that began it."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def required(name: str, what: str) -> str:
            value = _opt(env, name)
            if value is None:
                raise UsageError(f"{name} is not set; expected {what}")
            return value

        subscriptions = tuple(
            s.strip() for s in env.get("REGWARDEN_AZURE_SUBSCRIPTION", "").split(",") if s.strip()
        )
        return cls(
            policy=required("REGWARDEN_POLICY", _POLICY_FORMS),
            ledger=required("REGWARDEN_LEDGER", "azuretable://ACCOUNT[?prefix=regwarden]"),
            storage_account=_opt(env, "REGWARDEN_STORAGE_ACCOUNT"),
            key_vault=_opt(env, "REGWARDEN_KEY_VAULT"),
            alerts_topic=_opt(env, "REGWARDEN_ALERTS_TOPIC"),
            recheck_queue=_opt(env, "REGWARDEN_RECHECK_QUEUE") or RECHECK_QUEUE,
            retention_queue=_opt(env, "REGWARDEN_RETENTION_QUEUE") or RETENTION_QUEUE,
            subscriptions=subscriptions,
            allowed_hosts=_hosts(env, "REGWARDEN_ALLOWED_HOSTS"),
            max_dequeue=env_int(env, "REGWARDEN_MAX_DEQUEUE", 5, least=1),
            policy_ttl=env_int(env, "REGWARDEN_POLICY_TTL", 300, least=0),
            recovery_settle=env_int(env, "REGWARDEN_RECOVERY_SETTLE", 600, least=0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionSettings(RetentionScope):
    """The retention functions' configuration (`regwarden.retention_scope`): the ACR
    login server (`NAME.azurecr.io`) the fan-out lists and the worker accepts, and the
    subscription's AKS clusters and Container Apps as the in-use inventory unless
    `REGWARDEN_RETENTION_INVENTORY=policy`. The budget stays below the app's
    functionTimeout."""

    inventory: str = RETENTION_INVENTORIES[0]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetentionSettings:
        return cls.read(
            os.environ if env is None else env,
            registry="the registry's login server (NAME.azurecr.io)",
            inventories=RETENTION_INVENTORIES,
        )


# -- Key Vault --------------------------------------------------------------------------------


def _keyvault_fetch(name: str, env: Mapping[str, str], *, fresh: bool = False) -> str:
    from ._keyvault import fetch_secret  # Azure's SDK loads with the first secret read

    return fetch_secret(name, env, fresh=fresh)


class VaultSecrets:
    """`secret://NAME` → the Key Vault secret NAME (`_keyvault.fetch_secret`: the vault
    REGWARDEN_KEY_VAULT names, each value cached `_keyvault.SECRET_MAX_AGE` seconds per warm
    instance; `fresh` reads past the cache, to tell a rotation). A `regwarden.warm.
    SecretFetch`; nothing is read, and the vault setting is not needed, until a secret is
    asked for (a policy without secrets runs without a vault)."""

    def __init__(self, env: Mapping[str, str], *, fetch: SecretFetcher = _keyvault_fetch) -> None:
        self._env = dict(env)
        self._fetch = fetch

    def __call__(self, name: str, *, fresh: bool = False) -> str:
        return self._fetch(name, self._env, fresh=fresh)


# -- the policy -------------------------------------------------------------------------------


def _policy_reader(secrets: VaultSecrets) -> warm.PolicyReader:
    def read(uri: str) -> str | None:
        if not uri.startswith("secret://"):
            return None  # a file in the app's bundle
        try:
            text = secrets(uri, fresh=True)  # the TTL decides how often: no second cache
        except UsageError as exc:
            raise PolicyError(f"cannot read the policy from {uri}: {exc}") from None
        if len(text.encode()) > _MAX_POLICY_BYTES:
            raise PolicyError(f"policy {uri} is larger than {_MAX_POLICY_BYTES} bytes")
        return text

    return read


def load_source(uri: str, secrets: VaultSecrets) -> warm.PolicySource:
    """Load and validate the policy from the bundle or Key Vault. `file://` locations inside
    a policy from Key Vault resolve against the working directory (the app's root,
    `/home/site/wwwroot`, where the host starts the worker)."""
    return warm.PolicySource.load(uri, _policy_reader(secrets), base_dir=Path.cwd())
