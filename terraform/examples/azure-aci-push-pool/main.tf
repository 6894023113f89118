module "pool" {
  source = "../../modules/azure-aci-push-pool"

  subscription_id         = var.subscription_id
  location                = var.location
  pool_name               = var.pool_name
  resource_slug           = var.resource_slug
  control_plane_object_id = var.control_plane_object_id
  tags                    = var.tags
}

# A fallback worker in the pool's resource group, as the dispatcher identity (which holds the
# dispatch role there, so it may also assign the runtime identity to the runs' groups). Its
# image, when in the pool's registry, is pulled with the runtime identity (AcrPull).
module "worker" {
  source = "../../modules/azure-aci-worker"
  count  = var.create_worker ? 1 : 0

  pool_name           = var.pool_name
  resource_slug       = var.resource_slug
  resource_group_name = module.pool.resource_group_name
  location            = var.location
  image               = var.worker_image

  identity_id          = module.pool.dispatcher_identity_id
  identity_client_id   = module.pool.dispatcher_client_id
  runtime_identity_id  = module.pool.runtime_identity_id
  registry_identity_id = module.pool.runtime_identity_id

  api_url                     = var.api_url
  api_key_key_vault_secret_id = var.api_key_key_vault_secret_id
  api_key_key_vault_id        = var.api_key_key_vault_id
  tags                        = var.tags
}
