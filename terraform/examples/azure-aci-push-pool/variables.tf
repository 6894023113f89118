variable "subscription_id" {
  type        = string
  description = "The Azure subscription (a GUID) the pool's resources go in."

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.subscription_id))
    error_message = "subscription_id must be an Azure subscription id (a GUID)."
  }
}

variable "location" {
  type        = string
  description = "The Azure location, lower case without spaces (westeurope)."
  default     = "westeurope"

  validation {
    condition     = can(regex("^[a-z0-9]+$", var.location))
    error_message = "location must be an Azure location name in lower case without spaces (e.g. westeurope)."
  }
}

variable "pool_name" {
  type        = string
  description = "The skylane pool's name (lower-case letters, digits and dashes here; otherwise set resource_slug)."
  default     = "azure"
}

variable "resource_slug" {
  type        = string
  description = "skylane's slug(pool_name), when pool_name is not already a valid slug. Null: pool_name."
  default     = null
}

variable "control_plane_object_id" {
  type        = string
  description = "An Entra object id also given the dispatch role (`--control-plane`). Null: none."
  default     = null
}

variable "tags" {
  type        = map(string)
  description = "Extra tags on the pool's resources."
  default     = {}
}

variable "create_worker" {
  type        = bool
  description = "Whether to also run a fallback pull worker (`skylane worker start --pool`) in Azure Container Instances, as the pool's dispatcher identity. Needs worker_image, api_url and api_key_key_vault_secret_id."
  default     = false
}

variable "worker_image" {
  type        = string
  description = "The skylane control-plane image the worker runs (e.g. <registry>.azurecr.io/skylane/control-plane:0.1.0; in the pool's registry it is pulled with the runtime identity)."
  default     = null
}

variable "api_url" {
  type        = string
  description = "The skylane API's URL as the worker reaches it (SKYLANE_API_URL)."
  default     = null
}

variable "api_key_key_vault_secret_id" {
  type        = string
  description = "The Key Vault secret id (https://<vault>.vault.azure.net/secrets/<name>) of the worker's API key (worker scope)."
  default     = null
}

variable "api_key_key_vault_id" {
  type        = string
  description = "The Key Vault's resource id, when the vault cannot be found by name in this subscription. Null: looked up."
  default     = null
}
