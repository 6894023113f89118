module "pool" {
  source = "../../modules/gcp-cloud-run-push-pool"

  project              = var.project
  region               = var.region
  pool_name            = var.pool_name
  control_plane_member = var.control_plane_member
}

# The pool's fallback worker. Its account may impersonate the dispatcher, as the control plane
# does once the pool's credentials name it (`skylane pool update NAME --credential
# impersonate_service_account=...`, the hint `pool create --from-terraform-output` prints).
module "worker" {
  source = "../../modules/gcp-cloud-run-worker"
  count  = var.deploy_worker ? 1 : 0

  project   = var.project
  region    = var.region
  pool_name = var.pool_name

  image             = var.worker_image
  api_url           = var.api_url
  api_key_secret_id = var.api_key_secret_id

  runtime_service_account     = module.pool.runtime_service_account
  impersonate_service_account = module.pool.dispatcher_service_account
}
