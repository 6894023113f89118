output "pool_template_defaults" {
  description = "The aci:push template variables' defaults, exactly what the provisioner's steps publish (context.defaults): subscription_id, resource_group_name, location, identities (the runtime identity) and image_registry ({registry_url = the registry's login server, identity = the runtime identity}). `skylane pool create NAME --type aci:push --from-terraform-output FILE` reads it."
  value = {
    subscription_id     = var.subscription_id
    resource_group_name = local.resource_group_name
    location            = var.location
    identities          = [azurerm_user_assigned_identity.runtime.id]
    image_registry = {
      registry_url = azurerm_container_registry.this.login_server
      identity     = azurerm_user_assigned_identity.runtime.id
    }
  }
}

output "pool_settings" {
  description = "The pool's settings, as the provisioner leaves them: subscription_id, resource_group_name, location, and control_plane (the lower-case object id) when control_plane_object_id is set."
  value = merge(
    {
      subscription_id     = var.subscription_id
      resource_group_name = local.resource_group_name
      location            = var.location
    },
    { for key, value in { control_plane = local.control_plane } : key => value if value != null },
  )
}

output "pool_credentials" {
  description = "The pool's credentials for the ACI adapter (the provisioner's dispatcher_credentials): {managed_identity_client_id = the dispatcher identity's client id}. No secret."
  value = {
    managed_identity_client_id = azurerm_user_assigned_identity.dispatcher.client_id
  }
}

output "image_registry" {
  description = "The container registry's login server (<registry>.azurecr.io), where run images are pushed."
  value       = azurerm_container_registry.this.login_server
}

output "image_repository" {
  description = "Where `skylane deploy` pushes images: the registry's login server (as the provisioner's image_repository output)."
  value       = azurerm_container_registry.this.login_server
}

output "registry_id" {
  description = "The container registry's resource id."
  value       = azurerm_container_registry.this.id
}

output "registry_name" {
  description = "The container registry's name."
  value       = azurerm_container_registry.this.name
}

output "resource_group_id" {
  description = "The resource group's resource id."
  value       = one(concat(azurerm_resource_group.this[*].id, data.azurerm_resource_group.this[*].id))
}

output "resource_group_name" {
  description = "The resource group's name (where the runs' container groups go)."
  value       = local.group_name
}

output "runtime_identity_id" {
  description = "The runtime identity's resource id: the container groups run as it and pull their image with it."
  value       = azurerm_user_assigned_identity.runtime.id
}

output "runtime_principal_id" {
  description = "The runtime identity's principal (object) id."
  value       = azurerm_user_assigned_identity.runtime.principal_id
}

output "runtime_client_id" {
  description = "The runtime identity's client id."
  value       = azurerm_user_assigned_identity.runtime.client_id
}

output "dispatcher_identity_id" {
  description = "The dispatcher identity's resource id: attach it where the control plane (or an azure-aci-worker) runs, or federate it with the control plane's workload identity."
  value       = azurerm_user_assigned_identity.dispatcher.id
}

output "dispatcher_principal_id" {
  description = "The dispatcher identity's principal (object) id."
  value       = azurerm_user_assigned_identity.dispatcher.principal_id
}

output "dispatcher_client_id" {
  description = "The dispatcher identity's client id (pool_credentials.managed_identity_client_id)."
  value       = azurerm_user_assigned_identity.dispatcher.client_id
}

output "dispatch_role_id" {
  description = "The dispatch role's role definition id (/subscriptions/S/providers/Microsoft.Authorization/roleDefinitions/GUID), for assigning it to another principal at the resource group."
  value       = azurerm_role_definition.dispatch.role_definition_resource_id
}
