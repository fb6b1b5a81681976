"""Azure clients, made one way by every Azure part of regwarden (the ACR provider, and the
later Resource Graph, Storage and Event Grid parts).

An endpoint other than Azure's own is named per service in the environment,
`REGWARDEN_AZURE_ENDPOINT_<SERVICE>` (e.g. `REGWARDEN_AZURE_ENDPOINT_ACR=https://127.0.0.1:8443`
for a stand-in): https only, or http on loopback, which is then called anonymously so no
token ever travels in the clear. `REGWARDEN_AZURE_CA_BUNDLE` names a PEM file of extra
certificate authorities the https endpoints are verified against instead of the system's
(a stand-in's test CA; a TLS-inspecting proxy): by the SDK clients and by ACR's token
service and `/v2/` alike; unset: the system's.

azure-identity and the Azure SDKs are imported on first use, never with this module.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from .cloud_endpoints import endpoint_override

__all__ = [
    "ACR_AUDIENCE",
    "CA_BUNDLE_ENV",
    "ENDPOINT_ENV_PREFIX",
    "SERVICES",
    "STORAGE_KEY_ENV",
    "acr_scope",
    "ca_bundle",
    "default_credential",
    "endpoint",
    "storage_credential",
    "storage_endpoint",
]

ENDPOINT_ENV_PREFIX = "REGWARDEN_AZURE_ENDPOINT_"
CA_BUNDLE_ENV = "REGWARDEN_AZURE_CA_BUNDLE"
SERVICES = frozenset(
    {"acr", "resourcegraph", "eventgrid", "keyvault", "storage", "table", "queue", "blob"}
)
STORAGE_KEY_ENV = "REGWARDEN_AZURE_STORAGE_KEY"
"""A storage account's shared key, for local runs and Azurite only (in Azure: the managed
identity). Never defaulted, never logged."""
ACR_AUDIENCE = "https://containerregistry.azure.net"
"""The AAD audience of ACR's data plane in Azure's public cloud (the SDK's default)."""
_SOVEREIGN_AUDIENCES = {
    ".azurecr.cn": "https://containerregistry.azure.cn",
    ".azurecr.us": "https://containerregistry.azure.us",
}


def endpoint(service: str, env: Mapping[str, str]) -> str | None:
    """The endpoint `env` names for `service` (`https://…`, or `http://` on loopback only);
    None: Azure's own. Raises UsageError for anything else."""
    if service not in SERVICES:
        raise ValueError(f"unknown Azure service {service!r}")
    return endpoint_override(ENDPOINT_ENV_PREFIX + service.upper(), env)


def ca_bundle(env: Mapping[str, str]) -> str | None:
    """The PEM file `REGWARDEN_AZURE_CA_BUNDLE` names, or None."""
    value = env.get(CA_BUNDLE_ENV, "").strip()
    return value or None


def acr_scope(host: str) -> str:
    """The AAD scope of an ACR registry's token exchange: its cloud's audience + `/.default`
    (`NAME.azurecr.cn` is Azure China's, `.azurecr.us` US Government's)."""
    bare = host.split(":", 1)[0].lower()
    for suffix, audience in _SOVEREIGN_AUDIENCES.items():
        if bare.endswith(suffix):
            return audience + "/.default"
    return ACR_AUDIENCE + "/.default"


@functools.cache
def default_credential() -> Any:
    """The process's `DefaultAzureCredential` (managed identity in Azure, the environment
    or the Azure CLI locally), made once and shared, so its token cache serves every
    client."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def storage_endpoint(service: str, account: str, env: Mapping[str, str]) -> str:
    """The endpoint of a storage account's `table`, `queue` or `blob` service: the one `env`
    names (`REGWARDEN_AZURE_ENDPOINT_TABLE`; Azurite's is `http://127.0.0.1:PORT/ACCOUNT`),
    else Azure's own `https://ACCOUNT.<service>.core.windows.net`."""
    if service not in ("table", "queue", "blob"):
        raise ValueError(f"not a storage service: {service!r}")
    return endpoint(service, env) or f"https://{account}.{service}.core.windows.net"


def storage_credential(account: str, env: Mapping[str, str]) -> Any:
    """The credential of storage account `account`: its shared key when
    `REGWARDEN_AZURE_STORAGE_KEY` is set (an `AzureNamedKeyCredential`: requests are signed
    with it, the key itself is never sent, so it may go to Azurite over loopback http),
    else the process's `default_credential()` (a bearer token, which Azure's clients send
    over https only)."""
    key = env.get(STORAGE_KEY_ENV, "").strip()
    if key:
        from azure.core.credentials import AzureNamedKeyCredential

        return AzureNamedKeyCredential(account, key)
    return default_credential()
