variable "subscription_id" {
  type        = string
  description = "The Azure subscription (a GUID) the pool's resources go in, as `skylane pool provision --subscription` takes it. It names the resource ids and the registry (`registry_name` hashes it); the azurerm provider must be configured for the same subscription."

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.subscription_id))
    error_message = "subscription_id must be an Azure subscription id (a GUID, e.g. 00000000-0000-0000-0000-000000000000)."
  }
}

variable "location" {
  type        = string
  description = "The Azure location of every resource, in the form the provisioner normalizes `--region` to: lower case, no spaces (westeurope, not \"West Europe\")."

  validation {
    condition     = can(regex("^[a-z0-9]+$", var.location))
    error_message = "location must be an Azure location name in lower case without spaces (e.g. westeurope, eastus2), as `skylane pool provision --region` normalizes it."
  }
}

variable "pool_name" {
  type        = string
  description = "The skylane pool's name (of type aci:push). It goes into the `skylane-pool` tag, the descriptions' `[skylane-pool=<pool>]` marker and the registry name."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$", var.pool_name))
    error_message = "pool_name must be a skylane pool name: a letter or digit, then letters, digits, '_', '.' or '-' (at most 200 characters)."
  }
}

variable "resource_slug" {
  type        = string
  description = "The pool's name as it appears in resource names (`skylane-<slug>-runtime`...), i.e. skylane's `slug(pool_name)`. Leave null when pool_name is already lower-case letters, digits and dashes (not starting or ending with a dash, at most 40 characters); otherwise set it to what `skylane pool provision --emit-terraform` writes."
  default     = null

  validation {
    condition     = var.resource_slug == null ? true : (can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", var.resource_slug)) && length(var.resource_slug) <= 40)
    error_message = "resource_slug must be lower-case letters, digits and dashes, not starting or ending with a dash, at most 40 characters."
  }
}

variable "resource_group_name" {
  type        = string
  description = "The resource group everything goes in. Null: `skylane-<slug>`, as the provisioner's default."
  default     = null

  validation {
    condition     = var.resource_group_name == null ? true : (can(regex("^[-\\w.()]{1,90}$", var.resource_group_name)) && !endswith(var.resource_group_name, "."))
    error_message = "resource_group_name must be 1-90 letters, digits, '_', '-', '.', '(' or ')', not ending in '.'."
  }
}

variable "create_resource_group" {
  type        = bool
  description = "Whether this module creates (and on destroy deletes) the resource group. False: the group exists and is only read (what skylane does with a group it adopted), so Terraform never deletes it."
  default     = true
}

variable "registry_name" {
  type        = string
  description = "The container registry's name. Null: computed as skylane's `registry_name(subscription_id, pool_name)`: `skylane` + the pool's lower-case letters and digits (at most 35) + 8 hex digits of sha256(\"<lower subscription>/<pool>\")."
  default     = null

  validation {
    condition     = var.registry_name == null ? true : can(regex("^[a-z0-9]{5,50}$", var.registry_name))
    error_message = "registry_name must be 5-50 lower-case letters and digits."
  }
}

variable "control_plane_object_id" {
  type        = string
  description = "An Entra object id (user, group, service principal or managed identity) also given the dispatch role at the resource group, as `skylane pool provision --control-plane`. Null: none."
  default     = null

  validation {
    condition     = var.control_plane_object_id == null ? true : can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.control_plane_object_id))
    error_message = "control_plane_object_id must be an Entra object id (a GUID)."
  }
}

variable "tags" {
  type        = map(string)
  description = "Extra tags on the resource group, registry and identities (the `skylane-pool` tag is always set and wins). The provisioner sets no extra tags, so any tag here is a change on resources imported from `skylane pool provision`."
  default     = {}
}
