variable "project" {
  type        = string
  description = "The Google Cloud project id (or a domain-scoped id such as example.com:p) the pool's resources go in."

  validation {
    condition     = can(regex("^(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[0-9]{1,20}$", var.project))
    error_message = "project must be a Google Cloud project id (6 to 30 lowercase letters, digits and hyphens, starting with a letter, optionally domain-scoped) or number."
  }
}

variable "region" {
  type        = string
  description = "The Cloud Run region of the pool's jobs and of its Artifact Registry repository, e.g. europe-west1."

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Cloud Run region such as us-central1."
  }
}

variable "pool_name" {
  type        = string
  description = "The skylane pool's name (as in `skylane pool create NAME`). It marks the resources: the repository's skylane-pool label and the service accounts' descriptions."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$", var.pool_name))
    error_message = "pool_name must be a skylane pool name: 1 to 200 letters, digits, _, . and -, starting with a letter or digit."
  }
}

variable "resource_slug" {
  type        = string
  default     = null
  description = "The pool's name as a part of resource names (skylane's gcp.slug()): the repository is skylane-<slug>. Null: the pool name, which must then already be lowercase letters, digits and single dashes, at most 40 characters. `skylane pool provision --emit-terraform` writes it when it differs."

  validation {
    condition     = var.resource_slug == null ? true : (can(regex("^[a-z0-9]+(-[a-z0-9]+)*$", var.resource_slug)) && length(var.resource_slug) <= 40)
    error_message = "resource_slug must be lowercase letters, digits and single dashes, not starting or ending with a dash, at most 40 characters."
  }
}

variable "account_prefix" {
  type        = string
  default     = null
  description = "The service account ids' prefix (skylane's gcp.account_prefix()): the accounts are <prefix>-run and <prefix>-dispatch. Null: skl-<pool_name>, which must then be at most 21 characters of lowercase letters, digits and single dashes. `skylane pool provision --emit-terraform` writes it when it differs."

  validation {
    condition     = var.account_prefix == null ? true : (can(regex("^skl-[a-z0-9]+(-[a-z0-9]+)*$", var.account_prefix)) && length(var.account_prefix) <= 21)
    error_message = "account_prefix must be skl- followed by lowercase letters, digits and single dashes, at most 21 characters in all (so <prefix>-dispatch is a valid account id)."
  }
}

variable "label_value" {
  type        = string
  default     = null
  description = "The pool's name as a label value (skylane's gcp.label_value()), the value of the skylane-pool label. Null: the pool name, which must then be lowercase letters, digits, _ and -, at most 63 characters. `skylane pool provision --emit-terraform` writes it when it differs."

  validation {
    condition     = var.label_value == null ? true : can(regex("^[a-z0-9_-]{1,63}$", var.label_value))
    error_message = "label_value must be 1 to 63 lowercase letters, digits, _ and -."
  }
}

variable "control_plane_member" {
  type        = string
  default     = null
  description = "The IAM member allowed to impersonate the dispatcher account (roles/iam.serviceAccountTokenCreator on it): serviceAccount:EMAIL, user:EMAIL, group:EMAIL, or a workload identity principal:// or principalSet:// identifier (as `skylane pool provision --control-plane`). Null: no such grant (whoever the project's IAM already allows)."

  validation {
    condition     = var.control_plane_member == null ? true : can(regex("^(?:(?:serviceAccount|user|group):[^@\\s:]+@[^@\\s:]+\\.[^@\\s:]+|principal(?:Set)?://\\S+)$", trimspace(var.control_plane_member)))
    error_message = "control_plane_member is not a Google Cloud IAM member: use serviceAccount:EMAIL, user:EMAIL, group:EMAIL, or a workload identity principal:// or principalSet:// identifier."
  }
}

variable "untagged_image_days" {
  type        = number
  default     = 14
  description = "The repository's cleanup policy deletes untagged images older than this many days (14, as the provisioner)."

  validation {
    condition     = var.untagged_image_days >= 1 && floor(var.untagged_image_days) == var.untagged_image_days
    error_message = "untagged_image_days must be a whole number of days, at least 1."
  }
}

variable "labels" {
  type        = map(string)
  default     = {}
  description = "Extra labels on the Artifact Registry repository, besides skylane-pool (which this module sets). The provisioner sets none: with extra labels, a repository it created shows a change at the first plan."

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
