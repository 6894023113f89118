output "pool_template_defaults" {
  description = "The `ecs:push` template variable defaults, exactly what the provisioner's steps publish in context.defaults: region, cluster, execution_role_arn, task_role_arn, vpc_id, network_configuration (subnets sorted, assignPublicIp ENABLED, securityGroups only with create_vpc), configure_cloudwatch_logs, cloudwatch_logs_options. Read by `skylane pool create NAME --type ecs:push --from-terraform-output FILE`."
  value = {
    region                    = local.region
    cluster                   = aws_ecs_cluster.this.arn
    execution_role_arn        = aws_iam_role.execution.arn
    task_role_arn             = aws_iam_role.task.arn
    vpc_id                    = local.vpc_id
    network_configuration     = local.network_configuration
    configure_cloudwatch_logs = true
    cloudwatch_logs_options = {
      "awslogs-group"        = aws_cloudwatch_log_group.this.name
      "awslogs-region"       = local.region
      "awslogs-create-group" = "false"
    }
  }
}

output "pool_settings" {
  description = "The pool's settings, as the provisioner returns them: {region}."
  value = {
    region = local.region
  }
}

output "pool_credentials" {
  description = "The pool's credentials reference (the provisioner's dispatcher_credentials): {role_arn}, the dispatcher role the control plane assumes."
  value = {
    role_arn = aws_iam_role.dispatcher.arn
  }
}

output "image_registry" {
  description = "The account's ECR registry host in the region (ACCOUNT.dkr.ecr.REGION.amazonaws.com)."
  value       = local.image_registry
}

output "image_repository" {
  description = "URL of the pool's ECR repository (REGISTRY/skylane-SLUG), where the pool's images go."
  value       = aws_ecr_repository.this.repository_url
}

output "repository_arn" {
  description = "ARN of the pool's ECR repository."
  value       = aws_ecr_repository.this.arn
}

output "cluster_arn" {
  description = "ARN of the pool's ECS cluster."
  value       = aws_ecs_cluster.this.arn
}

output "cluster_name" {
  description = "Name of the pool's ECS cluster (skylane-SLUG)."
  value       = aws_ecs_cluster.this.name
}

output "log_group_arn" {
  description = "ARN of the runs' CloudWatch log group (without the `:*` suffix)."
  value       = aws_cloudwatch_log_group.this.arn
}

output "log_group_name" {
  description = "Name of the runs' CloudWatch log group (/skylane/SLUG)."
  value       = aws_cloudwatch_log_group.this.name
}

output "execution_role_arn" {
  description = "ARN of the ECS task execution role (pulls images, writes logs)."
  value       = aws_iam_role.execution.arn
}

output "task_role_arn" {
  description = "ARN of the task role the runs' code runs as (granted nothing by this module)."
  value       = aws_iam_role.task.arn
}

output "dispatcher_role_arn" {
  description = "ARN of the dispatcher role the control plane assumes."
  value       = aws_iam_role.dispatcher.arn
}

output "vpc_id" {
  description = "ID of the VPC the runs use: the one created with create_vpc, else the region's default VPC."
  value       = local.vpc_id
}

output "subnet_ids" {
  description = "IDs of the subnets the runs use, sorted."
  value       = local.subnet_ids
}

output "security_group_ids" {
  description = "IDs of the security group made with create_vpc (one), else an empty list (the tasks then get the VPC's default group)."
  value       = aws_security_group.this[*].id
}
