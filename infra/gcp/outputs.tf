output "function_urls" {
  description = "Each function's Cloud Run URL (reachable only from inside the project: ingress internal)."
  value       = { for k, f in google_cloudfunctions2_function.fn : k => f.service_config[0].uri }
}

output "alerts_topic" {
  description = "The alerts topic teams subscribe to, with a filter on the attributes team, repository, severity, verdict and action."
  value       = google_pubsub_topic.own["alerts"].id
}

output "topics" {
  description = "This deployment's topics."
  value       = { for k, t in google_pubsub_topic.own : k => t.id }
}

output "push_subscriptions" {
  description = "The push subscription feeding each Pub/Sub-fed function."
  value       = { for k, s in google_pubsub_subscription.push : k => s.id }
}

output "dead_letter_subscriptions" {
  description = "Where each function's dead letters wait (pull subscriptions)."
  value       = { for k, s in google_pubsub_subscription.dead_letter : k => s.id }
}

output "tasks_queue" {
  description = "The Cloud Tasks queue of rechecks (REGWARDEN_TASKS_QUEUE)."
  value       = google_cloud_tasks_queue.rechecks.id
}

output "recheck_url" {
  description = "The URL recheck tasks call (REGWARDEN_RECHECK_URL)."
  value       = local.recheck_url
}

output "ledger" {
  description = "The ledger URL (REGWARDEN_LEDGER), for `regwarden` commands run against this deployment."
  value       = local.ledger_url
}

output "service_accounts" {
  description = "Each function's service account, and the push and tasks identities."
  value = merge(
    { for k, sa in google_service_account.fn : k => sa.email },
    { push = google_service_account.push.email, tasks = google_service_account.tasks.email },
  )
}

output "reports_bucket" {
  description = "The scheduled reports: reports/YYYY/MM/DD/report.html and report.json (deleted after report_retention_days)."
  value       = google_storage_bucket.reports.name
}
