# The project, its APIs, and the names and settings everything else is built from.
#
#   gcr ───────────────────────────────▶ push sub ─▶ on_push ─┐
#   container-analysis-occurrences-v1 ─▶ push sub ─▶ on_scan ─┤ Firestore ledger
#   Cloud Tasks (regwarden-rechecks) ──────────────▶ recheck ─┤
#   Scheduler ─▶ recovery-tick ────────▶ push sub ─▶ recovery ┤
#                                                            ▼
#   team subscriptions (filters) ◀── regwarden-alerts ──▶ push sub ─▶ notify ─▶ Slack / Teams / webhook
#   Scheduler ─▶ retention-tick ─▶ push sub ─▶ retention_fanout ─▶ retention-work ─▶ push sub ─▶ retention_worker
#   Scheduler ─▶ report-tick ─▶ push sub ─▶ report ─▶ reports bucket (reports/YYYY/MM/DD/report.html, .json)
#
# Every push subscription has its own dead-letter topic (with a pull subscription that keeps
# the letters and an alert policy on it).

data "google_project" "this" {
  project_id = var.project
}

resource "google_project_service" "apis" {
  for_each = toset(concat([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudkms.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "containeranalysis.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
  ], var.enable_container_scanning ? ["containerscanning.googleapis.com"] : []))

  project = var.project
  service = each.key
  # another deployment (or the registry itself) may need the API: never turned off from here
  disable_on_destroy = false
}

locals {
  registry_host = "${var.registry_location}-docker.pkg.dev"
  pubsub_agent  = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  kms_key       = var.kms_key != "" ? var.kms_key : google_kms_crypto_key.topics[0].id
  policy_secret = startswith(var.policy, "secret://") ? [trimprefix(var.policy, "secret://")] : []
  ledger_url    = "firestore://${var.project}/${google_firestore_database.ledger.name}?prefix=${var.ledger_prefix}"
  # The recheck function's deterministic Cloud Run URL (SERVICE-PROJECT_NUMBER.REGION.run.app;
  # a 2nd gen function is the Cloud Run service of its name): the recheck function itself
  # schedules the next hop, so its URL cannot come from its own resource.
  recheck_url = "https://${var.name}-recheck-${data.google_project.this.number}.${var.region}.run.app"
  # The repositories retention may list and plan: the gated ones and their quarantine copies
  # (PROJECT/QUARANTINE/PROJECT/REPOSITORY/IMAGE), exactly where its IAM grants reach.
  retention_prefixes = join(",", concat(
    [for r in var.repositories : "${var.project}/${r}/"],
    [for r in var.repositories : "${var.project}/${var.quarantine_repository}/${var.project}/${r}/"],
  ))

  # One Cloud Run function per entry point of functions/gcp/main.py.
  functions = {
    on_push = {
      entry_point   = "on_push"
      description   = "Judge an Artifact Registry write (topic gcr): verify, evaluate, quarantine, promote, alert"
      memory        = "1Gi"
      timeout       = 120
      max_instances = var.max_instances
    }
    on_scan = {
      entry_point   = "on_scan"
      description   = "Judge an image again when its Artifact Analysis occurrences change"
      memory        = "1Gi"
      timeout       = 120
      max_instances = var.max_instances
    }
    recheck = {
      entry_point   = "recheck"
      description   = "Judge a PENDING image again at its deadline (Cloud Tasks, OIDC)"
      memory        = "1Gi"
      timeout       = 120
      max_instances = var.max_instances
    }
    notify = {
      entry_point   = "notify"
      description   = "Deliver an alert from the alerts topic to the policy's Slack, Teams and webhook channels"
      memory        = "512Mi"
      timeout       = 120
      max_instances = var.max_instances
    }
    recovery = {
      entry_point   = "recovery"
      description   = "Finish unfinished quarantines from their ledger intents; send alerts still in the outbox"
      memory        = "1Gi"
      timeout       = 300
      max_instances = 1
    }
    retention_fanout = {
      entry_point   = "retention_fanout"
      description   = "Start a scheduled retention run: one work message per repository with retention rules"
      memory        = "512Mi"
      timeout       = 300
      max_instances = 1
    }
    retention_worker = {
      entry_point   = "retention_worker"
      description   = "Plan one repository's retention; with RETENTION_MODE=apply, delete and alert"
      memory        = "1Gi"
      timeout       = 540
      max_instances = var.retention_max_instances
    }
    report = {
      entry_point   = "report"
      description   = "Write the registry report (HTML and JSON) to the reports bucket"
      memory        = "2Gi"
      timeout       = 540
      max_instances = 1
    }
  }

  # The topic each Pub/Sub-fed function's push subscription reads (recheck is fed by Cloud Tasks).
  push_topics = {
    on_push          = data.google_pubsub_topic.gcr.id
    on_scan          = data.google_pubsub_topic.occurrences.id
    notify           = google_pubsub_topic.own["alerts"].id
    recovery         = google_pubsub_topic.own["recovery_tick"].id
    retention_fanout = google_pubsub_topic.own["retention_tick"].id
    retention_worker = google_pubsub_topic.own["retention_work"].id
    report           = google_pubsub_topic.own["report_tick"].id
  }

  # Settings (functions/gcp/_settings.py): every function gets base_env and its own set.
  base_env = {
    GOOGLE_CLOUD_PROJECT     = var.project
    LOG_EXECUTION_ID         = "true"
    REGWARDEN_POLICY         = var.policy
    REGWARDEN_LEDGER         = local.ledger_url
    REGWARDEN_ALLOWED_HOSTS  = join(",", concat([local.registry_host], var.extra_registry_hosts))
    REGWARDEN_MAX_DELIVERIES = tostring(var.max_delivery_attempts)
  }
  gate_env = {
    REGWARDEN_ALERTS_TOPIC          = google_pubsub_topic.own["alerts"].id
    REGWARDEN_TASKS_QUEUE           = google_cloud_tasks_queue.rechecks.id
    REGWARDEN_RECHECK_URL           = local.recheck_url
    REGWARDEN_TASKS_SERVICE_ACCOUNT = google_service_account.tasks.email
  }
  notify_env = {
    # notify never publishes to it: a policy route to this topic is the loop it skips
    REGWARDEN_ALERTS_TOPIC = google_pubsub_topic.own["alerts"].id
  }
  recovery_env = {
    REGWARDEN_ALERTS_TOPIC    = google_pubsub_topic.own["alerts"].id
    REGWARDEN_RECOVERY_SETTLE = "600" # > the gate functions' 120 s timeout
  }
  retention_env = {
    REGWARDEN_RETENTION_REGISTRY    = local.registry_host
    REGWARDEN_RETENTION_PREFIXES    = local.retention_prefixes
    RETENTION_MODE                  = var.retention_mode
    REGWARDEN_RETENTION_INVENTORY   = var.retention_inventory
    REGWARDEN_RETENTION_CONCURRENCY = tostring(var.retention_concurrency)
  }
  fanout_env = {
    REGWARDEN_RETENTION_TOPIC = google_pubsub_topic.own["retention_work"].id
  }
  worker_env = {
    REGWARDEN_ALERTS_TOPIC     = google_pubsub_topic.own["alerts"].id
    REGWARDEN_RETENTION_BUDGET = "480" # stops starting deletions 30 s before; timeout 540
  }
  report_env = {
    REGWARDEN_REPORT_REGISTRY = local.registry_host
    REGWARDEN_REPORT_BUCKET   = google_storage_bucket.reports.name
    REGWARDEN_REPORT_PREFIX   = local.report_prefix
    # the gated repositories and their quarantine copies, as retention reads them
    REGWARDEN_REPORT_PREFIXES = local.retention_prefixes
    MPLCONFIGDIR              = "/tmp/matplotlib" # matplotlib's cache: /tmp is writable
  }
  function_env = {
    on_push          = local.gate_env
    on_scan          = local.gate_env
    recheck          = local.gate_env
    notify           = local.notify_env
    recovery         = local.recovery_env
    retention_fanout = merge(local.retention_env, local.fanout_env)
    retention_worker = merge(local.retention_env, local.worker_env)
    report           = local.report_env
  }
}
