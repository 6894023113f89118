terraform {
  required_version = ">= 1.5"

  required_providers {
    # 3.100 and every 4.x: nothing here needs 4.x (azurerm_role_definition's
    # role_definition_resource_id, azurerm_role_assignment's principal_type and description
    # are in both).
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 3.100"
    }
  }
}
