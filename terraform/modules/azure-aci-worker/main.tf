# A skylane pull worker (`skylane worker start --pool NAME`) as an always-restarting Azure
# Container Instances container group, running as a user-assigned identity that may create,
# watch and remove the pool's container groups (the ACI adapter's calls).

locals {
  slug = coalesce(var.resource_slug, var.pool_name)

  tags = merge(var.tags, { "skylane-pool" = var.pool_name })

  # https://<vault>.vault.azure.net/secrets/<name>[/<version>]
  api_key_secret = regex("^https://([0-9A-Za-z-]+)\\.vault\\.[^/]+/secrets/([0-9A-Za-z-]+)(?:/([0-9A-Za-z]+))?/?$", var.api_key_key_vault_secret_id)
  key_vault_name = local.api_key_secret[0]
  api_key_name   = local.api_key_secret[1]
  # An optional group that did not match is null or "" depending on the Terraform version.
  api_key_version = try(length(local.api_key_secret[2]) > 0, false) ? local.api_key_secret[2] : null
  key_vault_id    = var.api_key_key_vault_id != null ? var.api_key_key_vault_id : one(data.azurerm_resources.key_vault[0].resources[*].id)

  # Pull the image with an identity when it is in an Azure Container Registry.
  image_host            = split("/", var.image)[0]
  image_in_acr          = length(split("/", var.image)) > 1 && can(regex("\\.azurecr\\.(io|cn|us)$", local.image_host))
  image_registry_server = var.image_registry_server != null ? var.image_registry_server : (local.image_in_acr ? local.image_host : null)
  registry_identity_id  = var.registry_identity_id != null ? var.registry_identity_id : var.identity_id
  identity_ids          = distinct(concat([var.identity_id], local.image_registry_server == null ? [] : [local.registry_identity_id]))

  # src/skylane/cli/worker.py: `skylane worker start --pool NAME [--name N] [--limit N]
  # [--prefetch SECONDS] [--log-level LEVEL]`. The image's ENTRYPOINT is `skylane`, which an
  # ACI command replaces, so the command names it.
  commands = concat(
    ["skylane", "worker", "start", "--pool", var.pool_name],
    var.worker_name == null ? [] : ["--name", var.worker_name],
    var.limit == null ? [] : ["--limit", tostring(var.limit)],
    var.prefetch_seconds == null ? [] : ["--prefetch", tostring(var.prefetch_seconds)],
    ["--log-level", var.log_level],
  )

  # SKYLANE_API_URL (settings.api_url), AZURE_CLIENT_ID for DefaultAzureCredential, and
  # SKYLANE_PUBLIC_API_URL when given. SKYLANE_API_KEY is a secure value (below).
  environment = merge(
    var.environment,
    {
      SKYLANE_API_URL = var.api_url
      AZURE_CLIENT_ID = var.identity_client_id
    },
    { for key, value in { SKYLANE_PUBLIC_API_URL = var.public_api_url } : key => value if value != null },
  )

  slug_message = "pool_name \"${var.pool_name}\" is not usable in Azure resource names as it is (skylane's slug() changes it: it must be lower-case letters, digits and dashes, not starting or ending with a dash, at most 40 characters). Set resource_slug to the slug `skylane pool provision --emit-terraform` writes."
}

# --- the API key, from Key Vault ----------------------------------------------------------

# The vault by name, when its resource id is not given (names are global; the provider's
# subscription is searched).
data "azurerm_resources" "key_vault" {
  count = var.api_key_key_vault_id == null ? 1 : 0

  type = "Microsoft.KeyVault/vaults"
  name = local.key_vault_name
}

# ACI has no Key Vault references: the value is read here and sent as a secure environment
# variable, so it is in Terraform's state (sensitive). Whoever applies needs get permission on
# the secret; the worker's identity needs none.
data "azurerm_key_vault_secret" "api_key" {
  name         = local.api_key_name
  key_vault_id = local.key_vault_id
  version      = local.api_key_version

  lifecycle {
    precondition {
      condition     = local.key_vault_id != null
      error_message = "No Key Vault named ${local.key_vault_name} in the provider's subscription: set api_key_key_vault_id to the vault's resource id (with a provider for its subscription)."
    }
  }
}

# --- optional grants to the worker's identity ---------------------------------------------

# The pool's dispatch role (what the ACI adapter calls on container groups, and assigning
# identities in the group) at the pool's resource group.
resource "azurerm_role_assignment" "dispatch" {
  count = var.grant_dispatch_role ? 1 : 0

  scope              = var.dispatch_scope
  role_definition_id = var.dispatch_role_id
  principal_id       = var.identity_principal_id
  principal_type     = "ServicePrincipal"
  description        = "skylane worker skylane-${local.slug}-${var.instance_name} of pool ${var.pool_name}: dispatches runs"

  lifecycle {
    precondition {
      condition     = var.dispatch_scope != null && var.dispatch_role_id != null && var.identity_principal_id != null
      error_message = "grant_dispatch_role needs dispatch_scope, dispatch_role_id and identity_principal_id."
    }
  }
}

# Reading and assigning the runtime identity (Managed Identity Operator), on that identity only.
resource "azurerm_role_assignment" "runtime_identity_operator" {
  count = var.grant_runtime_identity_operator ? 1 : 0

  scope                = var.runtime_identity_id
  role_definition_name = "Managed Identity Operator"
  principal_id         = var.identity_principal_id
  principal_type       = "ServicePrincipal"
  description          = "skylane worker skylane-${local.slug}-${var.instance_name} of pool ${var.pool_name}: gives the runs' container groups their identity"

  lifecycle {
    precondition {
      condition     = var.runtime_identity_id != null && var.identity_principal_id != null
      error_message = "grant_runtime_identity_operator needs runtime_identity_id and identity_principal_id."
    }
  }
}

# --- the worker ---------------------------------------------------------------------------

resource "azurerm_container_group" "this" {
  name                = "skylane-${local.slug}-${var.instance_name}"
  resource_group_name = var.resource_group_name
  location            = var.location
  os_type             = "Linux"
  restart_policy      = "Always"
  # Outbound only: the worker calls the API and Azure, nothing calls it.
  ip_address_type = "None"
  tags            = local.tags

  identity {
    type         = "UserAssigned"
    identity_ids = local.identity_ids
  }

  dynamic "image_registry_credential" {
    for_each = local.image_registry_server == null ? [] : [local.image_registry_server]
    content {
      server                    = image_registry_credential.value
      user_assigned_identity_id = local.registry_identity_id
    }
  }

  container {
    name     = "worker"
    image    = var.image
    cpu      = var.cpu
    memory   = var.memory
    commands = local.commands

    environment_variables = local.environment
    secure_environment_variables = {
      SKYLANE_API_KEY = data.azurerm_key_vault_secret.api_key.value
    }
  }

  dynamic "diagnostics" {
    for_each = var.log_analytics_workspace_id == null ? [] : [var.log_analytics_workspace_id]
    content {
      log_analytics {
        workspace_id  = diagnostics.value
        workspace_key = var.log_analytics_workspace_key
        log_type      = "ContainerInstanceLogs"
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.resource_slug != null || (can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", var.pool_name)) && length(var.pool_name) <= 40)
      error_message = local.slug_message
    }
    precondition {
      condition     = var.log_analytics_workspace_id == null || var.log_analytics_workspace_key != null
      error_message = "log_analytics_workspace_key is required with log_analytics_workspace_id."
    }
  }

  # The worker starts claiming at once: give it its permissions first.
  depends_on = [
    azurerm_role_assignment.dispatch,
    azurerm_role_assignment.runtime_identity_operator,
  ]
}
