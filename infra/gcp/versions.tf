# regwarden on Google Cloud: Artifact Registry gated by Cloud Run functions (2nd gen), fed by
# Pub/Sub push subscriptions (OIDC, dead-letter topics), Cloud Scheduler ticks and Cloud Tasks
# rechecks; the ledger in Firestore; secrets in Secret Manager. See docs/gcp.md.
#
# google >= 5.26: build_config.service_account on google_cloudfunctions2_function.
terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.26, < 7.0"
    }
  }
}

provider "google" {
  project        = var.project
  region         = var.region
  default_labels = var.labels
}
