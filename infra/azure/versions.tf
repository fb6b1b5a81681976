# regwarden on Azure: Azure Container Registry gated by one Function App on Flex Consumption
# (Python 3.11, the v2 programming model of functions/azure/function_app.py), fed by Event
# Grid (the registry's system topic, the alerts custom topic), Storage Queues and timers; the
# ledger in Table Storage; secrets in Key Vault; one user-assigned managed identity. See
# docs/azure.md.
#
# azurerm >= 4.21: azurerm_function_app_flex_consumption.
terraform {
  required_version = ">= 1.5"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.21"
    }
  }
}

provider "azurerm" {
  # The storage account allows no shared key: the provider reaches its data plane (queues,
  # containers) with the deployer's Entra ID token too.
  storage_use_azuread = true
  subscription_id     = var.subscription_id

  features {
    key_vault {
      # a vault with purge protection cannot be purged anyway; never try on destroy
      purge_soft_delete_on_destroy = false
    }
  }
}

# The registry's own subscription (it may differ from subscription_id): the registry is read
# there, and its Event Grid system topic must live there too (Event Grid creates a system
# topic only beside its source, one per source).
provider "azurerm" {
  alias               = "registry"
  storage_use_azuread = true
  subscription_id     = local.registry_subscription

  features {}
}
