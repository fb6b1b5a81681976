# Topics, push subscriptions (OIDC, retry, dead letters) and what the Pub/Sub service agent
# needs for them.

# The two topics Google publishes to: Artifact Registry's `gcr` and Artifact Analysis'
# occurrences. Both belong to the project, not to this deployment.
data "google_pubsub_topic" "gcr" {
  project    = var.project
  name       = var.gcr_topic
  depends_on = [google_project_service.apis]
}

data "google_pubsub_topic" "occurrences" {
  project    = var.project
  name       = var.occurrences_topic
  depends_on = [google_project_service.apis]
}

# -- the key the topics are encrypted with (CMEK) ------------------------------------------------

resource "google_kms_key_ring" "regwarden" {
  count = var.kms_key == "" ? 1 : 0

  name       = var.name
  location   = var.region
  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key" "topics" {
  count = var.kms_key == "" ? 1 : 0

  name            = "${var.name}-topics"
  key_ring        = google_kms_key_ring.regwarden[0].id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = "7776000s" # 90 days

  lifecycle {
    # destroying the key loses every message encrypted with it
    prevent_destroy = true
  }
}

resource "google_kms_crypto_key_iam_member" "pubsub_agent" {
  crypto_key_id = local.kms_key
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.pubsub_agent
}

# -- this deployment's topics --------------------------------------------------------------------

resource "google_pubsub_topic" "own" {
  for_each = {
    alerts         = "alerts"         # every alert, attributes team/repository/severity/verdict/action
    retention_tick = "retention-tick" # Cloud Scheduler → retention_fanout
    retention_work = "retention-work" # one message per repository → retention_worker
    recovery_tick  = "recovery-tick"  # Cloud Scheduler → recovery
    report_tick    = "report-tick"    # Cloud Scheduler → report
  }

  name         = "${var.name}-${each.value}"
  kms_key_name = local.kms_key

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

# -- dead letters: a topic per function, and a subscription that keeps what lands there ---------

resource "google_pubsub_topic" "dead_letter" {
  for_each = local.push_topics

  name         = "${var.name}-${replace(each.key, "_", "-")}-dead-letters"
  kms_key_name = local.kms_key

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

# A topic keeps nothing without a subscription: the letters wait here (31 days, Pub/Sub's
# longest) to be read and replayed (docs/gcp.md, "Dead letters").
resource "google_pubsub_subscription" "dead_letter" {
  for_each = local.push_topics

  name                       = "${var.name}-${replace(each.key, "_", "-")}-dead-letters"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  ack_deadline_seconds       = 60
  message_retention_duration = "2678400s"

  expiration_policy {
    ttl = "" # never expires for want of a reader
  }
}

# Pub/Sub forwards a message it gave up on as its own service agent: it must publish to the
# dead-letter topic and acknowledge on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.push_topics

  topic  = google_pubsub_topic.dead_letter[each.key].id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = local.push_topics

  subscription = google_pubsub_subscription.push[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# The service agent mints the push identity's OIDC tokens (needed in projects whose agent
# predates April 2021; harmless elsewhere). Granted on that one account, not the project.
resource "google_service_account_iam_member" "pubsub_agent_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# -- the push subscriptions: one per Pub/Sub-fed function ----------------------------------------

resource "google_pubsub_subscription" "push" {
  for_each = local.push_topics

  name  = "${var.name}-${replace(each.key, "_", "-")}"
  topic = each.value
  # for push, also how long Pub/Sub waits for the function's answer (at most 600 s)
  ack_deadline_seconds = min(600, local.functions[each.key].timeout + 60)
  # a recovery tick older than the next one is worth nothing: the next tick is the retry
  message_retention_duration = each.key == "recovery" ? "600s" : "604800s"

  push_config {
    push_endpoint = google_cloudfunctions2_function.fn[each.key].service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = google_cloudfunctions2_function.fn[each.key].service_config[0].uri
    }
  }

  # A 500 (failed) or 400 (malformed) is redelivered with backoff, then dead-lettered; the
  # function alerts on its last attempt (REGWARDEN_MAX_DELIVERIES, the same number).
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.push_invoker,
    google_service_account_iam_member.pubsub_agent_token_creator,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}
