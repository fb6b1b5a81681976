# Event Grid: the registry's system topic feeding on_push, and the alerts custom topic feeding
# notify and the teams' own subscriptions. Every subscription retries, then dead-letters to
# the dead-letters blob container with Event Grid's identity.
#
# on_push takes the Event Grid schema: it is what ACR's system topic emits natively (no
# conversion on the way), and functions/azure parses both it and CloudEvents 1.0
# (intake/_eventgrid.py) for the HTTP path. The alerts topic takes CloudEvents 1.0 in and
# out: the functions publish CloudEvents, and Event Grid does not turn CloudEvents input into
# its own schema.

locals {
  acr_event_types = [
    "Microsoft.ContainerRegistry.ImagePushed",
    "Microsoft.ContainerRegistry.ImageDeleted",
  ]
  dead_letter_container = azurerm_storage_container.regwarden["dead_letters"].name
  function_id           = azurerm_function_app_flex_consumption.regwarden.id
}

# Beside the registry, in its resource group (Event Grid allows one system topic per source:
# a registry that has one already needs it imported, docs/azure.md).
resource "azurerm_eventgrid_system_topic" "registry" {
  provider = azurerm.registry

  name                = "${var.name}-registry"
  resource_group_name = local.registry_group
  location            = data.azurerm_container_registry.gated.location
  source_resource_id  = var.registry_id
  topic_type          = "Microsoft.ContainerRegistry.Registries"

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.eventgrid.id]
  }

  tags = var.tags
}

resource "azurerm_eventgrid_system_topic_event_subscription" "on_push" {
  provider = azurerm.registry
  count    = var.functions_published ? 1 : 0

  name                  = "${var.name}-on-push"
  system_topic          = azurerm_eventgrid_system_topic.registry.name
  resource_group_name   = azurerm_eventgrid_system_topic.registry.resource_group_name
  event_delivery_schema = "EventGridSchema"
  included_event_types  = local.acr_event_types

  azure_function_endpoint {
    function_id          = "${local.function_id}/functions/on_push"
    max_events_per_batch = 1
  }

  retry_policy {
    max_delivery_attempts = var.event_max_delivery_attempts
    event_time_to_live    = var.event_time_to_live
  }

  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.regwarden.id
    storage_blob_container_name = local.dead_letter_container
  }

  dead_letter_identity {
    type                   = "UserAssigned"
    user_assigned_identity = azurerm_user_assigned_identity.eventgrid.id
  }

  depends_on = [azurerm_role_assignment.dead_letters]
}

# The alerts topic: publishers authenticate with Entra ID only (EventGrid Data Sender).
resource "azurerm_eventgrid_topic" "alerts" {
  # checkov:skip=CKV_AZURE_193:the functions publish without VNet integration, over the topic's public endpoint; local auth is off, so only identities holding EventGrid Data Sender on this topic can publish
  name                          = "${var.name}-alerts-${local.suffix}"
  resource_group_name           = azurerm_resource_group.regwarden.name
  location                      = azurerm_resource_group.regwarden.location
  input_schema                  = "CloudEventSchemaV1_0"
  local_auth_enabled            = false
  public_network_access_enabled = true

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.eventgrid.id]
  }

  tags = var.tags
}

# notify: every alert, to the policy's Slack, Teams and webhook channels.
resource "azurerm_eventgrid_event_subscription" "notify" {
  count = var.functions_published ? 1 : 0

  name                  = "${var.name}-notify"
  scope                 = azurerm_eventgrid_topic.alerts.id
  event_delivery_schema = "CloudEventSchemaV1_0"

  azure_function_endpoint {
    function_id          = "${local.function_id}/functions/notify"
    max_events_per_batch = 1
  }

  retry_policy {
    max_delivery_attempts = var.event_max_delivery_attempts
    event_time_to_live    = var.event_time_to_live
  }

  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.regwarden.id
    storage_blob_container_name = local.dead_letter_container
  }

  dead_letter_identity {
    type                   = "UserAssigned"
    user_assigned_identity = azurerm_user_assigned_identity.eventgrid.id
  }

  depends_on = [azurerm_role_assignment.dead_letters]
}

# A team's own subscription: the alerts whose data.team is one of its teams (and, when it
# lists them, data.severity / data.verdict one of those), delivered to its webhook.
resource "azurerm_eventgrid_event_subscription" "team" {
  for_each = var.team_subscriptions

  name                  = "${var.name}-team-${each.key}"
  scope                 = azurerm_eventgrid_topic.alerts.id
  event_delivery_schema = "CloudEventSchemaV1_0"

  webhook_endpoint {
    url                            = each.value.webhook_url
    max_events_per_batch           = 1
    active_directory_app_id_or_uri = each.value.entra_app_id
    active_directory_tenant_id     = each.value.entra_app_id == null ? null : data.azurerm_client_config.current.tenant_id
  }

  advanced_filter {
    string_in {
      key    = "data.team"
      values = each.value.teams
    }

    dynamic "string_in" {
      for_each = length(each.value.severities) > 0 ? [each.value.severities] : []
      content {
        key    = "data.severity"
        values = string_in.value
      }
    }

    dynamic "string_in" {
      for_each = length(each.value.verdicts) > 0 ? [each.value.verdicts] : []
      content {
        key    = "data.verdict"
        values = string_in.value
      }
    }
  }

  retry_policy {
    max_delivery_attempts = var.event_max_delivery_attempts
    event_time_to_live    = var.event_time_to_live
  }

  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.regwarden.id
    storage_blob_container_name = local.dead_letter_container
  }

  dead_letter_identity {
    type                   = "UserAssigned"
    user_assigned_identity = azurerm_user_assigned_identity.eventgrid.id
  }

  depends_on = [azurerm_role_assignment.dead_letters]
}
