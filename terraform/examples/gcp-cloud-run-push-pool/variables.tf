variable "project" {
  type        = string
  description = "The Google Cloud project id the pool's resources go in."
}

variable "region" {
  type        = string
  description = "The Cloud Run region of the pool, e.g. europe-west1."
}

variable "pool_name" {
  type        = string
  default     = "cloud-run"
  description = "The skylane pool's name (`skylane pool create NAME`)."
}

variable "control_plane_member" {
  type        = string
  default     = null
  description = "The IAM member the skylane control plane runs as (e.g. serviceAccount:EMAIL), allowed to impersonate the pool's dispatcher account. Null: no such grant."
}

variable "deploy_worker" {
  type        = bool
  default     = false
  description = "Whether to run the pool's fallback pull worker as a Cloud Run worker pool (then create the pool with --fallback worker, and set worker_image, api_url and api_key_secret_id)."
}

variable "worker_image" {
  type        = string
  default     = null
  description = "The skylane control-plane image the worker runs (with deploy_worker)."
}

variable "api_url" {
  type        = string
  default     = null
  description = "The skylane API URL the worker talks to (with deploy_worker)."
}

variable "api_key_secret_id" {
  type        = string
  default     = null
  description = "The Secret Manager secret holding the worker's API key, a key with the worker scope (with deploy_worker)."
}
