output "pool_template_defaults" {
  description = "The aci:push template variables' defaults (read by `skylane pool create --from-terraform-output`)."
  value       = module.pool.pool_template_defaults
}

output "pool_settings" {
  description = "The pool's settings (subscription_id, resource_group_name, location, control_plane)."
  value       = module.pool.pool_settings
}

output "pool_credentials" {
  description = "The pool's credentials: the dispatcher identity's client id."
  value       = module.pool.pool_credentials
}

output "image_repository" {
  description = "Where `skylane deploy` pushes images: the registry's login server."
  value       = module.pool.image_repository
}

output "dispatcher_identity_id" {
  description = "The dispatcher identity to attach where the control plane runs."
  value       = module.pool.dispatcher_identity_id
}

output "worker_container_group_id" {
  description = "The worker's container group id (null without create_worker)."
  value       = one(module.worker[*].container_group_id)
}
