# The fallback pull worker of a skylane pool (`skylane worker start --pool NAME`) as a Cloud
# Run worker pool: always-on instances with no HTTP endpoint (a Cloud Run service would have
# to listen on $PORT, which the worker does not), with its own service account holding only
# what the Cloud Run adapter needs (src/skylane/adapters/cloud_run.py):
# - roles/run.developer and roles/logging.viewer on the project, as the pool's dispatcher:
#   create, read, cancel and delete jobs and executions; read the runs' logs;
# - roles/iam.serviceAccountUser on the pool's runtime account only (actAs, which Cloud Run
#   demands on the account a job runs as);
# - roles/secretmanager.secretAccessor on the API key's secret only;
# - with impersonate_service_account: roles/iam.serviceAccountTokenCreator on that account
#   only, for pools whose credentials name it (the adapter then impersonates it).

locals {
  # The same project roles as the push pool's dispatcher (gcp.DISPATCHER_PROJECT_ROLES).
  worker_project_roles = [
    "roles/run.developer",
    "roles/logging.viewer",
  ]

  # As in the push-pool module (skylane's gcp.slug(), account_prefix(), label_value()).
  slug           = coalesce(var.resource_slug, var.pool_name)
  account_prefix = coalesce(var.account_prefix, "skl-${var.pool_name}")
  label_value    = coalesce(var.label_value, var.pool_name)
  labels         = merge(var.labels, { "skylane-pool" = local.label_value })

  worker_display_name = substr("skylane ${var.pool_name} worker", 0, 100)
  worker_description  = substr("skylane-pool=${var.pool_name}: the pool's skylane pull worker (Cloud Run worker pool)", 0, 256)

  # The secret's full resource name, for its IAM policy.
  api_key_secret = startswith(var.api_key_secret_id, "projects/") ? var.api_key_secret_id : "projects/${var.project}/secrets/${var.api_key_secret_id}"

  # `skylane worker start --pool NAME [--name N] [--limit N]` (src/skylane/cli/worker.py); the
  # image's ENTRYPOINT is `skylane` unless var.command says otherwise.
  worker_args = concat(
    ["worker", "start", "--pool", var.pool_name],
    var.worker_name == null ? [] : ["--name", var.worker_name],
    var.limit == null ? [] : ["--limit", tostring(var.limit)],
  )
}

resource "google_service_account" "worker" {
  project      = var.project
  account_id   = "${local.account_prefix}-wrk"
  display_name = local.worker_display_name
  description  = local.worker_description

  lifecycle {
    precondition {
      condition     = var.resource_slug != null || (can(regex("^[a-z0-9]+(-[a-z0-9]+)*$", var.pool_name)) && length(var.pool_name) <= 40)
      error_message = "pool_name \"${var.pool_name}\" is not usable as is in resource names (lowercase letters, digits and single dashes, not starting or ending with a dash, at most 40 characters): set resource_slug to what skylane computes for it (the push-pool module's input of the same name)."
    }
    precondition {
      condition     = var.account_prefix != null || (can(regex("^[a-z0-9]+(-[a-z0-9]+)*$", var.pool_name)) && length("skl-${var.pool_name}") <= 21)
      error_message = "pool_name \"${var.pool_name}\" does not make a service account id prefix as is (\"skl-<pool>\" must be at most 21 characters of lowercase letters, digits and single dashes): set account_prefix to what skylane computes for it (the push-pool module's input of the same name)."
    }
    precondition {
      condition     = var.label_value != null || can(regex("^[a-z0-9_-]{1,63}$", var.pool_name))
      error_message = "pool_name \"${var.pool_name}\" is not a Google Cloud label value as is (lowercase letters, digits, _ and -, at most 63 characters): set label_value to what skylane computes for it (the push-pool module's input of the same name)."
    }
  }
}

resource "google_project_iam_member" "worker" {
  for_each = toset(local.worker_project_roles)

  project = var.project
  role    = each.key
  member  = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_service_account_iam_member" "worker_act_as_runtime" {
  service_account_id = "projects/${var.project}/serviceAccounts/${var.runtime_service_account}"
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_service_account_iam_member" "worker_impersonate" {
  count = var.impersonate_service_account == null ? 0 : 1

  service_account_id = "projects/${var.project}/serviceAccounts/${var.impersonate_service_account}"
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_secret_manager_secret_iam_member" "api_key" {
  secret_id = local.api_key_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_cloud_run_v2_worker_pool" "this" {
  project             = var.project
  location            = var.region
  name                = "skylane-${local.slug}"
  description         = "skylane pull worker of pool ${var.pool_name}"
  labels              = local.labels
  launch_stage        = var.launch_stage
  deletion_protection = var.deletion_protection

  scaling {
    manual_instance_count = var.instance_count
  }

  template {
    service_account = google_service_account.worker.email
    labels          = local.labels

    containers {
      name    = "worker"
      image   = var.image
      command = var.command
      args    = local.worker_args

      env {
        name  = "SKYLANE_API_URL"
        value = var.api_url
      }

      # The worker's API key, by reference: Cloud Run reads the secret at start with the
      # worker's account; the key is never in the configuration or the state.
      env {
        name = "SKYLANE_API_KEY"
        value_source {
          secret_key_ref {
            secret  = var.api_key_secret_id
            version = var.api_key_secret_version
          }
        }
      }

      dynamic "env" {
        for_each = var.env
        content {
          name  = env.key
          value = env.value
        }
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
      }
    }

    dynamic "vpc_access" {
      for_each = var.network == null && var.subnetwork == null ? [] : [1]
      content {
        egress = var.vpc_egress
        network_interfaces {
          network    = var.network
          subnetwork = var.subnetwork
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.worker_name == null || var.instance_count <= 1
      error_message = "worker_name names one worker: with instance_count above 1, leave it null (each instance then takes HOSTNAME-PID)."
    }
  }

  # The instances start with the key readable and the grants in place.
  depends_on = [
    google_secret_manager_secret_iam_member.api_key,
    google_project_iam_member.worker,
    google_service_account_iam_member.worker_act_as_runtime,
    google_service_account_iam_member.worker_impersonate,
  ]
}
