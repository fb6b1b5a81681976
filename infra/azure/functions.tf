# The Function App (Flex Consumption, Python 3.11): every function of functions/azure/
# function_app.py runs in it with the same app settings (main.tf) and the one identity.

resource "azurerm_log_analytics_workspace" "regwarden" {
  name                = "${var.name}-logs"
  resource_group_name = azurerm_resource_group.regwarden.name
  location            = azurerm_resource_group.regwarden.location
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = var.tags
}

resource "azurerm_application_insights" "regwarden" {
  name                = "${var.name}-insights"
  resource_group_name = azurerm_resource_group.regwarden.name
  location            = azurerm_resource_group.regwarden.location
  workspace_id        = azurerm_log_analytics_workspace.regwarden.id
  application_type    = "other"
  # ingestion only with an Entra ID token (the identity's Monitoring Metrics Publisher):
  # the instrumentation key in the connection string lets nobody write telemetry
  local_authentication_disabled = true
  tags                          = var.tags
}

resource "azurerm_service_plan" "regwarden" {
  # checkov:skip=CKV_AZURE_212:Flex Consumption (FC1) has no worker count: instances start per event and scale from zero; a lost instance's delivery is retried by Event Grid or the queue
  # checkov:skip=CKV_AZURE_225:zone redundancy is not a setting of an FC1 plan; durability is in the ledger (GZRS) and in Event Grid's and the queues' retries
  name                = "${var.name}-plan"
  resource_group_name = azurerm_resource_group.regwarden.name
  location            = azurerm_resource_group.regwarden.location
  os_type             = "Linux"
  sku_name            = "FC1" # Flex Consumption
  tags                = var.tags
}

resource "azurerm_function_app_flex_consumption" "regwarden" {
  name                = "${var.name}-functions-${local.suffix}"
  resource_group_name = azurerm_resource_group.regwarden.name
  location            = azurerm_resource_group.regwarden.location
  service_plan_id     = azurerm_service_plan.regwarden.id

  runtime_name           = "python"
  runtime_version        = "3.11"
  maximum_instance_count = var.maximum_instance_count
  instance_memory_in_mb  = var.instance_memory_in_mb

  # the deployment package, read with the identity
  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${azurerm_storage_account.regwarden.primary_blob_endpoint}${azurerm_storage_container.regwarden["deployment"].name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.functions.id

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.functions.id]
  }
  key_vault_reference_identity_id = azurerm_user_assigned_identity.functions.id

  # on_push's warm instances, none unless asked for: each keeps the gate's cold start (the
  # imports and clients docs/azure.md#cold-start measures) off the first push it judges
  dynamic "always_ready" {
    for_each = var.on_push_always_ready > 0 ? [var.on_push_always_ready] : []
    content {
      name           = "function:on_push"
      instance_count = always_ready.value
    }
  }

  app_settings = local.app_settings

  # on_webhook (HTTP, a function key) and Event Grid's deliveries reach the app publicly;
  # nothing else listens
  https_only                                     = true
  public_network_access_enabled                  = true
  webdeploy_publish_basic_authentication_enabled = false

  site_config {
    application_insights_connection_string = azurerm_application_insights.regwarden.connection_string
    minimum_tls_version                    = "1.2"
    scm_minimum_tls_version                = "1.2"
    http2_enabled                          = true
    remote_debugging_enabled               = false
  }

  tags = var.tags

  # a cold start reads the policy from the vault and the ledger from the tables: grants first
  depends_on = [azurerm_role_assignment.functions]
}
