variable "pool_name" {
  type        = string
  description = "The skylane pool the worker takes runs of (`skylane worker start --pool`): a pull pool of type aci, or an aci:push pool with `fallback: worker`."
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$", var.pool_name))
    error_message = "pool_name must be a skylane pool name: a letter or digit, then letters, digits, '_', '.' or '-' (at most 200 characters)."
  }
}

variable "resource_slug" {
  type        = string
  description = "The pool's name as it appears in Azure resource names (skylane's `slug(pool_name)`, as for azure-aci-push-pool). Leave null when pool_name is already lower-case letters, digits and dashes (not starting or ending with a dash, at most 40 characters)."
  default     = null

  validation {
    condition     = var.resource_slug == null ? true : (can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", var.resource_slug)) && length(var.resource_slug) <= 40)
    error_message = "resource_slug must be lower-case letters, digits and dashes, not starting or ending with a dash, at most 40 characters."
  }
}

variable "instance_name" {
  type        = string
  description = "The last part of the container group's name, `skylane-<slug>-<instance_name>`: use another one for a second worker of the same pool."
  default     = "worker"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", var.instance_name)) && length(var.instance_name) <= 14
    error_message = "instance_name must be lower-case letters, digits and dashes, not starting or ending with a dash, at most 14 characters."
  }
}

variable "resource_group_name" {
  type        = string
  description = "The resource group the worker's container group goes in (e.g. the push-pool module's resource_group_name output)."
  nullable    = false

  validation {
    condition     = can(regex("^[-\\w.()]{1,90}$", var.resource_group_name)) && !endswith(var.resource_group_name, ".")
    error_message = "resource_group_name must be 1-90 letters, digits, '_', '-', '.', '(' or ')', not ending in '.'."
  }
}

variable "location" {
  type        = string
  description = "The Azure location of the worker's container group: lower case, no spaces (westeurope)."
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9]+$", var.location))
    error_message = "location must be an Azure location name in lower case without spaces (e.g. westeurope)."
  }
}

variable "image" {
  type        = string
  description = "The skylane control-plane image (infra/images/control-plane.Dockerfile, with the azure extra), e.g. myregistry.azurecr.io/skylane/control-plane:0.1.0."
  nullable    = false

  validation {
    condition     = length(trimspace(var.image)) > 0 && !can(regex("\\s", var.image))
    error_message = "image must be a container image reference without spaces."
  }
}

variable "image_registry_server" {
  type        = string
  description = "The registry to pull image from with an identity (image_registry_credential). Null: the image's host when it is an Azure Container Registry (*.azurecr.io, *.azurecr.cn, *.azurecr.us), else none (a public image)."
  default     = null

  validation {
    condition     = var.image_registry_server == null ? true : can(regex("^[a-z0-9.-]+(:[0-9]+)?$", var.image_registry_server))
    error_message = "image_registry_server must be a registry host name without scheme or path (e.g. myregistry.azurecr.io)."
  }
}

variable "registry_identity_id" {
  type        = string
  description = "The user-assigned identity that pulls image (it needs AcrPull on the registry), added to the group's identities. Null: identity_id. With the push-pool module's registry, its runtime_identity_id (which has AcrPull there)."
  default     = null

  validation {
    condition     = var.registry_identity_id == null ? true : can(regex("^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.ManagedIdentity/userAssignedIdentities/[^/]+$", var.registry_identity_id))
    error_message = "registry_identity_id must be a user-assigned identity's resource id (/subscriptions/.../resourceGroups/.../providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME)."
  }
}

variable "identity_id" {
  type        = string
  description = "The user-assigned identity the worker runs as and creates the runs' container groups with: one holding the pool's dispatch role at the pool's resource group, e.g. the push-pool module's dispatcher_identity_id (or set grant_dispatch_role)."
  nullable    = false

  validation {
    condition     = can(regex("^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.ManagedIdentity/userAssignedIdentities/[^/]+$", var.identity_id))
    error_message = "identity_id must be a user-assigned identity's resource id (/subscriptions/.../resourceGroups/.../providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME)."
  }
}

variable "identity_client_id" {
  type        = string
  description = "identity_id's client id, set as AZURE_CLIENT_ID so DefaultAzureCredential picks that identity when the group has several (e.g. the push-pool module's dispatcher_client_id). A pool credential managed_identity_client_id, when set, wins: it must name the same identity."
  nullable    = false

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.identity_client_id))
    error_message = "identity_client_id must be a client id (a GUID)."
  }
}

variable "grant_dispatch_role" {
  type        = bool
  description = "Whether to give identity_id the pool's dispatch role (dispatch_role_id) at dispatch_scope. Leave false for the push-pool module's dispatcher identity, which has it already."
  default     = false
}

variable "identity_principal_id" {
  type        = string
  description = "identity_id's principal (object) id, for the role assignments grant_dispatch_role and grant_runtime_identity_operator make. Null when neither is set."
  default     = null

  validation {
    condition     = var.identity_principal_id == null ? true : can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.identity_principal_id))
    error_message = "identity_principal_id must be a principal (object) id (a GUID)."
  }
}

variable "dispatch_role_id" {
  type        = string
  description = "The pool's dispatch role definition id (the push-pool module's dispatch_role_id), for grant_dispatch_role."
  default     = null

  validation {
    condition     = var.dispatch_role_id == null ? true : can(regex("^/subscriptions/[^/]+/providers/Microsoft.Authorization/roleDefinitions/[^/]+$", var.dispatch_role_id))
    error_message = "dispatch_role_id must be a role definition id (/subscriptions/S/providers/Microsoft.Authorization/roleDefinitions/GUID)."
  }
}

variable "dispatch_scope" {
  type        = string
  description = "Where grant_dispatch_role assigns the dispatch role: the pool's resource group id (the push-pool module's resource_group_id), the only scope that role is assignable at."
  default     = null

  validation {
    condition     = var.dispatch_scope == null ? true : can(regex("^/subscriptions/[^/]+/resourceGroups/[^/]+$", var.dispatch_scope))
    error_message = "dispatch_scope must be a resource group id (/subscriptions/S/resourceGroups/NAME)."
  }
}

variable "runtime_identity_id" {
  type        = string
  description = "The identity the runs' container groups run as (the pool's `identities` template default, the push-pool module's runtime_identity_id). The worker assigns it to every group it creates, which needs Microsoft.ManagedIdentity/userAssignedIdentities/assign/action on it: the dispatch role grants that in the pool's resource group; for an identity elsewhere set grant_runtime_identity_operator."
  default     = null

  validation {
    condition     = var.runtime_identity_id == null ? true : can(regex("^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.ManagedIdentity/userAssignedIdentities/[^/]+$", var.runtime_identity_id))
    error_message = "runtime_identity_id must be a user-assigned identity's resource id."
  }
}

variable "grant_runtime_identity_operator" {
  type        = bool
  description = "Whether to give identity_id the built-in Managed Identity Operator role on runtime_identity_id alone (read and assign it), for a runtime identity outside the resource group where identity_id has the dispatch role."
  default     = false
}

variable "api_url" {
  type        = string
  description = "The skylane API's URL as the worker reaches it (SKYLANE_API_URL). The runs the worker starts use it too unless public_api_url is set."
  nullable    = false

  validation {
    condition     = can(regex("^https?://[^\\s/]+", var.api_url))
    error_message = "api_url must be an http:// or https:// URL."
  }
}

variable "public_api_url" {
  type        = string
  description = "The API's URL as the runs reach it (SKYLANE_PUBLIC_API_URL), when it differs from api_url. Null: not set."
  default     = null

  validation {
    condition     = var.public_api_url == null ? true : can(regex("^https?://[^\\s/]+", var.public_api_url))
    error_message = "public_api_url must be an http:// or https:// URL."
  }
}

variable "api_key_key_vault_secret_id" {
  type        = string
  description = "The Key Vault secret holding the worker's API key (a key with the worker scope, `skl_...`): its id, https://<vault>.vault.azure.net/secrets/<name>[/<version>] (without a version: the latest). Read at apply time and passed to the container as the secure environment variable SKYLANE_API_KEY."
  nullable    = false

  validation {
    condition     = can(regex("^https://[0-9A-Za-z-]+\\.vault\\.[^/]+/secrets/[0-9A-Za-z-]+(/[0-9A-Za-z]+)?/?$", var.api_key_key_vault_secret_id))
    error_message = "api_key_key_vault_secret_id must be a Key Vault secret id: https://<vault>.vault.azure.net/secrets/<name> or .../secrets/<name>/<version>."
  }
}

variable "api_key_key_vault_id" {
  type        = string
  description = "The resource id of the Key Vault holding the API key secret. Null: looked up by the vault's name (from api_key_key_vault_secret_id) in the provider's subscription."
  default     = null

  validation {
    condition     = var.api_key_key_vault_id == null ? true : can(regex("^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.KeyVault/vaults/[^/]+$", var.api_key_key_vault_id))
    error_message = "api_key_key_vault_id must be a Key Vault's resource id (/subscriptions/S/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/NAME)."
  }
}

variable "worker_name" {
  type        = string
  description = "The worker's name in the pool (`--name`). Null: skylane's default, HOSTNAME-PID."
  default     = null

  validation {
    condition     = var.worker_name == null ? true : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$", var.worker_name))
    error_message = "worker_name must be a letter or digit, then letters, digits, '_', '.' or '-'."
  }
}

variable "limit" {
  type        = number
  description = "The most runs of this worker active at once (`--limit`). Null: no cap."
  default     = null

  validation {
    condition     = var.limit == null ? true : (var.limit >= 1 && floor(var.limit) == var.limit)
    error_message = "limit must be a whole number >= 1."
  }
}

variable "prefetch_seconds" {
  type        = number
  description = "Claim runs scheduled up to this many seconds ahead (`--prefetch`, 0-3600). Null: skylane's default (10)."
  default     = null

  validation {
    condition     = var.prefetch_seconds == null ? true : (var.prefetch_seconds >= 0 && var.prefetch_seconds <= 3600)
    error_message = "prefetch_seconds must be between 0 and 3600."
  }
}

variable "log_level" {
  type        = string
  description = "The worker's log level (`--log-level`): critical, error, warning, info or debug."
  default     = "info"
  nullable    = false

  validation {
    condition     = contains(["critical", "error", "warning", "info", "debug"], var.log_level)
    error_message = "log_level must be one of critical, error, warning, info, debug."
  }
}

variable "environment" {
  type        = map(string)
  description = "Extra plain environment variables of the worker (SKYLANE_* settings such as SKYLANE_WORKER_HEARTBEAT_SECONDS). Not for secrets, and not SKYLANE_API_KEY, SKYLANE_API_URL, SKYLANE_PUBLIC_API_URL or AZURE_CLIENT_ID, which this module sets."
  default     = {}
  nullable    = false

  validation {
    condition     = length(setintersection(keys(var.environment), ["SKYLANE_API_KEY", "SKYLANE_API_URL", "SKYLANE_PUBLIC_API_URL", "AZURE_CLIENT_ID"])) == 0
    error_message = "environment must not set SKYLANE_API_KEY, SKYLANE_API_URL, SKYLANE_PUBLIC_API_URL or AZURE_CLIENT_ID: use api_key_key_vault_secret_id, api_url, public_api_url and identity_client_id."
  }
}

variable "cpu" {
  type        = number
  description = "CPU cores of the worker's container."
  default     = 0.5
  nullable    = false

  validation {
    condition     = var.cpu >= 0.1 && var.cpu <= 4
    error_message = "cpu must be between 0.1 and 4 cores."
  }
}

variable "memory" {
  type        = number
  description = "Memory of the worker's container, in GB (steps of 0.1)."
  default     = 1
  nullable    = false

  validation {
    condition     = var.memory >= 0.5 && var.memory <= 16 && abs(var.memory * 10 - floor(var.memory * 10 + 0.5)) < 0.0001
    error_message = "memory must be between 0.5 and 16 GB, in steps of 0.1."
  }
}

variable "log_analytics_workspace_id" {
  type        = string
  description = "The Log Analytics workspace (its workspace id, a GUID: azurerm_log_analytics_workspace.workspace_id) the container's logs go to. Null: none (ACI keeps logs only while the group exists)."
  default     = null

  validation {
    condition     = var.log_analytics_workspace_id == null ? true : can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.log_analytics_workspace_id))
    error_message = "log_analytics_workspace_id must be a Log Analytics workspace id (a GUID), not its resource id."
  }
}

variable "log_analytics_workspace_key" {
  type        = string
  description = "The Log Analytics workspace's shared key (azurerm_log_analytics_workspace.primary_shared_key), required with log_analytics_workspace_id."
  default     = null
  sensitive   = true
}

variable "tags" {
  type        = map(string)
  description = "Extra tags on the container group (the `skylane-pool` tag is always set and wins)."
  default     = {}
  nullable    = false
}
