# Key Vault: the policy (when REGWARDEN_POLICY is secret://NAME) and every secret the gate and
# the channels read (signature keys, Slack and Teams webhook URLs, the webhook signing key).
# Access by RBAC only; the functions' identity may read secret values (Key Vault Secrets
# User) and nothing else. Values are never in Terraform: `az keyvault secret set` (docs/azure.md).

data "azurerm_client_config" "current" {}

resource "azurerm_key_vault" "regwarden" {
  # checkov:skip=CKV_AZURE_109:Flex Consumption without VNet integration reads secrets over the vault's public endpoint (Functions are no trusted service to bypass a Deny); every read is Entra ID and RBAC
  # checkov:skip=CKV_AZURE_189:same reason: public network access is the only path without VNet integration
  # checkov:skip=CKV2_AZURE_32:private endpoints need the VNet integration this deployment does not create (docs/azure.md, limits)
  name                = local.vault_name
  resource_group_name = azurerm_resource_group.regwarden.name
  location            = azurerm_resource_group.regwarden.location
  tenant_id           = data.azurerm_client_config.current.tenant_id
  sku_name            = "standard"

  enable_rbac_authorization     = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = true

  network_acls {
    default_action = "Allow"
    bypass         = "AzureServices"
  }

  tags = var.tags
}
