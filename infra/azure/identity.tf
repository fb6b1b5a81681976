# The functions' one identity (user-assigned, so its grants exist before the first cold
# start) and everything it may do, each grant on the narrowest scope the service has.
# Event Grid's own identity may only write dead letters.

resource "azurerm_user_assigned_identity" "functions" {
  name                = "${var.name}-functions"
  resource_group_name = azurerm_resource_group.regwarden.name
  location            = azurerm_resource_group.regwarden.location
  tags                = var.tags
}

locals {
  # Who grants what, where. `where` names a list of scopes in identity_scopes.
  identity_access = [
    # the registry: read to judge (manifests, referrers, signatures); push for the
    # quarantined-<digest> tag, move, promotion and the lock attributes (PATCH of
    # writeEnabled/deleteEnabled/readEnabled is a metadata write); delete for retention,
    # move and untagging
    { role = "AcrPull", where = "registry" },
    { role = "AcrPush", where = "registry" },
    { role = "AcrDelete", where = "registry" },
    # PATCH quarantineState where the registry's quarantine policy is on
    { role = "AcrQuarantineWriter", where = "quarantine_policy" },
    # the ledger (tables), rechecks and retention work (queues), and the host's own
    # blobs: leases, timers' schedule status, the deployment package
    { role = "Storage Table Data Contributor", where = "storage" },
    { role = "Storage Queue Data Contributor", where = "storage" },
    { role = "Storage Blob Data Owner", where = "storage" },
    { role = "Key Vault Secrets User", where = "vault" },
    { role = "EventGrid Data Sender", where = "alerts_topic" },
    # telemetry with Entra ID: the component refuses instrumentation-key ingestion
    { role = "Monitoring Metrics Publisher", where = "insights" },
    # Resource Graph returns only rows the caller may read. Defender's sub-assessments
    # (securityresources) hang off the subscription's assessments with no narrower
    # resource to grant on, and the Container Apps inventory reads every app and job of
    # the subscription: Reader and Security Reader there, and no other role at that scope.
    { role = "Reader", where = "subscriptions" },
    { role = "Security Reader", where = "subscriptions" },
    # listClusterUserCredential on the named clusters only (the Kubernetes API then
    # decides what the identity may list: docs/azure.md)
    { role = "Azure Kubernetes Service Cluster User Role", where = "aks_clusters" },
  ]
  identity_scopes = {
    registry          = [var.registry_id]
    quarantine_policy = var.acr_quarantine_policy ? [var.registry_id] : []
    storage           = [azurerm_storage_account.regwarden.id]
    vault             = [azurerm_key_vault.regwarden.id]
    alerts_topic      = [azurerm_eventgrid_topic.alerts.id]
    insights          = [azurerm_application_insights.regwarden.id]
    subscriptions     = [for s in local.scan_subscriptions : "/subscriptions/${s}"]
    aks_clusters      = var.aks_cluster_ids
  }
  # keyed by what is known at plan time (the scope's position, not its id)
  identity_grants = merge([
    for row in local.identity_access : {
      for i, scope in local.identity_scopes[row.where] :
      "${row.where}/${i}/${row.role}" => { role = row.role, scope = scope }
    }
  ]...)
}

resource "azurerm_role_assignment" "functions" {
  for_each = local.identity_grants

  scope                = each.value.scope
  role_definition_name = each.value.role
  principal_id         = azurerm_user_assigned_identity.functions.principal_id
  principal_type       = "ServicePrincipal"
}

# Event Grid's identity (the registry's system topic and the alerts topic): it writes what it
# could not deliver into the dead-letters container, and may write nowhere else.
resource "azurerm_user_assigned_identity" "eventgrid" {
  name                = "${var.name}-eventgrid"
  resource_group_name = azurerm_resource_group.regwarden.name
  location            = azurerm_resource_group.regwarden.location
  tags                = var.tags
}

resource "azurerm_role_assignment" "dead_letters" {
  scope                = "${azurerm_storage_account.regwarden.id}/blobServices/default/containers/${azurerm_storage_container.regwarden["dead_letters"].name}"
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.eventgrid.principal_id
  principal_type       = "ServicePrincipal"
}
