# The resource group, the names and the app settings everything else is built from.
#
#   ACR ─▶ system topic ─▶ subscription (ImagePushed, ImageDeleted) ─▶ on_push ─┐
#   timer %REGWARDEN_SCAN_SCHEDULE% (Defender, Resource Graph) ─────▶ on_scan ─┤ Table ledger
#   queue regwarden-rechecks (visibility timeout = delay) ─────────▶ recheck ─┤
#   timer %REGWARDEN_RECOVERY_SCHEDULE% ──────────────────────────▶ recovery ─┤
#                                                                            ▼
#   team subscriptions (advanced filters) ◀── alerts topic ──▶ subscription ─▶ notify ─▶ Slack / Teams / webhook
#   timer %REGWARDEN_RETENTION_SCHEDULE% ─▶ retention_fanout ─▶ regwarden-retention-work ─▶ retention_worker
#
# Event Grid dead-letters what it could not deliver to the dead-letters blob container; the
# Functions host moves a queue message that failed maxDequeueCount times to QUEUE-poison.

data "azurerm_container_registry" "gated" {
  provider = azurerm.registry

  name                = local.registry_name
  resource_group_name = local.registry_group
}

resource "azurerm_resource_group" "regwarden" {
  name     = "${var.name}-rg"
  location = var.location
  tags     = var.tags
}

locals {
  # /subscriptions/S/resourceGroups/G/providers/Microsoft.ContainerRegistry/registries/NAME
  registry_parts        = split("/", var.registry_id)
  registry_subscription = local.registry_parts[2]
  registry_group        = local.registry_parts[4]
  registry_name         = local.registry_parts[8]
  registry_host         = data.azurerm_container_registry.gated.login_server
  scan_subscriptions    = length(var.scan_subscriptions) > 0 ? var.scan_subscriptions : [local.registry_subscription]

  # Storage account and vault names are global: a stable suffix from the subscription and
  # name keeps a second deployment elsewhere from colliding.
  suffix          = substr(sha1("${var.subscription_id}/${var.name}"), 0, 6)
  storage_account = "${var.name}st${local.suffix}"
  vault_name      = "${var.name}-kv-${local.suffix}"

  # queues the functions read (the host adds QUEUE-poison for what failed maxDequeueCount times)
  queues = {
    rechecks       = "regwarden-rechecks"
    retention_work = "regwarden-retention-work"
  }
  containers = {
    deployment   = "${var.name}-deployment"   # the Flex Consumption deployment package
    dead_letters = "${var.name}-dead-letters" # Event Grid's undeliverable events
    reports      = "${var.name}-reports"      # the scheduled report, reports/YYYY/MM/DD/
  }

  # The app settings of functions/azure/_settings.py (one Function App: every function reads
  # the same). No secret is among them: the storage, the vault and the topic are reached
  # with the managed identity, the policy and channel secrets are read from Key Vault.
  app_settings = {
    AzureWebJobsStorage__accountName = azurerm_storage_account.regwarden.name
    AzureWebJobsStorage__credential  = "managedidentity"
    AzureWebJobsStorage__clientId    = azurerm_user_assigned_identity.functions.client_id
    AZURE_CLIENT_ID                  = azurerm_user_assigned_identity.functions.client_id
    # telemetry with the identity too (the component takes no instrumentation key)
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${azurerm_user_assigned_identity.functions.client_id};Authorization=AAD"

    REGWARDEN_POLICY                = var.policy
    REGWARDEN_LEDGER                = "azuretable://${azurerm_storage_account.regwarden.name}?prefix=${var.ledger_prefix}"
    REGWARDEN_STORAGE_ACCOUNT       = azurerm_storage_account.regwarden.name
    REGWARDEN_KEY_VAULT             = trimsuffix(azurerm_key_vault.regwarden.vault_uri, "/")
    REGWARDEN_ALERTS_TOPIC          = azurerm_eventgrid_topic.alerts.endpoint
    REGWARDEN_RECHECK_QUEUE         = azurerm_storage_queue.work["rechecks"].name
    REGWARDEN_RETENTION_QUEUE       = azurerm_storage_queue.work["retention_work"].name
    REGWARDEN_AZURE_SUBSCRIPTION    = join(",", local.scan_subscriptions)
    REGWARDEN_ALLOWED_HOSTS         = join(",", concat([local.registry_host], var.extra_registry_hosts))
    REGWARDEN_MAX_DEQUEUE           = tostring(var.max_dequeue_count)
    REGWARDEN_POLICY_TTL            = "300"
    REGWARDEN_RECOVERY_SETTLE       = "600" # > a gate function's run, so recovery never races one
    REGWARDEN_SCAN_SCHEDULE         = var.scan_schedule
    REGWARDEN_RECOVERY_SCHEDULE     = var.recovery_schedule
    REGWARDEN_RETENTION_SCHEDULE    = var.retention_schedule
    RETENTION_MODE                  = var.retention_mode
    REGWARDEN_RETENTION_REGISTRY    = local.registry_host
    REGWARDEN_RETENTION_PREFIXES    = join(",", var.retention_prefixes)
    REGWARDEN_RETENTION_INVENTORY   = var.retention_inventory
    REGWARDEN_RETENTION_CONCURRENCY = tostring(var.retention_concurrency)
    REGWARDEN_RETENTION_BUDGET      = tostring(var.retention_budget)
    REGWARDEN_REPORT_SCHEDULE       = var.report_schedule
    REGWARDEN_REPORT_CONTAINER      = azurerm_storage_container.regwarden["reports"].name
    REGWARDEN_REPORT_REGISTRY       = local.registry_host
    REGWARDEN_REPORT_PREFIXES       = join(",", var.retention_prefixes)
    MPLCONFIGDIR                    = "/tmp/matplotlib" # matplotlib's cache: /tmp is writable
  }
}
