module "pool" {
  source = "../../modules/aws-ecs-push-pool"

  pool_name                = var.pool_name
  resource_slug            = var.resource_slug
  create_vpc               = var.create_vpc
  dispatcher_principal_arn = var.dispatcher_principal_arn
  tags                     = var.tags
}

# Optional: a worker taking the pool's runs while the control plane cannot push them
# (`skylane pool update NAME --fallback worker`). It uses the pool's credentials reference,
# so it may assume the dispatcher role.
module "worker" {
  source = "../../modules/aws-ecs-worker"
  count  = var.run_worker ? 1 : 0

  pool_name          = var.pool_name
  resource_slug      = var.resource_slug
  image              = var.worker_image
  api_url            = var.api_url
  api_key_secret_arn = var.api_key_secret_arn

  cluster_arn      = module.pool.cluster_arn
  pass_role_arns   = [module.pool.execution_role_arn, module.pool.task_role_arn]
  log_group_arn    = module.pool.log_group_arn
  assume_role_arns = [module.pool.dispatcher_role_arn]

  subnets          = module.pool.subnet_ids
  security_groups  = module.pool.security_group_ids
  assign_public_ip = true

  tags = var.tags
}
