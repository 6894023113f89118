terraform {
  required_version = ">= 1.5"

  required_providers {
    # 3.100 and every 4.x (image_registry_credential.user_assigned_identity_id, ip_address_type
    # "None" and data.azurerm_key_vault_secret's version are in both).
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 3.100"
    }
  }
}
