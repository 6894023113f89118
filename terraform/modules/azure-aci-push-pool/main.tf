# The resources `skylane pool provision NAME --type aci:push` creates
# (skylane.provisioning.azure.aci_steps), with the same names, tags, descriptions and settings,
# so that importing what the provisioner made plans no changes.

locals {
  # skylane.provisioning.azure.slug(pool_name): the provisioner keeps a clean name as it is and
  # otherwise hashes it; the hashed form is passed in as resource_slug.
  slug = coalesce(var.resource_slug, var.pool_name)

  # skylane.provisioning.azure.registry_name(subscription_id, pool_name).
  registry_letters = substr(replace(lower(var.pool_name), "/[^a-z0-9]+/", ""), 0, 35)
  registry_digest  = substr(sha256("${lower(var.subscription_id)}/${var.pool_name}"), 0, 8)
  registry_name    = var.registry_name != null ? var.registry_name : "skylane${local.registry_letters}${local.registry_digest}"

  resource_group_name = var.resource_group_name != null ? var.resource_group_name : "skylane-${local.slug}"

  # What takes tags is tagged skylane-pool=<pool> (base.Context.tags); what takes none says so
  # at the end of its description (azure._described).
  tags   = merge(var.tags, { "skylane-pool" = var.pool_name })
  marker = "[skylane-pool=${var.pool_name}]"

  # The ids exactly as the provisioner composes them (azure._Where): known at plan time, for
  # the GUIDs below.
  resource_group_id = "/subscriptions/${var.subscription_id}/resourceGroups/${local.resource_group_name}"
  registry_id       = "${local.resource_group_id}/providers/Microsoft.ContainerRegistry/registries/${local.registry_name}"

  # The group's name and id again, through the resource or data source, so that what goes in
  # the group waits for it.
  group_name  = one(concat(azurerm_resource_group.this[*].name, data.azurerm_resource_group.this[*].name))
  group_scope = "/subscriptions/${var.subscription_id}/resourceGroups/${local.group_name}"

  # azure.ACR_PULL, the built-in AcrPull role.
  acr_pull_role_guid = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
  acr_pull_role_id   = "/subscriptions/${var.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/${local.acr_pull_role_guid}"

  # azure.DISPATCH_ACTIONS, in the same order (skylane.adapters.aci WRITE, READ, DELETE, STOP,
  # LOGS, then assigning the runtime identity and reading the group). Not containerGroups/*,
  # which would also allow exec and attach into a run's container.
  dispatch_actions = [
    "Microsoft.ContainerInstance/containerGroups/write",
    "Microsoft.ContainerInstance/containerGroups/read",
    "Microsoft.ContainerInstance/containerGroups/delete",
    "Microsoft.ContainerInstance/containerGroups/stop/action",
    "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
  ]

  # azure.role_definition_guid(resource_group_id, role_name).
  dispatch_role_guid = uuidv5("url", "skylane:${lower(local.resource_group_id)}|skylane-${local.slug}-dispatch")

  control_plane = var.control_plane_object_id == null ? null : lower(var.control_plane_object_id)

  # azure.assignment_name(scope, role_definition_id, principal_id):
  # uuid5(NAMESPACE_URL, "skylane:<lower scope>|<lower role guid>|<lower principal>").
  runtime_acr_pull_assignment_name = uuidv5("url", "skylane:${lower(local.registry_id)}|${local.acr_pull_role_guid}|${lower(azurerm_user_assigned_identity.runtime.principal_id)}")
  dispatcher_assignment_name       = uuidv5("url", "skylane:${lower(local.resource_group_id)}|${local.dispatch_role_guid}|${lower(azurerm_user_assigned_identity.dispatcher.principal_id)}")
  control_plane_assignment_name    = local.control_plane == null ? null : uuidv5("url", "skylane:${lower(local.resource_group_id)}|${local.dispatch_role_guid}|${local.control_plane}")

  slug_message = "pool_name \"${var.pool_name}\" is not usable in Azure resource names as it is (skylane's slug() changes it: it must be lower-case letters, digits and dashes, not starting or ending with a dash, at most 40 characters). Set resource_slug to the slug `skylane pool provision --emit-terraform` writes."
}

data "azurerm_client_config" "current" {}

# --- 1. resource-group <name> --------------------------------------------------------------

resource "azurerm_resource_group" "this" {
  count = var.create_resource_group ? 1 : 0

  name     = local.resource_group_name
  location = var.location
  tags     = local.tags

  lifecycle {
    precondition {
      condition     = var.resource_slug != null || (can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", var.pool_name)) && length(var.pool_name) <= 40)
      error_message = local.slug_message
    }
    precondition {
      condition     = lower(data.azurerm_client_config.current.subscription_id) == lower(var.subscription_id)
      error_message = "The azurerm provider is configured for subscription ${data.azurerm_client_config.current.subscription_id}, not subscription_id ${var.subscription_id}: configure the provider with subscription_id = the module's subscription_id."
    }
  }
}

# A group that exists (skylane adopted it): read, never managed, so never deleted.
data "azurerm_resource_group" "this" {
  count = var.create_resource_group ? 0 : 1

  name = local.resource_group_name

  lifecycle {
    precondition {
      condition     = var.resource_slug != null || (can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", var.pool_name)) && length(var.pool_name) <= 40)
      error_message = local.slug_message
    }
    precondition {
      condition     = lower(data.azurerm_client_config.current.subscription_id) == lower(var.subscription_id)
      error_message = "The azurerm provider is configured for subscription ${data.azurerm_client_config.current.subscription_id}, not subscription_id ${var.subscription_id}: configure the provider with subscription_id = the module's subscription_id."
    }
  }
}

# --- 2. container-registry <registry_name> --------------------------------------------------

# Basic, admin user disabled: images are pulled with the runtime identity, never a password.
resource "azurerm_container_registry" "this" {
  name                = local.registry_name
  resource_group_name = local.group_name
  location            = var.location
  sku                 = "Basic"
  admin_enabled       = false
  tags                = local.tags
}

# --- 3. managed-identity skylane-<slug>-runtime ---------------------------------------------

# What the runs' container groups run as and pull their image with.
resource "azurerm_user_assigned_identity" "runtime" {
  name                = "skylane-${local.slug}-runtime"
  resource_group_name = local.group_name
  location            = var.location
  tags                = local.tags
}

# --- 4. role-assignment AcrPull@skylane-<slug>-runtime --------------------------------------

resource "azurerm_role_assignment" "runtime_acr_pull" {
  name               = local.runtime_acr_pull_assignment_name
  scope              = azurerm_container_registry.this.id
  role_definition_id = local.acr_pull_role_id
  principal_id       = azurerm_user_assigned_identity.runtime.principal_id
  principal_type     = "ServicePrincipal"
  description        = "skylane pool ${var.pool_name}: the runs pull their image ${local.marker}"
}

# --- 5. role-definition skylane-<slug>-dispatch ---------------------------------------------

# Exactly what the ACI adapter calls, assignable at the resource group only.
resource "azurerm_role_definition" "dispatch" {
  role_definition_id = local.dispatch_role_guid
  name               = "skylane-${local.slug}-dispatch"
  scope              = local.group_scope
  description        = "skylane pool ${var.pool_name}: run, watch and remove container groups in this resource group ${local.marker}"

  permissions {
    actions     = local.dispatch_actions
    not_actions = []
  }

  assignable_scopes = [local.group_scope]
}

# --- 6. managed-identity skylane-<slug>-dispatcher ------------------------------------------

# What the control plane runs as (attach it, or federate it with its workload identity).
resource "azurerm_user_assigned_identity" "dispatcher" {
  name                = "skylane-${local.slug}-dispatcher"
  resource_group_name = local.group_name
  location            = var.location
  tags                = local.tags
}

# --- 7. role-assignment skylane-<slug>-dispatch@skylane-<slug>-dispatcher -------------------

resource "azurerm_role_assignment" "dispatcher" {
  name               = local.dispatcher_assignment_name
  scope              = local.group_scope
  role_definition_id = azurerm_role_definition.dispatch.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.dispatcher.principal_id
  principal_type     = "ServicePrincipal"
  description        = "skylane pool ${var.pool_name}: the dispatcher identity dispatches runs ${local.marker}"
}

# --- role-assignment skylane-<slug>-dispatch@control-plane (with control_plane_object_id) ---

# The provisioner sets no principal type here (the principal may be a user, a group or a
# service principal): Azure fills it in.
resource "azurerm_role_assignment" "control_plane" {
  count = var.control_plane_object_id == null ? 0 : 1

  name               = local.control_plane_assignment_name
  scope              = local.group_scope
  role_definition_id = azurerm_role_definition.dispatch.role_definition_resource_id
  principal_id       = local.control_plane
  description        = "skylane pool ${var.pool_name}: the control plane dispatches runs ${local.marker}"
}
