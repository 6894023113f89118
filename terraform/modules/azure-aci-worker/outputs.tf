output "container_group_id" {
  description = "The worker's container group resource id."
  value       = azurerm_container_group.this.id
}

output "container_group_name" {
  description = "The worker's container group name (skylane-<slug>-<instance_name>)."
  value       = azurerm_container_group.this.name
}

output "commands" {
  description = "The command the worker's container runs (skylane worker start --pool ...)."
  value       = local.commands
}

output "identity_ids" {
  description = "The user-assigned identities attached to the worker's container group (identity_id, and the registry identity when the image is pulled with one)."
  value       = local.identity_ids
}

output "dispatch_role_assignment_id" {
  description = "The role assignment grant_dispatch_role made (null without it)."
  value       = one(azurerm_role_assignment.dispatch[*].id)
}

output "runtime_identity_operator_assignment_id" {
  description = "The Managed Identity Operator assignment grant_runtime_identity_operator made (null without it)."
  value       = one(azurerm_role_assignment.runtime_identity_operator[*].id)
}
