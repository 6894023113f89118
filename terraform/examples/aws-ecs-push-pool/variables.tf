variable "region" {
  type        = string
  description = "AWS region of the pool's resources (e.g. eu-west-1)."

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", var.region))
    error_message = "The region variable must be an AWS region name such as eu-west-1."
  }
}

variable "pool_name" {
  type        = string
  description = "Name of the skylane `ecs:push` pool."
}

variable "resource_slug" {
  type        = string
  default     = null
  description = "The pool's name as a part of AWS resource names, when the pool name is not one already (see the module's README)."
}

variable "create_vpc" {
  type        = bool
  default     = false
  description = "Create a VPC for the runs instead of using the region's default VPC."
}

variable "dispatcher_principal_arn" {
  type        = string
  default     = null
  description = "ARN of the principal (the control plane's role) allowed to assume the dispatcher role. Null: the account root."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags on every taggable resource."
}

variable "run_worker" {
  type        = bool
  default     = false
  description = "Also run a skylane worker for the pool as an ECS service on the pool's cluster (for a push pool with `fallback: worker`). Needs worker_image, api_url and api_key_secret_arn."
}

variable "worker_image" {
  type        = string
  default     = null
  description = "The skylane control-plane image the worker runs (only with run_worker)."
}

variable "api_url" {
  type        = string
  default     = null
  description = "URL of the skylane API, for the worker (only with run_worker)."
}

variable "api_key_secret_arn" {
  type        = string
  default     = null
  description = "ARN of the Secrets Manager secret holding the worker's API key (only with run_worker)."
}
