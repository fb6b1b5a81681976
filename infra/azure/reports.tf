# The scheduled report's blobs live in the reports container (local.containers, private like
# the others) of the deployment's storage account; the account's lifecycle management policy
# deletes them var.report_retention_days after they were last written. The function app's
# identity already writes blobs in this account (the host's deployment package, as Storage
# Blob Data Owner): the report needs no grant of its own.

resource "azurerm_storage_management_policy" "reports" {
  storage_account_id = azurerm_storage_account.regwarden.id

  rule {
    name    = "expire-old-reports"
    enabled = true

    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${azurerm_storage_container.regwarden["reports"].name}/reports/"]
    }

    actions {
      base_blob {
        delete_after_days_since_modification_greater_than = var.report_retention_days
      }
    }
  }
}
