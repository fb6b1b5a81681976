"""The GCP and Azure retention functions read their settings through one RetentionScope:
the same names, defaults and refusals, each cloud with its registry and inventories."""

from __future__ import annotations

import pytest

from functions.azure._settings import RetentionSettings as AzureRetention
from functions.gcp._settings import RetentionSettings as GcpRetention
from regwarden.errors import UsageError
from regwarden.retention_scope import RetentionScope

CLOUDS = [
    (AzureRetention, "regwardendemo.azurecr.io", "azure", "login server (NAME.azurecr.io)"),
    (GcpRetention, "europe-docker.pkg.dev", "cloudrun", "host (LOCATION-docker.pkg.dev)"),
]


@pytest.mark.parametrize(("settings", "host", "inventory", "expected"), CLOUDS)
def test_each_cloud_reads_the_same_settings_with_its_own_registry_and_inventory(
    settings: type[AzureRetention] | type[GcpRetention], host: str, inventory: str, expected: str
) -> None:
    plain = settings.from_env({"REGWARDEN_RETENTION_REGISTRY": f" {host.upper()} "})
    assert isinstance(plain, RetentionScope)
    assert (plain.registry, plain.mode, plain.apply) == (host, "plan", False)
    assert (plain.prefixes, plain.inventory, plain.concurrency, plain.budget) == (
        ("",),
        inventory,
        4,
        480,
    )
    env = {
        "REGWARDEN_RETENTION_REGISTRY": host,
        "RETENTION_MODE": "apply",
        "REGWARDEN_RETENTION_PREFIXES": "team-a/, team-b/,team-a/",
        "REGWARDEN_RETENTION_INVENTORY": "policy",
        "REGWARDEN_RETENTION_CONCURRENCY": "8",
        "REGWARDEN_RETENTION_BUDGET": "300",
    }
    given = settings.from_env(env)
    assert given.apply and given.prefixes == ("team-a/", "team-b/")
    assert (given.inventory, given.concurrency, given.budget) == ("policy", 8, 300)

    with pytest.raises(UsageError, match="REGWARDEN_RETENTION_REGISTRY is not set") as unset:
        settings.from_env({})
    assert str(unset.value).endswith(expected)
    for name, value in [
        ("RETENTION_MODE", "delete"),
        ("REGWARDEN_RETENTION_INVENTORY", "cloudrun" if inventory == "azure" else "azure"),
        ("REGWARDEN_RETENTION_BUDGET", "0"),
    ]:
        with pytest.raises(UsageError, match=name):
            settings.from_env({"REGWARDEN_RETENTION_REGISTRY": host, name: value})
