# Cloud Scheduler ticks (retention, recovery, report) and the Cloud Tasks queue of rechecks.

resource "google_cloud_scheduler_job" "tick" {
  for_each = {
    retention = { schedule = var.retention_schedule, topic = "retention_tick" }
    recovery  = { schedule = var.recovery_schedule, topic = "recovery_tick" }
    report    = { schedule = var.report_schedule, topic = "report_tick" }
  }

  name        = "${var.name}-${each.key}"
  region      = var.region
  description = "Starts a regwarden ${each.key} run"
  schedule    = each.value.schedule
  time_zone   = var.schedule_time_zone

  # The tick's publish time stands for the schedule's time: a redelivered tick keeps its
  # run id, so a retried fan-out queues the same runs.
  pubsub_target {
    topic_name = google_pubsub_topic.own[each.value.topic].id
    data       = base64encode("{}")
    attributes = { kind = "${each.key}-tick" }
  }

  depends_on = [google_project_service.apis]
}

# PENDING verdicts come back here: an HTTP task per recheck, due at the verdict's deadline,
# calling the recheck function with an OIDC token of the tasks identity. A task that fails
# is retried with backoff for a day; Cloud Tasks has no dead-letter queue, so one that still
# fails is logged (sampling 1.0) and dropped, and the image stays PENDING in the ledger.
resource "google_cloud_tasks_queue" "rechecks" {
  name     = "${var.name}-rechecks"
  location = var.region

  rate_limits {
    max_dispatches_per_second = 5
    max_concurrent_dispatches = var.max_instances
  }

  retry_config {
    max_attempts       = 100
    max_retry_duration = "86400s"
    min_backoff        = "10s"
    max_backoff        = "600s"
    max_doublings      = 5
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.apis]
}
