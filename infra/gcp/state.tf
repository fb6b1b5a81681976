# The ledger (Firestore, Native mode) and the secrets (Secret Manager: names only, no values).

resource "google_firestore_database" "ledger" {
  project                           = var.project
  name                              = var.firestore_database
  location_id                       = coalesce(var.firestore_location, var.region)
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "OPTIMISTIC"
  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  # quarantine records and the action audit never expire: the database outlives a destroy
  delete_protection_state = "DELETE_PROTECTION_ENABLED"
  deletion_policy         = "ABANDON"

  depends_on = [google_project_service.apis]
}

# TTL policies on `expireAt` (regwarden.store._firestore: TTL_FIELD on each EXPIRING kind).
# Deletion is lazy (within days): the ledger itself reads a document past its expireAt as
# absent. Delivery ids and outcomes are also listed by `expireAt <= now`
# (expire_deliveries), which the ascending index serves.
resource "google_firestore_field" "ttl_listed" {
  for_each = toset(["deliveries", "outcomes"])

  project    = var.project
  database   = google_firestore_database.ledger.name
  collection = "${var.ledger_prefix}_${each.key}"
  field      = "expireAt"

  ttl_config {}

  index_config {
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION"
    }
  }
}

# Outbox rows and failure notes are never queried by expireAt: no index on the field (a
# monotonic timestamp index is a write hot spot that only TTL would use).
resource "google_firestore_field" "ttl_unlisted" {
  for_each = toset(["outbox", "failures"])

  project    = var.project
  database   = google_firestore_database.ledger.name
  collection = "${var.ledger_prefix}_${each.key}"
  field      = "expireAt"

  ttl_config {}

  index_config {}
}

# The policy's secret (when REGWARDEN_POLICY is secret://NAME), the gate's and the channels'.
# Add the values with `gcloud secrets versions add NAME --data-file=-` (docs/gcp.md).
resource "google_secret_manager_secret" "secret" {
  for_each = toset(concat(local.policy_secret, var.gate_secrets, var.channel_secrets))

  secret_id = each.key

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }

  depends_on = [google_project_service.apis]
}
