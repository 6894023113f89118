# What a `cloud-run:push` pool needs in a Google Cloud project: the twin of
# `cloud_run_steps()` in src/skylane/provisioning/gcp.py. Same resources, same names, labels,
# descriptions and grants, so `terraform plan` after importing what `skylane pool provision`
# made shows no changes.

locals {
  # gcp.APIS: enabled, never disabled (`disable_on_destroy = false`).
  apis = [
    "run.googleapis.com",
    "artifactregistry.googleapis.com",
    "iam.googleapis.com",
  ]

  # gcp.DISPATCHER_PROJECT_ROLES: create/read/delete jobs and executions; read the runs' logs.
  dispatcher_project_roles = [
    "roles/run.developer",
    "roles/logging.viewer",
  ]

  # gcp.slug(), gcp.account_prefix(), gcp.label_value(): the pool name when it is already
  # valid as such (checked by the preconditions below), else the values
  # `skylane pool provision --emit-terraform` writes into resource_slug, account_prefix and
  # label_value.
  slug           = coalesce(var.resource_slug, var.pool_name)
  account_prefix = coalesce(var.account_prefix, "skl-${var.pool_name}")
  label_value    = coalesce(var.label_value, var.pool_name)

  # base.POOL_TAG as a label: on the repository (service accounts carry no labels).
  labels = merge(var.labels, { "skylane-pool" = local.label_value })

  # gcp.cleanup_policy(): delete untagged images older than untagged_image_days.
  cleanup_policy_id   = "delete-untagged-images"
  untagged_older_than = format("%ds", var.untagged_image_days * 86400)

  # ArtifactRegistryRepositoryStep.create / ServiceAccountStep.create: display names are cut
  # at 100 characters and descriptions at 256, as the provisioner cuts them.
  repository_description  = "skylane pool ${var.pool_name}: the images of its runs"
  runtime_display_name    = substr("skylane ${var.pool_name} run", 0, 100)
  dispatcher_display_name = substr("skylane ${var.pool_name} dispatch", 0, 100)
  runtime_description     = substr("skylane-pool=${var.pool_name}: the identity the pool's Cloud Run jobs run as", 0, 256)
  dispatcher_description  = substr("skylane-pool=${var.pool_name}: impersonated by the skylane control plane to run the pool's jobs", 0, 256)

  # gcp.check_member() strips the member.
  control_plane_member = var.control_plane_member == null ? null : trimspace(var.control_plane_member)

  # ArtifactRegistryRepositoryStep.publish: a domain-scoped project `example.com:p` is
  # `example.com/p` in image paths.
  image_registry   = "${var.region}-docker.pkg.dev"
  image_repository = "${local.image_registry}/${replace(var.project, ":", "/")}/skylane-${local.slug}"
}

# 1. service-api <api>: enabled when they are not; never disabled.
resource "google_project_service" "this" {
  for_each = toset(local.apis)

  project = var.project
  service = each.key

  # The provisioner never disables an API: that would delete everything of it in the
  # project, the user's own resources included.
  disable_on_destroy         = false
  disable_dependent_services = false

  lifecycle {
    precondition {
      condition     = var.resource_slug != null || (can(regex("^[a-z0-9]+(-[a-z0-9]+)*$", var.pool_name)) && length(var.pool_name) <= 40)
      error_message = "pool_name \"${var.pool_name}\" is not usable as is in resource names (lowercase letters, digits and single dashes, not starting or ending with a dash, at most 40 characters): set resource_slug to what skylane computes for it (`skylane pool provision --emit-terraform` writes it)."
    }
    precondition {
      condition     = var.account_prefix != null || (can(regex("^[a-z0-9]+(-[a-z0-9]+)*$", var.pool_name)) && length("skl-${var.pool_name}") <= 21)
      error_message = "pool_name \"${var.pool_name}\" does not make a service account id prefix as is (\"skl-<pool>\" must be at most 21 characters of lowercase letters, digits and single dashes): set account_prefix to what skylane computes for it (`skylane pool provision --emit-terraform` writes it)."
    }
    precondition {
      condition     = var.label_value != null || can(regex("^[a-z0-9_-]{1,63}$", var.pool_name))
      error_message = "pool_name \"${var.pool_name}\" is not a Google Cloud label value as is (lowercase letters, digits, _ and -, at most 63 characters): set label_value to what skylane computes for it (`skylane pool provision --emit-terraform` writes it)."
    }
  }
}

# 2. artifact-registry-repository skylane-<slug>: DOCKER, labelled, with the cleanup policy.
resource "google_artifact_registry_repository" "this" {
  project       = var.project
  location      = var.region
  repository_id = "skylane-${local.slug}"
  format        = "DOCKER"
  description   = local.repository_description
  labels        = local.labels

  # cleanup_policy_dry_run left unset, as the provisioner leaves it: the API's false.

  cleanup_policies {
    id     = local.cleanup_policy_id
    action = "DELETE"

    condition {
      tag_state  = "UNTAGGED"
      older_than = local.untagged_older_than
    }
  }

  depends_on = [google_project_service.this]
}

# 3. service-account <prefix>-run: the identity the pool's jobs run as; no role granted.
resource "google_service_account" "runtime" {
  project      = var.project
  account_id   = "${local.account_prefix}-run"
  display_name = local.runtime_display_name
  description  = local.runtime_description

  depends_on = [google_project_service.this]
}

# 4. service-account <prefix>-dispatch: the identity the control plane impersonates.
resource "google_service_account" "dispatcher" {
  project      = var.project
  account_id   = "${local.account_prefix}-dispatch"
  display_name = local.dispatcher_display_name
  description  = local.dispatcher_description

  depends_on = [google_project_service.this]
}

# 5. project-iam-binding <role> serviceAccount:<dispatcher>: one member in each role, never
# the whole binding (the provisioner's read-modify-write adds and removes only its member).
resource "google_project_iam_member" "dispatcher" {
  for_each = toset(local.dispatcher_project_roles)

  project = var.project
  role    = each.key
  member  = "serviceAccount:${google_service_account.dispatcher.email}"

  depends_on = [google_project_service.this]
}

# 6. service-account-iam-binding roles/iam.serviceAccountUser on the runtime account only:
# Cloud Run demands actAs on the account a job runs as.
resource "google_service_account_iam_member" "dispatcher_act_as_runtime" {
  service_account_id = google_service_account.runtime.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.dispatcher.email}"

  depends_on = [google_project_service.this]
}

# 7. with control_plane_member: roles/iam.serviceAccountTokenCreator on the dispatcher, so
# the control plane can impersonate it. A new member replaces the old one, which loses the
# role (the member is part of the resource's identity).
resource "google_service_account_iam_member" "control_plane" {
  count = var.control_plane_member == null ? 0 : 1

  service_account_id = google_service_account.dispatcher.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.control_plane_member

  depends_on = [google_project_service.this]
}
