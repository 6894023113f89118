# google_cloud_run_v2_worker_pool (Cloud Run worker pools) is not in provider 6.0: it appeared
# in the 6.37/6.38 releases (May-June 2025); 6.38.0 is the first release it is confirmed in.
terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.38.0"
    }
  }
}
