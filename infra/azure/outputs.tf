output "function_app_name" {
  description = "The Function App to publish the bundle to (docs/azure.md)."
  value       = azurerm_function_app_flex_consumption.regwarden.name
}

output "function_app_hostname" {
  description = "The Function App's host; on_webhook is https://HOST/api/on_webhook?code=FUNCTION_KEY."
  value       = azurerm_function_app_flex_consumption.regwarden.default_hostname
}

output "identity_client_id" {
  description = "Client id of the functions' user-assigned identity (AZURE_CLIENT_ID)."
  value       = azurerm_user_assigned_identity.functions.client_id
}

output "identity_principal_id" {
  description = "Principal id of the functions' identity: grant it on a second registry or cluster by hand."
  value       = azurerm_user_assigned_identity.functions.principal_id
}

output "alerts_topic_endpoint" {
  description = "The alerts topic's endpoint (REGWARDEN_ALERTS_TOPIC)."
  value       = azurerm_eventgrid_topic.alerts.endpoint
}

output "alerts_topic_id" {
  description = "The alerts topic teams subscribe to, with advanced filters on data.team, data.severity and data.verdict."
  value       = azurerm_eventgrid_topic.alerts.id
}

output "storage_account" {
  description = "The storage account of the ledger's tables, the queues and the dead letters."
  value       = azurerm_storage_account.regwarden.name
}

output "queues" {
  description = "The rechecks and retention work queues, and their poison queues."
  value = {
    work   = { for k, q in azurerm_storage_queue.work : k => q.name }
    poison = { for k, q in azurerm_storage_queue.poison : k => q.name }
  }
}

output "dead_letter_container" {
  description = "The blob container Event Grid dead-letters undeliverable events into."
  value       = local.dead_letter_container
}

output "key_vault_name" {
  description = "The vault's name (az keyvault secret set --vault-name NAME)."
  value       = azurerm_key_vault.regwarden.name
}

output "key_vault_uri" {
  description = "The vault secret://NAME reads from (REGWARDEN_KEY_VAULT)."
  value       = azurerm_key_vault.regwarden.vault_uri
}

output "reports_container" {
  description = "The scheduled reports: reports/YYYY/MM/DD/report.html and report.json in this container of the storage account (deleted after report_retention_days)."
  value       = azurerm_storage_container.regwarden["reports"].name
}
