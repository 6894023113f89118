output "worker_pool_name" {
  description = "The Cloud Run worker pool's name, skylane-<slug>."
  value       = google_cloud_run_v2_worker_pool.this.name
}

output "worker_pool_id" {
  description = "The Cloud Run worker pool's resource name, projects/<project>/locations/<region>/workerPools/<name>."
  value       = google_cloud_run_v2_worker_pool.this.id
}

output "worker_service_account" {
  description = "The email of the worker's service account (<prefix>-wrk), the identity the worker calls Cloud Run and reads its API key with."
  value       = google_service_account.worker.email
}
