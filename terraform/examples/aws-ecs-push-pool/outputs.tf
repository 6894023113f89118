output "pool_template_defaults" {
  description = "The `ecs:push` template variable defaults (read by `skylane pool create --from-terraform-output`)."
  value       = module.pool.pool_template_defaults
}

output "pool_settings" {
  description = "The pool's settings: {region}."
  value       = module.pool.pool_settings
}

output "pool_credentials" {
  description = "The pool's credentials reference: {role_arn} of the dispatcher role."
  value       = module.pool.pool_credentials
}

output "image_registry" {
  description = "The ECR registry host of the account and region."
  value       = module.pool.image_registry
}

output "image_repository" {
  description = "URL of the pool's ECR repository."
  value       = module.pool.image_repository
}

output "worker_service_arn" {
  description = "ARN of the worker's ECS service, or null without run_worker."
  value       = one(module.worker[*].service_arn)
}
