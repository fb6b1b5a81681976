# The storage account: the Functions host's own state and deployment package, the ledger's
# tables, the rechecks and retention queues, and Event Grid's dead letters. Reached with
# Entra ID only (no shared key, no SAS that a key could sign).

resource "azurerm_storage_account" "regwarden" {
  # checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches the account over its public endpoint (the Functions host is no trusted service), as does Event Grid's dead-lettering; every request is authenticated by Entra ID (shared key off)
  # checkov:skip=CKV_AZURE_59:same reason: public network access is the only path without VNet integration; no anonymous or key-signed access is possible
  # checkov:skip=CKV2_AZURE_33:private endpoints need the VNet integration this deployment does not create (docs/azure.md, limits)
  # checkov:skip=CKV2_AZURE_1:Microsoft-managed keys with infrastructure encryption; the account holds ledger rows, queue messages and the code package, no customer secret
  name                = local.storage_account
  resource_group_name = azurerm_resource_group.regwarden.name
  location            = azurerm_resource_group.regwarden.location
  account_kind        = "StorageV2"
  account_tier        = "Standard"
  # the ledger is the gate's memory of what it decided: keep a copy in the paired region
  account_replication_type = "GZRS"

  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  allow_nested_items_to_be_public   = false
  public_network_access_enabled     = true
  local_user_enabled                = false
  infrastructure_encryption_enabled = true
  cross_tenant_replication_enabled  = false

  network_rules {
    default_action = "Allow"
    bypass         = ["AzureServices", "Logging", "Metrics"]
  }

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }

  queue_properties {
    logging {
      delete                = true
      read                  = true
      write                 = true
      version               = "1.0"
      retention_policy_days = 10
    }
  }

  sas_policy {
    expiration_period = "00.01:00:00"
  }

  tags = var.tags
}

resource "azurerm_storage_container" "regwarden" {
  # checkov:skip=CKV2_AZURE_21:the check wants a Storage Insights link, which needs the account key (shared key is off); the account's blob, queue and table reads, writes and deletes go to Log Analytics through the diagnostic settings below
  for_each = local.containers

  name                  = each.value
  storage_account_id    = azurerm_storage_account.regwarden.id
  container_access_type = "private"
}

# The queues the recheck and retention_worker functions are triggered by, and the poison
# queues the host moves a message to after maxDequeueCount failed attempts (declared so
# they belong to the deployment and outlive no destroy; the host would create them too).
resource "azurerm_storage_queue" "work" {
  for_each = local.queues

  name                 = each.value
  storage_account_name = azurerm_storage_account.regwarden.name
}

resource "azurerm_storage_queue" "poison" {
  for_each = local.queues

  name                 = "${each.value}-poison"
  storage_account_name = azurerm_storage_account.regwarden.name
}

# Every read, write and delete of the account's blobs, queues and tables, to the workspace
# behind Application Insights.
resource "azurerm_monitor_diagnostic_setting" "storage" {
  for_each = toset(["blobServices", "queueServices", "tableServices"])

  name                       = "${var.name}-${each.key}"
  target_resource_id         = "${azurerm_storage_account.regwarden.id}/${each.key}/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.regwarden.id

  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}
