variable "project" {
  type        = string
  description = "The Google Cloud project id the worker runs in (the pool's project)."

  validation {
    condition     = can(regex("^(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[0-9]{1,20}$", var.project))
    error_message = "project must be a Google Cloud project id (6 to 30 lowercase letters, digits and hyphens, starting with a letter, optionally domain-scoped) or number."
  }
}

variable "region" {
  type        = string
  description = "The Cloud Run region of the worker pool, e.g. europe-west1."

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Cloud Run region such as us-central1."
  }
}

variable "pool_name" {
  type        = string
  description = "The skylane pool the worker takes runs of (`skylane worker start --pool NAME`): a cloud-run pull pool, or a cloud-run:push pool with fallback worker."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$", var.pool_name))
    error_message = "pool_name must be a skylane pool name: 1 to 200 letters, digits, _, . and -, starting with a letter or digit."
  }
}

variable "resource_slug" {
  type        = string
  default     = null
  description = "The pool's name as a part of resource names (skylane's gcp.slug(), as the push-pool module's input): the worker pool is skylane-<slug>. Null: the pool name, which must then be lowercase letters, digits and single dashes, at most 40 characters."

  validation {
    condition     = var.resource_slug == null ? true : (can(regex("^[a-z0-9]+(-[a-z0-9]+)*$", var.resource_slug)) && length(var.resource_slug) <= 40)
    error_message = "resource_slug must be lowercase letters, digits and single dashes, not starting or ending with a dash, at most 40 characters."
  }
}

variable "account_prefix" {
  type        = string
  default     = null
  description = "The service account id prefix (skylane's gcp.account_prefix(), as the push-pool module's input): the worker's account is <prefix>-wrk. Null: skl-<pool_name>, which must then be at most 21 characters of lowercase letters, digits and single dashes."

  validation {
    condition     = var.account_prefix == null ? true : (can(regex("^skl-[a-z0-9]+(-[a-z0-9]+)*$", var.account_prefix)) && length(var.account_prefix) <= 21)
    error_message = "account_prefix must be skl- followed by lowercase letters, digits and single dashes, at most 21 characters in all."
  }
}

variable "label_value" {
  type        = string
  default     = null
  description = "The pool's name as a label value (skylane's gcp.label_value(), as the push-pool module's input), the value of the worker pool's skylane-pool label. Null: the pool name, which must then be lowercase letters, digits, _ and -, at most 63 characters."

  validation {
    condition     = var.label_value == null ? true : can(regex("^[a-z0-9_-]{1,63}$", var.label_value))
    error_message = "label_value must be 1 to 63 lowercase letters, digits, _ and -."
  }
}

variable "image" {
  type        = string
  nullable    = false
  description = "The skylane control-plane image (its ENTRYPOINT is `skylane`, else set command), e.g. europe-west1-docker.pkg.dev/my-project/skylane/control-plane:1.0.0."

  validation {
    condition     = can(regex("^[^\\s]+$", var.image))
    error_message = "image must be a container image reference, with no spaces."
  }
}

variable "command" {
  type        = list(string)
  default     = null
  description = "The container's entrypoint. Null: the image's ENTRYPOINT, which must be `skylane`; set [\"skylane\"] (or the path to it) for an image whose ENTRYPOINT is something else."

  validation {
    condition     = var.command == null ? true : length(var.command) > 0
    error_message = "command must be null or a non-empty list."
  }
}

variable "api_url" {
  type        = string
  nullable    = false
  description = "The skylane API URL the worker talks to (SKYLANE_API_URL), reachable from the worker pool."

  validation {
    condition     = can(regex("^https?://[^\\s]+$", var.api_url))
    error_message = "api_url must be an http:// or https:// URL."
  }
}

variable "api_key_secret_id" {
  type        = string
  nullable    = false
  description = "The Secret Manager secret holding the worker's skylane API key (a key with the worker scope), given to the worker as SKYLANE_API_KEY by reference: its id in the project, or projects/PROJECT/secrets/ID. The worker's account gets roles/secretmanager.secretAccessor on this secret only."

  validation {
    condition     = can(regex("^(projects/[^/\\s]+/secrets/)?[A-Za-z0-9_-]{1,255}$", var.api_key_secret_id))
    error_message = "api_key_secret_id must be a Secret Manager secret id (letters, digits, _ and -) or projects/PROJECT/secrets/ID."
  }
}

variable "api_key_secret_version" {
  type        = string
  default     = "latest"
  description = "The version of the API key secret the worker reads at start: latest, or a version number."

  validation {
    condition     = can(regex("^(latest|[1-9][0-9]*)$", var.api_key_secret_version))
    error_message = "api_key_secret_version must be latest or a version number."
  }
}

variable "runtime_service_account" {
  type        = string
  nullable    = false
  description = "The email of the pool's runtime service account, the one its jobs run as (the push-pool module's runtime_service_account output): the worker gets actAs (roles/iam.serviceAccountUser) on it only."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._+-]*@[a-z0-9][a-z0-9.-]*\\.gserviceaccount\\.com$", var.runtime_service_account))
    error_message = "runtime_service_account must be a service account email (...@....gserviceaccount.com)."
  }
}

variable "impersonate_service_account" {
  type        = string
  default     = null
  description = "The email of the account the pool's credentials name (impersonate_service_account, e.g. the push-pool module's dispatcher_service_account): the Cloud Run adapter impersonates it, so the worker gets roles/iam.serviceAccountTokenCreator on it only. Null: no such grant (the worker calls Cloud Run as itself)."

  validation {
    condition     = var.impersonate_service_account == null ? true : can(regex("^[a-z0-9][a-z0-9._+-]*@[a-z0-9][a-z0-9.-]*\\.gserviceaccount\\.com$", var.impersonate_service_account))
    error_message = "impersonate_service_account must be null or a service account email (...@....gserviceaccount.com)."
  }
}

variable "worker_name" {
  type        = string
  default     = null
  description = "The worker's unique name in the pool (--name). Null: each instance takes HOSTNAME-PID. Only with instance_count 1."

  validation {
    condition     = var.worker_name == null ? true : can(regex("^[^\\s]{1,200}$", var.worker_name))
    error_message = "worker_name must be 1 to 200 characters without spaces."
  }
}

variable "limit" {
  type        = number
  default     = null
  description = "The most runs each worker instance has active at once (--limit). Null: no cap."

  validation {
    condition     = var.limit == null ? true : (var.limit >= 1 && floor(var.limit) == var.limit)
    error_message = "limit must be null or a whole number of at least 1."
  }
}

variable "instance_count" {
  type        = number
  default     = 1
  description = "How many worker instances run (the worker pool's manual instance count). Each run is submitted once whatever the count. 0 stops the worker, with provider >= 6.47.0 (earlier ones do not send 0)."

  validation {
    condition     = var.instance_count >= 0 && var.instance_count <= 100 && floor(var.instance_count) == var.instance_count
    error_message = "instance_count must be a whole number from 0 to 100."
  }
}

variable "cpu" {
  type        = string
  default     = "1"
  description = "The CPU limit of each instance: 1, 2, 4, 6 or 8 (4 needs at least 2Gi of memory, 6 and 8 at least 4Gi)."

  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.cpu)
    error_message = "cpu must be 1, 2, 4, 6 or 8."
  }
}

variable "memory" {
  type        = string
  default     = "512Mi"
  description = "The memory limit of each instance, e.g. 512Mi or 1Gi."

  validation {
    condition     = can(regex("^[1-9][0-9]*(Mi|Gi)$", var.memory))
    error_message = "memory must be a quantity in Mi or Gi, e.g. 512Mi or 1Gi."
  }
}

variable "env" {
  type        = map(string)
  default     = {}
  description = "Extra environment variables of the worker (plain values: put nothing secret here), e.g. SKYLANE_WORKER_HEARTBEAT_SECONDS."

  validation {
    condition     = alltrue([for name in keys(var.env) : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", name)) && !contains(["SKYLANE_API_URL", "SKYLANE_API_KEY"], name)])
    error_message = "env names must be environment variable names, and not SKYLANE_API_URL or SKYLANE_API_KEY (set by api_url and api_key_secret_id)."
  }
}

variable "network" {
  type        = string
  default     = null
  description = "The VPC network of Direct VPC egress, for an API reachable only from a private network. Null (with subnetwork null): no VPC access."
}

variable "subnetwork" {
  type        = string
  default     = null
  description = "The VPC subnetwork of Direct VPC egress (the worker's instances take addresses from it). Null (with network null): no VPC access."
}

variable "vpc_egress" {
  type        = string
  default     = "PRIVATE_RANGES_ONLY"
  description = "Which traffic goes through the VPC when network or subnetwork is set: PRIVATE_RANGES_ONLY or ALL_TRAFFIC."

  validation {
    condition     = contains(["PRIVATE_RANGES_ONLY", "ALL_TRAFFIC"], var.vpc_egress)
    error_message = "vpc_egress must be PRIVATE_RANGES_ONLY or ALL_TRAFFIC."
  }
}

variable "launch_stage" {
  type        = string
  default     = null
  description = "The worker pool's launch stage. Null: the API's default (GA). Set BETA where the Cloud Run API still asks for it for worker pools."

  validation {
    condition     = var.launch_stage == null ? true : contains(["ALPHA", "BETA", "GA"], var.launch_stage)
    error_message = "launch_stage must be null, ALPHA, BETA or GA."
  }
}

variable "deletion_protection" {
  type        = bool
  default     = false
  description = "Whether Terraform refuses to destroy the worker pool (the provider's deletion_protection). The worker keeps no state, so false by default."
}

variable "labels" {
  type        = map(string)
  default     = {}
  description = "Extra labels on the worker pool, besides skylane-pool (which this module sets)."

  validation {
    condition = alltrue([
      for key, value in var.labels :
      can(regex("^[\\p{Ll}\\p{Lo}][\\p{Ll}\\p{Lo}\\p{N}_-]{0,62}$", key)) && can(regex("^[\\p{Ll}\\p{Lo}\\p{N}_-]{0,63}$", value))
    ])
    error_message = "labels must be Google Cloud labels: keys of 1 to 63 lowercase letters, digits, _ and -, starting with a letter; values of at most 63 of the same."
  }

  validation {
    condition     = !contains(keys(var.labels), "skylane-pool")
    error_message = "labels must not set skylane-pool: the module sets it to the pool's label value."
  }
}
