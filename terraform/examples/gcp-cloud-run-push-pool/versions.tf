# hashicorp/google >= 6.0 for the push pool; the worker module's
# google_cloud_run_v2_worker_pool needs >= 6.38.0.
terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.38.0"
    }
  }
}

# add_terraform_attribution_label = false: resources labelled exactly as `skylane pool
# provision` labels them (no goog-terraform-provisioned label).
provider "google" {
  project = var.project
  region  = var.region

  add_terraform_attribution_label = false
}
