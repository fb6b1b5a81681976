# The scheduled report's bucket: private (uniform access, public access prevented), the
# topics' KMS key, versioned, and a lifecycle that deletes reports after
# var.report_retention_days (and an overwritten day's older version after a day). The report
# function may create objects under the report prefix only (an IAM condition on the name).

locals {
  report_prefix = "reports/"
}

resource "google_storage_bucket" "reports" {
  name                        = "${var.project}-${var.name}-reports"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # the reports are history: a destroy leaves a bucket that still holds any
  force_destroy = false

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = local.kms_key
  }

  lifecycle_rule {
    condition {
      age            = var.report_retention_days
      matches_prefix = [local.report_prefix]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  #checkov:skip=CKV_GCP_62:Holds only the reports this deployment writes (one pair a day); Cloud Audit Logs data access is the trail where wanted, no second bucket of access logs
  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.storage_agent]
}

# Cloud Storage encrypts with the key as its service agent.
data "google_storage_project_service_account" "agent" {
  project = var.project
}

resource "google_kms_crypto_key_iam_member" "storage_agent" {
  crypto_key_id = local.kms_key
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.agent.email_address}"
}

# Objects under reports/ only. objectUser, not objectCreator: a same-day run writes the
# day's keys again, and Cloud Storage authorizes replacing an object as deleting it (the
# replaced version stays, noncurrent, for a day). No bucket-level permission passes the
# condition (it names objects), so the account cannot list or change the bucket.
resource "google_storage_bucket_iam_member" "report_writer" {
  bucket = google_storage_bucket.reports.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.fn["report"].email}"

  condition {
    title      = "reports prefix only"
    expression = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.reports.name}/objects/${local.report_prefix}\")"
  }
}
