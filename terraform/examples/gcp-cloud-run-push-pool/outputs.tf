output "pool_template_defaults" {
  description = "The cloud-run:push template variables' defaults (project, region, service_account_name), read by `skylane pool create --from-terraform-output`."
  value       = module.pool.pool_template_defaults
}

output "pool_settings" {
  description = "The pool's settings (project, region, and control_plane when set), read by `skylane pool create --from-terraform-output`."
  value       = module.pool.pool_settings
}

output "pool_credentials" {
  description = "The pool's credentials reference: the dispatcher account the control plane impersonates."
  value       = module.pool.pool_credentials
}

output "image_repository" {
  description = "Where the pool's images are pushed (the pool's image_repository setting)."
  value       = module.pool.image_repository
}

output "worker_service_account" {
  description = "The email of the worker's service account, when deploy_worker is set (else null)."
  value       = var.deploy_worker ? module.worker[0].worker_service_account : null
}
