output "service_name" {
  description = "Name of the worker's ECS service (skylane-SLUG-worker)."
  value       = aws_ecs_service.this.name
}

output "service_arn" {
  description = "ARN of the worker's ECS service."
  value       = aws_ecs_service.this.id
}

output "service_cluster_arn" {
  description = "ARN of the ECS cluster the worker's service runs on."
  value       = local.service_cluster
}

output "task_definition_arn" {
  description = "ARN (with revision) of the worker's task definition."
  value       = aws_ecs_task_definition.this.arn
}

output "execution_role_arn" {
  description = "ARN of the worker's task execution role (pulls the image, writes logs, reads the API key secret)."
  value       = aws_iam_role.execution.arn
}

output "task_role_arn" {
  description = "ARN of the worker's task role (dispatches the pool's runs on cluster_arn)."
  value       = aws_iam_role.task.arn
}

output "log_group_name" {
  description = "Name of the worker's own CloudWatch log group (/skylane/SLUG/worker)."
  value       = aws_cloudwatch_log_group.this.name
}

output "log_group_arn" {
  description = "ARN of the worker's own CloudWatch log group."
  value       = aws_cloudwatch_log_group.this.arn
}
