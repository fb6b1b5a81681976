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
import os
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
    "transport_options",
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
_NETRC = (".netrc", "_netrc")
"""The files in the user's home requests reads credentials from (with `NETRC`)."""
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


def transport_options(
    verify: bool | str = True, *, env: Mapping[str, str] | None = None, home: str | None = None
) -> dict[str, Any]:
    """`connection_verify` and `use_env_settings` for an Azure SDK client (azure-core's
    requests transport), `verify` being what the client verifies against (True: the
    system's authorities; a path: that bundle).

    Environment settings are turned off when the environment holds nothing requests would
    take from it but a CA bundle: no `*_proxy` variable, no `NETRC`, no `~/.netrc`. The
    bundle it would take (`REQUESTS_CA_BUNDLE`, else `CURL_CA_BUNDLE`, for `verify=True`
    only, as requests does) is then given as `connection_verify` instead. Why: with
    environment settings on, requests walks the whole environment for proxies twice on
    every call, and a Function App's holds every app setting besides the platform's (~150
    variables: ~0.6 ms of CPU a call; an event makes 16 to Table Storage). With a proxy
    or netrc in the environment nothing changes. `env` must be the process's own (the
    default; a settings mapping handed to a client is not what requests reads) and `home`
    the user's; both are read once, when the client is made."""
    env = os.environ if env is None else env
    home = os.path.expanduser("~") if home is None else home
    proxied = any(name.lower().endswith("_proxy") for name in env)
    if proxied or "NETRC" in env or any(os.path.exists(os.path.join(home, n)) for n in _NETRC):
        return {"connection_verify": verify}
    if verify is True:
        verify = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True
    return {"connection_verify": verify, "use_env_settings": False}


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
