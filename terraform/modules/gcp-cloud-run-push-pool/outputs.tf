output "pool_template_defaults" {
  description = "The cloud-run:push template variables' defaults, as the provisioner publishes them: project, region and service_account_name (the runtime account's email). `skylane pool create NAME --type cloud-run:push --from-terraform-output FILE` reads it."
  value = {
    project              = var.project
    region               = var.region
    service_account_name = google_service_account.runtime.email
  }
}

output "pool_settings" {
  description = "The pool's settings, as the provisioner returns them: project and region, and control_plane when control_plane_member is set."
  value = merge(
    {
      project = var.project
      region  = var.region
    },
    local.control_plane_member == null ? {} : { control_plane = local.control_plane_member },
  )
}

output "pool_credentials" {
  description = "The pool's credentials reference: the dispatcher account the control plane impersonates (`skylane pool update NAME --credential impersonate_service_account=EMAIL`)."
  value = {
    impersonate_service_account = google_service_account.dispatcher.email
  }
}

output "image_registry" {
  description = "The Artifact Registry Docker host of the region, <region>-docker.pkg.dev."
  value       = local.image_registry
}

output "image_repository" {
  description = "Where the pool's images are pushed: <region>-docker.pkg.dev/<project>/skylane-<slug>."
  value       = local.image_repository
}

output "repository" {
  description = "The Artifact Registry repository's resource name, projects/<project>/locations/<region>/repositories/skylane-<slug>."
  value       = "projects/${var.project}/locations/${var.region}/repositories/${google_artifact_registry_repository.this.repository_id}"
}

output "runtime_service_account" {
  description = "The email of the runtime service account, the identity the pool's Cloud Run jobs run as."
  value       = google_service_account.runtime.email
}

output "dispatcher_service_account" {
  description = "The email of the dispatcher service account, the identity the control plane impersonates to run the pool's jobs."
  value       = google_service_account.dispatcher.email
}
