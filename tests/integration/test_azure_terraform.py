"""`infra/azure` (Terraform) against the function app it deploys.

`terraform validate` needs the azurerm provider from the Terraform registry, which this
machine and CI cannot reach, so every `infra/azure/*.tf` is parsed with python-hcl2 and the
wiring is checked here: the Function App (Flex Consumption, Python 3.11, the identity for
its own storage), its app settings read back through `functions.azure._settings`, each
trigger of `functions/azure/function_app.py` fed by what the Terraform builds (the queues
its queue triggers name, the app settings its timers name, the Event Grid subscriptions to
its Event Grid triggers, with retries and dead letters), the alerts topic and the teams'
advanced filters, the identity's exact roles and scopes, and no secret in any setting.
HCL expressions are not evaluated: the few the settings hold are named exactly below.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import hcl2
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "azure"
OPTIONS = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)

# the design note (#14, second slice): queues, event types, Event Grid-fed functions
QUEUES = {"regwarden-rechecks", "regwarden-retention-work"}
ACR_EVENTS = ["Microsoft.ContainerRegistry.ImagePushed", "Microsoft.ContainerRegistry.ImageDeleted"]
EVENT_GRID_FED = {"on_push", "notify"}
APP_SETTINGS = {
    "REGWARDEN_POLICY",
    "REGWARDEN_LEDGER",
    "REGWARDEN_STORAGE_ACCOUNT",
    "REGWARDEN_KEY_VAULT",
    "REGWARDEN_ALERTS_TOPIC",
    "REGWARDEN_RECHECK_QUEUE",
    "REGWARDEN_RETENTION_QUEUE",
    "REGWARDEN_AZURE_SUBSCRIPTION",
    "REGWARDEN_ALLOWED_HOSTS",
    "REGWARDEN_MAX_DEQUEUE",
    "REGWARDEN_POLICY_TTL",
    "REGWARDEN_RECOVERY_SETTLE",
    "REGWARDEN_SCAN_SCHEDULE",
    "REGWARDEN_RECOVERY_SCHEDULE",
    "REGWARDEN_RETENTION_SCHEDULE",
    "RETENTION_MODE",
    "REGWARDEN_RETENTION_REGISTRY",
    "REGWARDEN_RETENTION_PREFIXES",
    "REGWARDEN_RETENTION_INVENTORY",
    "REGWARDEN_RETENTION_CONCURRENCY",
    "REGWARDEN_RETENTION_BUDGET",
    "REGWARDEN_REPORT_SCHEDULE",
    "REGWARDEN_REPORT_CONTAINER",
    "REGWARDEN_REPORT_REGISTRY",
    "REGWARDEN_REPORT_PREFIXES",
    "MPLCONFIGDIR",  # matplotlib's cache, for the report's plots
    "AZURE_CLIENT_ID",
    # the host's own storage, with the identity (no connection string)
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    # telemetry with the identity (the component refuses key-only ingestion)
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# role → where (identity.tf's identity_scopes)
ROLES = {
    "AcrPull": "registry",
    "AcrPush": "registry",
    "AcrDelete": "registry",
    "AcrQuarantineWriter": "quarantine_policy",
    "Storage Table Data Contributor": "storage",
    "Storage Queue Data Contributor": "storage",
    "Storage Blob Data Owner": "storage",
    "Key Vault Secrets User": "vault",
    "EventGrid Data Sender": "alerts_topic",
    "Monitoring Metrics Publisher": "insights",
    "Reader": "subscriptions",
    "Security Reader": "subscriptions",
    "Azure Kubernetes Service Cluster User Role": "aks_clusters",
}
SCOPES = {
    "registry": ["${var.registry_id}"],
    "quarantine_policy": "${var.acr_quarantine_policy ? [var.registry_id] : []}",
    "storage": ["${azurerm_storage_account.regwarden.id}"],
    "vault": ["${azurerm_key_vault.regwarden.id}"],
    "alerts_topic": ["${azurerm_eventgrid_topic.alerts.id}"],
    "insights": ["${azurerm_application_insights.regwarden.id}"],
    "subscriptions": '${[for s in local.scan_subscriptions : "/subscriptions/${s}"]}',
    "aks_clusters": "${var.aks_cluster_ids}",
}
BROAD = {
    "Owner",
    "Contributor",
    "User Access Administrator",
    "Role Based Access Control Administrator",
}


@dataclass
class Config:
    """The merged blocks of every file of a Terraform directory."""

    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)
    providers: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        assert (kind, name) in self.resources, f"no resource {kind}.{name}"
        return self.resources[(kind, name)]

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {n: body for (k, n), body in self.resources.items() if k == kind}


def _unique(into: dict[Any, Any], key: Any, value: Any, what: str) -> None:
    assert key not in into, f"{what} {key} declared twice"
    into[key] = value


def load(directory: Path = INFRA) -> Config:
    files = sorted(directory.glob("*.tf"))
    assert files, f"no .tf files in {directory}"
    config = Config()
    for path in files:
        text = path.read_text()
        config.text += text
        doc = hcl2.loads(text, serialization_options=OPTIONS)
        for kind_, into, what in (
            ("resource", config.resources, "resource"),
            ("data", config.data, "data source"),
        ):
            for blk in doc.get(kind_, []):
                for kind, named in blk.items():
                    for name, body in named.items():
                        _unique(into, (kind, name), body, what)
        for blk in doc.get("variable", []):
            for name, body in blk.items():
                _unique(config.variables, name, body, "variable")
        for blk in doc.get("output", []):
            for name, body in blk.items():
                _unique(config.outputs, name, body, "output")
        for blk in doc.get("locals", []):
            for name, value in blk.items():
                _unique(config.locals, name, value, "local")
        config.terraform += doc.get("terraform", [])
        config.providers += doc.get("provider", [])
    return config


CONFIG = load()


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The one nested block `name` of a resource body."""
    (inner,) = body[name]
    assert isinstance(inner, dict)
    return inner


def _import(module: str) -> Any:
    for path in (str(ROOT), str(ROOT / "shared")):
        if path not in sys.path:
            sys.path.insert(0, path)
    return importlib.import_module(module)


def triggers() -> dict[str, dict[str, Any]]:
    """Each function of function_app.py → its trigger binding, as the host indexes it."""
    _import("functions.azure.function_app")  # the checkout's, on sys.path
    from support.azure_app import app_functions

    found: dict[str, dict[str, Any]] = {}
    for fn in app_functions():
        (trigger,) = [
            b.get_dict_repr()
            for b in fn.get_bindings()
            if b.get_dict_repr()["type"].endswith("Trigger")
        ]
        found[fn.get_function_name()] = trigger
    return found


# -- the files themselves ----------------------------------------------------------------------


def test_every_file_parses_with_the_azurerm_provider_4() -> None:
    names = {p.name for p in INFRA.glob("*.tf")}
    assert {"versions.tf", "variables.tf", "outputs.tf", "main.tf"} <= names
    (azurerm,) = [
        p["azurerm"]
        for t in CONFIG.terraform
        for block_ in t.get("required_providers", [])
        for p in ([block_] if isinstance(block_, dict) else block_)
        if "azurerm" in p
    ]
    assert azurerm["source"] == "hashicorp/azurerm"
    # ~> 4.N: the flex consumption resource is 4.21's; 5.x may rename what is used here
    version = re.fullmatch(r"~>\s*4\.(\d+)", azurerm["version"])
    assert version is not None and int(version[1]) >= 21, azurerm["version"]


def test_every_variable_is_declared_and_used_and_every_local_too() -> None:
    used_vars = set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", CONFIG.text))
    assert used_vars == set(CONFIG.variables), (
        f"used, not declared: {sorted(used_vars - set(CONFIG.variables))}; "
        f"declared, not used: {sorted(set(CONFIG.variables) - used_vars)}"
    )
    used_locals = set(re.findall(r"\blocal\.([A-Za-z_][A-Za-z0-9_]*)", CONFIG.text))
    assert used_locals == set(CONFIG.locals), (
        f"used, not declared: {sorted(used_locals - set(CONFIG.locals))}; "
        f"declared, not used: {sorted(set(CONFIG.locals) - used_locals)}"
    )
    for name, body in CONFIG.variables.items():
        assert body.get("description"), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"


def test_every_reference_names_a_declared_resource_or_data_source() -> None:
    declared = {f"{k}.{n}" for k, n in CONFIG.resources} | {f"data.{k}.{n}" for k, n in CONFIG.data}
    pattern = r"\b((?:data\.)?azurerm_[a-z0-9_]+)\.([a-z_][a-z0-9_]*)"
    referenced = set(re.findall(pattern, CONFIG.text))
    assert referenced
    for kind, name in referenced:
        if (kind.removeprefix("data."), name) in CONFIG.resources | CONFIG.data:
            continue
        # a resource's own declaration `resource "KIND" "NAME"` is not matched by the pattern
        assert f"{kind}.{name}" in declared, f"{kind}.{name} is referenced, never declared"


def test_every_checkov_skip_gives_its_reason() -> None:
    skips = re.findall(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?", CONFIG.text)
    assert skips, "infra/azure has skips (public endpoints without VNet integration)"
    for check, reason in skips:
        assert reason and len(reason.split()) >= 8, f"{check}: no written reason"


# -- the function app --------------------------------------------------------------------------


def test_the_function_app_runs_python_311_on_flex_consumption_with_its_identity() -> None:
    plan = CONFIG.resource("azurerm_service_plan", "regwarden")
    assert (plan["sku_name"], plan["os_type"]) == ("FC1", "Linux")
    app = CONFIG.resource("azurerm_function_app_flex_consumption", "regwarden")
    assert app["service_plan_id"] == "${azurerm_service_plan.regwarden.id}"
    assert (app["runtime_name"], app["runtime_version"]) == ("python", "3.11")
    assert app["app_settings"] == "${local.app_settings}"
    identity = block(app, "identity")
    assert identity == {
        "type": "UserAssigned",
        "identity_ids": ["${azurerm_user_assigned_identity.functions.id}"],
    }
    # the deployment package read with the identity, from the account's deployment container
    assert app["storage_authentication_type"] == "UserAssignedIdentity"
    assert app["storage_user_assigned_identity_id"] == (
        "${azurerm_user_assigned_identity.functions.id}"
    )
    assert (
        'azurerm_storage_container.regwarden["deployment"].name'
        in (app["storage_container_endpoint"])
    )
    assert "storage_access_key" not in app
    assert app["https_only"] is True
    assert app["webdeploy_publish_basic_authentication_enabled"] is False
    assert block(app, "site_config")["minimum_tls_version"] == "1.2"


def test_on_push_is_kept_warm_only_when_asked_and_by_the_name_the_app_gives_it() -> None:
    app = CONFIG.resource("azurerm_function_app_flex_consumption", "regwarden")
    assert "always_ready" not in app  # only through the variable
    (dynamic,) = app["dynamic"]
    ready = dynamic["always_ready"]
    # none by default: always-ready instances are billed while idle
    assert CONFIG.variables["on_push_always_ready"]["default"] == 0
    assert ready["for_each"] == (
        "${var.on_push_always_ready > 0 ? [var.on_push_always_ready] : []}"
    )
    (content,) = ready["content"]
    assert content == {"name": "function:on_push", "instance_count": "${always_ready.value}"}
    # Flex Consumption names one function `function:<its name>`: the Event Grid trigger
    # the registry feeds, as function_app.py names it
    name = content["name"].removeprefix("function:")
    assert triggers()[name]["type"] == "eventGridTrigger"


TEST_VARS: dict[str, Any] = {
    "subscription_id": "00000000-0000-0000-0000-00000000aaaa",
    "registry_id": (
        "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/images"
        "/providers/Microsoft.ContainerRegistry/registries/acmeimages"
    ),
}
CLIENT_ID = "99999999-8888-7777-6666-555555555555"
LOCATION_SUFFIX = "westeurope-1"


def variable(name: str) -> Any:
    if name in TEST_VARS:
        return TEST_VARS[name]
    assert "default" in CONFIG.variables[name], f"variable {name} needs a test value"
    return CONFIG.variables[name]["default"]


def suffix() -> str:
    # main.tf: substr(sha1("${var.subscription_id}/${var.name}"), 0, 6)
    assert CONFIG.locals["suffix"] == '${substr(sha1("${var.subscription_id}/${var.name}"), 0, 6)}'
    text = f"{variable('subscription_id')}/{variable('name')}"
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[
        :6
    ]  # a name, as in main.tf


def reference(expr: str) -> str:
    """The value an interpolated expression of the settings takes with TEST_VARS; an
    expression not listed here fails the test (name its value below)."""
    if m := re.fullmatch(r"var\.([a-z_]+)", expr):
        return str(variable(m[1]))
    if m := re.fullmatch(r"tostring\(var\.([a-z_]+)\)", expr):
        return str(variable(m[1]))
    if m := re.fullmatch(r"local\.([a-z_]+)", expr):
        value = CONFIG.locals[m[1]]
        assert isinstance(value, str), expr
        return interpolate(value)
    if m := re.fullmatch(r'azurerm_storage_queue\.work\["([a-z_]+)"\]\.name', expr):
        queue = CONFIG.resource("azurerm_storage_queue", "work")
        assert queue["for_each"] == "${local.queues}" and queue["name"] == "${each.value}"
        return str(CONFIG.locals["queues"][m[1]])
    registry = variable("registry_id").split("/")
    # values computed only when named: some of them interpolate further locals
    known: dict[str, Callable[[], str]] = {
        "azurerm_storage_account.regwarden.name": lambda: interpolate(
            CONFIG.resource("azurerm_storage_account", "regwarden")["name"]
        ),
        "azurerm_user_assigned_identity.functions.client_id": lambda: CLIENT_ID,
        'trimsuffix(azurerm_key_vault.regwarden.vault_uri, "/")': lambda: (
            f"https://{interpolate(CONFIG.locals['vault_name'])}.vault.azure.net"
        ),
        "azurerm_eventgrid_topic.alerts.endpoint": lambda: (
            f"https://{interpolate(CONFIG.resource('azurerm_eventgrid_topic', 'alerts')['name'])}"
            f".{LOCATION_SUFFIX}.eventgrid.azure.net/api/events"
        ),
        "data.azurerm_container_registry.gated.login_server": lambda: f"{registry[8]}.azurecr.io",
        'substr(sha1("${var.subscription_id}/${var.name}"), 0, 6)': suffix,
        # scan_subscriptions: the variable's, or the registry's subscription
        'join(",", local.scan_subscriptions)': lambda: ",".join(
            variable("scan_subscriptions") or [registry[2]]
        ),
        'join(",", concat([local.registry_host], var.extra_registry_hosts))': lambda: ",".join(
            [f"{registry[8]}.azurecr.io", *variable("extra_registry_hosts")]
        ),
        'join(",", var.retention_prefixes)': lambda: ",".join(variable("retention_prefixes")),
        'azurerm_storage_container.regwarden["reports"].name': lambda: interpolate(
            CONFIG.locals["containers"]["reports"]
        ),
    }
    assert expr in known, f"no test value for the expression {expr!r}"
    return known[expr]()


def _closing(text: str, start: int) -> int:
    """The index of the `}` closing the `${` at `start`."""
    depth = 0
    for i in range(start + 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise AssertionError(f"unbalanced interpolation in {text!r}")


def interpolate(value: Any) -> str:
    """A template's value: literal text, and each `${...}` through `reference`."""
    text, out, at = str(value), [], 0
    while (start := text.find("${", at)) >= 0:
        end = _closing(text, start)
        out += [text[at:start], reference(text[start + 2 : end])]
        at = end + 1
    return "".join([*out, text[at:]])


def app_settings() -> dict[str, str]:
    raw = CONFIG.locals["app_settings"]
    assert isinstance(raw, dict)
    return {k: interpolate(v) for k, v in raw.items()}


def test_the_app_settings_are_the_design_notes_and_read_back_through_the_functions_settings() -> (
    None
):
    raw = CONFIG.locals["app_settings"]
    assert set(raw) == APP_SETTINGS, (
        f"missing: {sorted(APP_SETTINGS - set(raw))}; extra: {sorted(set(raw) - APP_SETTINGS)}"
    )
    env = app_settings()
    settings_mod = _import("functions.azure._settings")
    settings = settings_mod.Settings.from_env(env)
    account = f"{variable('name')}st{suffix()}"
    assert re.fullmatch(r"[a-z0-9]{3,24}", account), account
    # the ledger: azuretable://ACCOUNT?prefix=PREFIX on this deployment's storage account
    ledger = urlsplit(settings.ledger)
    assert (ledger.scheme, ledger.netloc) == ("azuretable", account)
    assert parse_qs(ledger.query) == {"prefix": [variable("ledger_prefix")]}
    assert settings.storage_account == account == env["AzureWebJobsStorage__accountName"]
    assert (settings.recheck_queue, settings.retention_queue) == (
        settings_mod.RECHECK_QUEUE,
        settings_mod.RETENTION_QUEUE,
    )
    assert {settings.recheck_queue, settings.retention_queue} == QUEUES
    assert settings.alerts_topic is not None
    topic = urlsplit(settings.alerts_topic)
    assert topic.scheme == "https" and topic.path == "/api/events"
    assert topic.hostname is not None and topic.hostname.endswith(".eventgrid.azure.net")
    assert settings.key_vault is not None and re.fullmatch(
        r"https://[a-z][a-z0-9-]{1,22}[a-z0-9]\.vault\.azure\.net", settings.key_vault
    ), settings.key_vault
    assert settings.policy == variable("policy")
    assert settings.subscriptions == (variable("registry_id").split("/")[2],)
    assert settings.allowed_hosts == ("acmeimages.azurecr.io",)
    assert settings.max_dequeue == variable("max_dequeue_count")
    host = json.loads((ROOT / "functions" / "azure" / "host.json").read_text())
    assert settings.max_dequeue == host["extensions"]["queues"]["maxDequeueCount"]
    assert (settings.policy_ttl, settings.recovery_settle) == (300, 600)

    report = _import("functions.azure._report").ReportSettings.from_env(env)
    assert report.registry == "acmeimages.azurecr.io"
    assert report.account == account
    assert report.container == f"{variable('name')}-reports"
    # retention's scope: the prefixes given, or ("",), every repository
    assert report.repositories == (tuple(variable("retention_prefixes")) or ("",))

    retention = settings_mod.RetentionSettings.from_env(env)
    assert retention.registry == "acmeimages.azurecr.io"
    assert retention.mode == "plan" == variable("retention_mode")
    assert retention.inventory == "azure" == variable("retention_inventory")
    assert retention.concurrency == variable("retention_concurrency")
    assert retention.budget == variable("retention_budget")

    # the identity: the one the app runs as, for the SDKs and for the host's storage
    assert env["AZURE_CLIENT_ID"] == env["AzureWebJobsStorage__clientId"] == CLIENT_ID
    assert env["AzureWebJobsStorage__credential"] == "managedidentity"
    assert env["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        f"ClientId={CLIENT_ID};Authorization=AAD"
    )


def test_names_fit_azure_limits_at_the_longest_name() -> None:
    condition = CONFIG.variables["name"]["validation"][0]["condition"]
    longest = re.search(r"\{2,(\d+)\}", condition)
    assert longest is not None
    name = "a" * (int(longest[1]) + 1)
    TEST_VARS["name"] = name
    try:
        storage = interpolate(CONFIG.locals["storage_account"])
        vault = interpolate(CONFIG.locals["vault_name"])
        app = interpolate(
            CONFIG.resource("azurerm_function_app_flex_consumption", "regwarden")["name"]
        )
    finally:
        del TEST_VARS["name"]
    assert re.fullmatch(r"[a-z0-9]{3,24}", storage), storage
    assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]", vault), vault
    assert len(app) <= 32, app  # host id collisions beyond 32 characters


def test_each_trigger_is_fed_by_what_the_terraform_builds() -> None:
    found = triggers()
    env = app_settings()
    queues = {str(q) for q in CONFIG.locals["queues"].values()}
    assert queues == QUEUES
    queue_fed = {n: t for n, t in found.items() if t["type"] == "queueTrigger"}
    assert {t["queueName"] for t in queue_fed.values()} == queues
    for name, trigger in queue_fed.items():
        # identity-based connection: CONNECTION__accountName among the app settings
        assert f"{trigger['connection']}__accountName" in env, name
    for name, trigger in found.items():
        if trigger["type"] == "timerTrigger":
            schedule = re.fullmatch(r"%([A-Za-z_]+)%", trigger["schedule"])
            assert schedule, f"{name}: a schedule fixed in code, not an app setting"
            assert len(env[schedule[1]].split()) == 6, f"{name}: NCRONTAB has 6 fields"
    grid_fed = {n for n, t in found.items() if t["type"] == "eventGridTrigger"}
    assert grid_fed == EVENT_GRID_FED
    subscribed = {
        body["azure_function_endpoint"][0]["function_id"].rsplit("/", 1)[-1]
        for kind in (
            "azurerm_eventgrid_system_topic_event_subscription",
            "azurerm_eventgrid_event_subscription",
        )
        for body in CONFIG.of_type(kind).values()
        if "azure_function_endpoint" in body
    }
    assert subscribed == grid_fed
    assert CONFIG.locals["function_id"] == "${azurerm_function_app_flex_consumption.regwarden.id}"
    # every queue the host may poison has its poison queue declared
    poison = CONFIG.resource("azurerm_storage_queue", "poison")
    assert poison["for_each"] == "${local.queues}" and poison["name"] == "${each.value}-poison"


def test_no_secret_in_any_app_setting_or_anywhere_in_the_configuration() -> None:
    raw = CONFIG.locals["app_settings"]
    secretive = re.compile(r"(ACCESS_?KEY|SECRET|PASSWORD|TOKEN|CONNECTION_?STRING|SAS)", re.I)
    for name, value in raw.items():
        assert not secretive.search(name), name
        assert not re.search(r"(access_key|connection_string|primary_key|secret)", str(value)), name
    text = CONFIG.text
    for attribute in (
        "primary_access_key",
        "primary_connection_string",
        "storage_access_key",
        "storage_account_access_key",
        "function_app_storage_account_access_key",
        "azurerm_key_vault_secret",
        "azurerm_eventgrid_topic.alerts.primary_access_key",
    ):
        assert attribute not in text, attribute
    # the storage account and the alerts topic take no key at all
    account = CONFIG.resource("azurerm_storage_account", "regwarden")
    assert account["shared_access_key_enabled"] is False
    assert account["default_to_oauth_authentication"] is True
    assert CONFIG.resource("azurerm_eventgrid_topic", "alerts")["local_auth_enabled"] is False
    assert (
        CONFIG.resource("azurerm_application_insights", "regwarden")[
            "local_authentication_disabled"
        ]
        is True
    )


def test_the_storage_account_is_tls_12_private_and_keeps_containers_and_queues() -> None:
    account = CONFIG.resource("azurerm_storage_account", "regwarden")
    assert account["name"] == "${local.storage_account}"
    assert account["min_tls_version"] == "TLS1_2"
    assert account["https_traffic_only_enabled"] is True
    assert account["allow_nested_items_to_be_public"] is False
    assert account["local_user_enabled"] is False
    containers = CONFIG.resource("azurerm_storage_container", "regwarden")
    assert containers["for_each"] == "${local.containers}"
    assert containers["container_access_type"] == "private"
    assert set(CONFIG.locals["containers"]) == {"deployment", "dead_letters", "reports"}
    work = CONFIG.resource("azurerm_storage_queue", "work")
    assert work["storage_account_name"] == "${azurerm_storage_account.regwarden.name}"


def test_the_vault_authorizes_by_rbac_and_keeps_what_is_deleted() -> None:
    vault = CONFIG.resource("azurerm_key_vault", "regwarden")
    assert vault["name"] == "${local.vault_name}"
    assert vault["enable_rbac_authorization"] is True
    assert vault["purge_protection_enabled"] is True
    assert 7 <= vault["soft_delete_retention_days"] <= 90
    assert "access_policy" not in vault


# -- Event Grid --------------------------------------------------------------------------------


def _delivery(body: dict[str, Any]) -> None:
    """Retries, then dead letters in the dead-letters container, written by Event Grid's
    own identity."""
    retry = block(body, "retry_policy")
    assert retry == {
        "max_delivery_attempts": "${var.event_max_delivery_attempts}",
        "event_time_to_live": "${var.event_time_to_live}",
    }
    assert block(body, "storage_blob_dead_letter_destination") == {
        "storage_account_id": "${azurerm_storage_account.regwarden.id}",
        "storage_blob_container_name": "${local.dead_letter_container}",
    }
    assert block(body, "dead_letter_identity") == {
        "type": "UserAssigned",
        "user_assigned_identity": "${azurerm_user_assigned_identity.eventgrid.id}",
    }
    assert "${azurerm_role_assignment.dead_letters}" in body["depends_on"]


def test_the_registrys_pushes_and_deletes_reach_on_push_with_retries_and_dead_letters() -> None:
    topic = CONFIG.resource("azurerm_eventgrid_system_topic", "registry")
    assert topic["source_resource_id"] == "${var.registry_id}"
    # beside its source: the registry's subscription (a provider of its own) and group
    providers = {p["azurerm"].get("alias"): p["azurerm"] for p in CONFIG.providers}
    assert providers["registry"]["subscription_id"] == "${local.registry_subscription}"
    assert providers[None]["subscription_id"] == "${var.subscription_id}"
    assert CONFIG.locals["registry_subscription"] == "${local.registry_parts[2]}"
    assert CONFIG.locals["registry_group"] == "${local.registry_parts[4]}"
    assert topic["provider"] == "${azurerm.registry}"
    assert topic["resource_group_name"] == "${local.registry_group}"
    assert topic["location"] == "${data.azurerm_container_registry.gated.location}"
    assert CONFIG.data[("azurerm_container_registry", "gated")]["provider"] == (
        "${azurerm.registry}"
    )
    assert topic["topic_type"] == "Microsoft.ContainerRegistry.Registries"
    assert block(topic, "identity")["identity_ids"] == [
        "${azurerm_user_assigned_identity.eventgrid.id}"
    ]
    sub = CONFIG.resource("azurerm_eventgrid_system_topic_event_subscription", "on_push")
    assert sub["provider"] == "${azurerm.registry}"
    assert sub["system_topic"] == "${azurerm_eventgrid_system_topic.registry.name}"
    assert sub["resource_group_name"] == (
        "${azurerm_eventgrid_system_topic.registry.resource_group_name}"
    )
    assert sub["event_delivery_schema"] == "EventGridSchema"
    assert sub["included_event_types"] == "${local.acr_event_types}"
    assert CONFIG.locals["acr_event_types"] == ACR_EVENTS
    endpoint = block(sub, "azure_function_endpoint")
    assert endpoint["function_id"] == "${local.function_id}/functions/on_push"
    assert endpoint["max_events_per_batch"] == 1  # one event, one invocation, one retry
    _delivery(sub)
    assert CONFIG.locals["dead_letter_container"] == (
        '${azurerm_storage_container.regwarden["dead_letters"].name}'
    )
    # 1 to 30 attempts, 1 to 1440 minutes: Event Grid's bounds
    assert 1 <= variable("event_max_delivery_attempts") <= 30
    assert 1 <= variable("event_time_to_live") <= 1440


def test_the_alerts_topic_takes_cloudevents_from_identities_and_feeds_notify() -> None:
    topic = CONFIG.resource("azurerm_eventgrid_topic", "alerts")
    assert topic["input_schema"] == "CloudEventSchemaV1_0"
    assert topic["local_auth_enabled"] is False
    sub = CONFIG.resource("azurerm_eventgrid_event_subscription", "notify")
    assert sub["scope"] == "${azurerm_eventgrid_topic.alerts.id}"
    assert sub["event_delivery_schema"] == "CloudEventSchemaV1_0"
    assert block(sub, "azure_function_endpoint")["function_id"] == (
        "${local.function_id}/functions/notify"
    )
    assert "advanced_filter" not in sub  # notify gets every alert; the policy routes
    _delivery(sub)
    # a function subscription is created once the bundle is published (Event Grid checks
    # that the function exists): both gated on the same variable
    for kind, name in (
        ("azurerm_eventgrid_system_topic_event_subscription", "on_push"),
        ("azurerm_eventgrid_event_subscription", "notify"),
    ):
        assert CONFIG.resource(kind, name)["count"] == "${var.functions_published ? 1 : 0}"


def test_each_team_subscribes_with_advanced_filters_on_team_severity_and_verdict() -> None:
    sub = CONFIG.resource("azurerm_eventgrid_event_subscription", "team")
    assert sub["for_each"] == "${var.team_subscriptions}"
    assert sub["scope"] == "${azurerm_eventgrid_topic.alerts.id}"
    assert sub["event_delivery_schema"] == "CloudEventSchemaV1_0"
    assert block(sub, "webhook_endpoint")["url"] == "${each.value.webhook_url}"
    filters = block(sub, "advanced_filter")
    # data.team always; data.severity and data.verdict when the team lists them
    assert filters["string_in"] == [{"key": "data.team", "values": "${each.value.teams}"}]
    optional = {d["string_in"]["content"][0]["key"]: d["string_in"] for d in filters["dynamic"]}
    assert set(optional) == {"data.severity", "data.verdict"}
    for key, field_ in (("data.severity", "severities"), ("data.verdict", "verdicts")):
        assert optional[key]["for_each"] == (
            f"${{length(each.value.{field_}) > 0 ? [each.value.{field_}] : []}}"
        )
        assert optional[key]["content"][0]["values"] == "${string_in.value}"
    _delivery(sub)
    # the values the variable accepts are the values an alert carries
    model = _import("regwarden.model")
    validations = " ".join(
        str(v["condition"]) for v in CONFIG.variables["team_subscriptions"]["validation"]
    )
    for severity in model.Severity:
        assert f'"{severity.name.lower()}"' in validations, severity
    for outcome in model.Outcome:
        assert f'"{outcome.value}"' in validations, outcome


# -- the identity ------------------------------------------------------------------------------


def identity_grants(quarantine_policy: bool, aks: list[str]) -> set[tuple[str, str]]:
    """identity.tf's identity_access expanded the way identity_grants expands it: (role, scope)."""
    rows = CONFIG.locals["identity_access"]
    expansion = CONFIG.locals["identity_grants"]
    assert "local.identity_access" in expansion and "local.identity_scopes[row.where]" in expansion
    registry = variable("registry_id")
    scopes = {
        "registry": [registry],
        "quarantine_policy": [registry] if quarantine_policy else [],
        "storage": ["STORAGE"],
        "vault": ["VAULT"],
        "alerts_topic": ["ALERTS_TOPIC"],
        "insights": ["INSIGHTS"],
        "subscriptions": [f"/subscriptions/{registry.split('/')[2]}"],
        "aks_clusters": aks,
    }
    return {(row["role"], scope) for row in rows for scope in scopes[row["where"]]}


@pytest.mark.parametrize("quarantine_policy", [False, True])
def test_the_identity_has_exactly_its_roles_each_on_its_narrowest_scope(
    quarantine_policy: bool,
) -> None:
    rows = CONFIG.locals["identity_access"]
    assert {r["role"]: r["where"] for r in rows} == ROLES
    assert len(rows) == len(ROLES)
    assert CONFIG.locals["identity_scopes"] == SCOPES
    aks = [
        "/subscriptions/s/resourceGroups/k/providers/Microsoft.ContainerService/managedClusters/a",
    ]
    grants = identity_grants(quarantine_policy, aks)
    registry = variable("registry_id")
    on_registry = {role for role, scope in grants if scope == registry}
    expected = {"AcrPull", "AcrPush", "AcrDelete"} | (
        {"AcrQuarantineWriter"} if quarantine_policy else set()
    )
    assert on_registry == expected
    # at subscription scope: Reader and Security Reader, nothing else
    at_subscription = {
        role for role, scope in grants if re.fullmatch(r"/subscriptions/[^/]+", scope)
    }
    assert at_subscription == {"Reader", "Security Reader"}
    assert {scope for role, scope in grants if role.startswith("Azure Kubernetes")} == set(aks)
    assert not {role for role, _ in grants} & BROAD
    # the grants are made by one resource, to the functions' identity
    assignment = CONFIG.resource("azurerm_role_assignment", "functions")
    assert assignment["for_each"] == "${local.identity_grants}"
    assert assignment["role_definition_name"] == "${each.value.role}"
    assert assignment["scope"] == "${each.value.scope}"
    assert assignment["principal_id"] == "${azurerm_user_assigned_identity.functions.principal_id}"


def test_no_other_role_assignment_than_the_identitys_and_event_grids_dead_letters() -> None:
    assignments = CONFIG.of_type("azurerm_role_assignment")
    assert set(assignments) == {"functions", "dead_letters"}
    dead = assignments["dead_letters"]
    assert dead["role_definition_name"] == "Storage Blob Data Contributor"
    assert dead["principal_id"] == "${azurerm_user_assigned_identity.eventgrid.principal_id}"
    # the dead-letters container alone, not the account
    assert dead["scope"].endswith(
        '/blobServices/default/containers/${azurerm_storage_container.regwarden["dead_letters"].name}'
    )
    for kind in (
        "azurerm_role_definition",
        "azurerm_key_vault_access_policy",
        "azurerm_role_assignment_marketplace",
    ):
        assert not CONFIG.of_type(kind), kind
    assert not [s for s in strings(CONFIG.resources) if s in BROAD]


def test_outputs_name_the_app_topic_queues_and_dead_letters() -> None:
    assert {
        "function_app_name",
        "alerts_topic_endpoint",
        "alerts_topic_id",
        "queues",
        "dead_letter_container",
        "key_vault_uri",
        "key_vault_name",
        "identity_client_id",
    } <= set(CONFIG.outputs)
    assert CONFIG.outputs["alerts_topic_endpoint"]["value"] == (
        "${azurerm_eventgrid_topic.alerts.endpoint}"
    )


def test_old_reports_are_deleted_by_the_accounts_lifecycle_policy() -> None:
    policy = CONFIG.resource("azurerm_storage_management_policy", "reports")
    assert policy["storage_account_id"] == "${azurerm_storage_account.regwarden.id}"
    (rule,) = policy["rule"]
    assert rule["enabled"] is True
    (filters,) = rule["filters"]
    assert filters["blob_types"] == ["blockBlob"]
    # the container's report prefix only: the function writes there by default
    report = _import("functions.azure._report")
    env = app_settings()
    settings = report.ReportSettings.from_env(env)
    assert "REGWARDEN_REPORT_PREFIX" not in env and settings.prefix == "reports/"
    (prefix,) = filters["prefix_match"]
    assert prefix == '${azurerm_storage_container.regwarden["reports"].name}/reports/'
    (actions,) = rule["actions"]
    (base,) = actions["base_blob"]
    assert base["delete_after_days_since_modification_greater_than"] == (
        "${var.report_retention_days}"
    )
    assert CONFIG.variables["report_retention_days"]["type"] == "number"
    assert len(env["REGWARDEN_REPORT_SCHEDULE"].split()) == 6
