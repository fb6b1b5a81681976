"""Secrets from Azure Key Vault: `secret://NAME` is the secret NAME in the vault
`REGWARDEN_KEY_VAULT` names (`https://VAULT.vault.azure.net`).

Read with azure-keyvault-secrets' `SecretClient` (made on first use, imported then) as the
function's managed identity (`azure_clients.default_credential()`; the identity needs the
"Key Vault Secrets User" role). `REGWARDEN_AZURE_ENDPOINT_KEYVAULT` names another endpoint
(a stand-in; its test CA in `REGWARDEN_AZURE_CA_BUNDLE`): the SDK's check that the
challenge's resource is the vault's own domain is then off, as a stand-in's host is not
under vault.azure.net; against Azure's own vault hosts it stays on.

Each value is cached for `SECRET_MAX_AGE` seconds in the warm instance, as on GCP; `fresh`
reads past the cache (to tell a rotation). `KeyVaultSecrets` is the `warm.SecretFetch`;
`fetch_secret(name, env)` reads through one such cache per vault for the process. Errors
name the secret and the vault, never a value.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from regwarden.errors import UsageError

__all__ = ["KEY_VAULT_ENV", "SECRET_MAX_AGE", "KeyVaultSecrets", "fetch_secret", "vault_url"]

KEY_VAULT_ENV = "REGWARDEN_KEY_VAULT"
SECRET_MAX_AGE = 300.0
"""Seconds a secret's value is served from the warm instance's cache."""
_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
"""Key Vault's rule for an object name."""
_TIMEOUT = 10.0


def vault_url(env: Mapping[str, str]) -> str:
    """Where the vault is reached: the endpoint `REGWARDEN_AZURE_ENDPOINT_KEYVAULT` names,
    else `REGWARDEN_KEY_VAULT` (https only)."""
    from regwarden import azure_clients

    override = azure_clients.endpoint("keyvault", env)
    if override is not None:
        return override
    vault = env.get(KEY_VAULT_ENV, "").strip().rstrip("/")
    if not vault:
        raise UsageError(
            f"{KEY_VAULT_ENV} is not set: secret:// values are read from that Key Vault",
            hint=f"set {KEY_VAULT_ENV}=https://VAULT.vault.azure.net",
        )
    parts = urlsplit(vault)
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
        raise UsageError(f"{KEY_VAULT_ENV}: got {vault!r}, expected https://VAULT.vault.azure.net")
    return vault


def secret_name(name: str) -> str:
    """The Key Vault secret name of `secret://NAME` (or NAME); UsageError unless it keeps
    to Key Vault's rule (letters, digits and '-', at most 127)."""
    bare = name.removeprefix("secret://")
    if not _NAME.fullmatch(bare):
        raise UsageError(
            f"got secret name {name!r}: a Key Vault secret name is 1-127 letters, digits "
            "and '-' (no '/', '.' or '_')"
        )
    return bare


class KeyVaultSecrets:
    """Secret values from one Key Vault, each cached for `max_age` seconds in this warm
    instance; `fresh` reads past the cache. A `regwarden.warm.SecretFetch`."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        max_age: float = SECRET_MAX_AGE,
        credential: Any = None,
    ) -> None:
        from regwarden import azure_clients

        self.vault = vault_url(env)
        self._stand_in = azure_clients.endpoint("keyvault", env) is not None
        self._verify: str | bool = azure_clients.ca_bundle(env) or True
        self._max_age = max_age
        self._credential = credential
        self._cache: dict[str, tuple[str, float]] = {}
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from azure.keyvault.secrets import SecretClient

                from regwarden import azure_clients

                self._client = SecretClient(
                    self.vault,
                    self._credential or azure_clients.default_credential(),
                    verify_challenge_resource=not self._stand_in,
                    connection_timeout=_TIMEOUT,
                    read_timeout=_TIMEOUT,
                    retry_total=2,
                    **azure_clients.transport_options(self._verify),
                )
            return self._client

    def __call__(self, name: str, *, fresh: bool = False) -> str:
        bare = secret_name(name)
        with self._lock:
            cached = self._cache.get(bare)
        if cached is not None and not fresh and time.monotonic() - cached[1] < self._max_age:
            return cached[0]
        value = self._read(bare)
        with self._lock:
            self._cache[bare] = (value, time.monotonic())
        return value

    def _read(self, name: str) -> str:
        from azure.core.exceptions import (
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        where = f"secret {name!r} in Key Vault {self.vault}"
        try:
            secret = self.client().get_secret(name)
        except ResourceNotFoundError:
            raise UsageError(f"{where}: not found") from None
        except HttpResponseError as exc:
            raise UsageError(f"{where}: {_refusal(exc)}") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise UsageError(f"{where}: no answer ({type(exc).__name__})") from None
        value = secret.value
        if not isinstance(value, str) or not value:
            raise UsageError(f"{where}: has no value")
        return value


def _refusal(exc: Any) -> str:
    """Why Key Vault refused (its error and inner error codes), never its whole message."""
    status = exc.status_code
    if status is None:  # the credential gave no token (no managed identity here)
        return f"no credentials ({type(exc).__name__})"
    error = getattr(exc, "error", None)  # azure-core's ODataV4Format of the envelope
    code = getattr(error, "code", None) or "error"
    inner_error = getattr(error, "innererror", None)
    inner = inner_error.get("code") if isinstance(inner_error, Mapping) else None
    if status == 403 and inner == "SecretDisabled":
        return "is disabled"
    if status == 403:
        detail = f"{code}/{inner}" if inner else code
        return (
            f"access denied (HTTP 403 {detail}): the function's identity needs the "
            "'Key Vault Secrets User' role on the vault"
        )
    return f"HTTP {status} {code}"


_STORES: dict[tuple[str, str | bool], KeyVaultSecrets] = {}
_STORES_LOCK = threading.Lock()


def fetch_secret(name: str, env: Mapping[str, str], *, fresh: bool = False) -> str:
    """The value of the Key Vault secret `name` (`secret://NAME` or NAME) in the vault
    `env` names, through this process's cache for that vault."""
    from regwarden import azure_clients

    key = (vault_url(env), azure_clients.ca_bundle(env) or True)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = KeyVaultSecrets(env)
    return store(name, fresh=fresh)
