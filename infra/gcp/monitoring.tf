# One alert policy per dead-letter subscription: a message there is an event regwarden gave
# up on after max_delivery_attempts (the function alerted on its last attempt already; this
# tells the operators the letter is waiting to be read and replayed).

resource "google_monitoring_alert_policy" "dead_letters" {
  for_each = local.push_topics

  display_name = "${var.name} ${each.key}: dead letters"
  combiner     = "OR"

  conditions {
    display_name = "messages in ${google_pubsub_subscription.dead_letter[each.key].name}"

    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${google_pubsub_subscription.dead_letter[each.key].name}\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  notification_channels = var.notification_channels

  documentation {
    mime_type = "text/markdown"
    content   = "Deliveries of ${each.key} failed ${var.max_delivery_attempts} times and were dead-lettered. Read them with `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter[each.key].name} --limit 10` (no --auto-ack: they stay) and see docs/gcp.md, \"Dead letters\"."
  }

  depends_on = [google_project_service.apis]
}
