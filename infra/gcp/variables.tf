# -- where -------------------------------------------------------------------------------------

variable "project" {
  description = "The project that holds the Artifact Registry repositories and everything regwarden deploys."
  type        = string
}

variable "region" {
  description = "Region of the functions, topics' message storage, the Cloud Tasks queue, the scheduler jobs and the KMS key."
  type        = string
  default     = "us-central1"
}

variable "name" {
  description = "Prefix of every resource name (functions, topics, subscriptions, service accounts, queue). Two deployments in one project need two names."
  type        = string
  default     = "regwarden"

  validation {
    # a service account id is at most 30 characters: NAME-retention-worker must fit
    condition     = can(regex("^[a-z][a-z0-9-]{2,12}$", var.name))
    error_message = "name: 3 to 13 of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "labels" {
  description = "Labels put on every resource that takes labels."
  type        = map(string)
  default     = { managed-by = "regwarden" }
}

# -- the registry ------------------------------------------------------------------------------

variable "registry_location" {
  description = "Location of the Artifact Registry repositories (the host is LOCATION-docker.pkg.dev), e.g. us, europe, us-central1."
  type        = string
  default     = "us"
}

variable "repositories" {
  description = "Artifact Registry repository ids (Docker format, in registry_location) that regwarden gates and cleans. Every IAM grant on images is on these and the quarantine repository only."
  type        = list(string)

  validation {
    condition     = length(var.repositories) > 0 && alltrue([for r in var.repositories : can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", r))])
    error_message = "repositories: at least one Artifact Registry repository id (lower-case letters, digits and hyphens)."
  }
}

variable "quarantine_repository" {
  description = "The Artifact Registry repository (an existing Docker repository in registry_location) that `move` puts images in; the policy's template is PROJECT/QUARANTINE/{repository}."
  type        = string
  default     = "quarantine"
}

variable "quarantine_actions" {
  description = "The quarantine strategies the policy uses: `retag` (tags removed, quarantined-<digest> added), `move` (copied to the quarantine repository, deleted from the source). Empty: alert only, and the gate gets read access and nothing else."
  type        = list(string)
  default     = ["retag", "move"]

  validation {
    condition     = alltrue([for a in var.quarantine_actions : contains(["retag", "move"], a)])
    error_message = "quarantine_actions: a subset of [\"retag\", \"move\"]."
  }
}

variable "promotion_repositories" {
  description = "Artifact Registry repository ids that the policy promotes passing images into (the gate writes there)."
  type        = list(string)
  default     = []
}

variable "extra_registry_hosts" {
  description = "Registry hosts the functions may contact besides LOCATION-docker.pkg.dev (REGWARDEN_ALLOWED_HOSTS)."
  type        = list(string)
  default     = []
}

variable "gcr_topic" {
  description = "The topic Artifact Registry publishes image writes to: it must be `gcr`, in this project (create it with `gcloud pubsub topics create gcr` if the project has none)."
  type        = string
  default     = "gcr"
}

variable "occurrences_topic" {
  description = "The topic Artifact Analysis publishes occurrence changes to (created with the Container Analysis API)."
  type        = string
  default     = "container-analysis-occurrences-v1"
}

variable "enable_container_scanning" {
  description = "Enable the Container Scanning API, which makes Artifact Analysis scan every pushed image (billed per image): regwarden's default scan source on GAR reads its occurrences."
  type        = bool
  default     = true
}

# -- the code and its settings -------------------------------------------------------------------

variable "source_bucket" {
  description = "Cloud Storage bucket holding the functions' source bundle (see docs/gcp.md, `make gcp-bundle`)."
  type        = string
}

variable "source_object" {
  description = "The source bundle's object name; name it after its content (regwarden-gcp-<sha256>.zip) so a new bundle redeploys the functions."
  type        = string
}

variable "build_service_account" {
  description = "Service account (projects/P/serviceAccounts/EMAIL) Cloud Build uses to build the functions; null: the project's default build identity."
  type        = string
  default     = null
}

variable "policy" {
  description = "REGWARDEN_POLICY: `secret://NAME` (a Secret Manager secret in this project, declared here) or a path inside the source bundle."
  type        = string
  default     = "secret://regwarden-policy"
}

variable "gate_secrets" {
  description = "Secret Manager secret ids the gate's checks read (signature keys, registry credentials), readable by on_push, on_scan and recheck only. Declared here without values."
  type        = list(string)
  default     = []
}

variable "channel_secrets" {
  description = "Secret Manager secret ids of the alert channels (Slack and Teams webhook URLs, the webhook signing key), readable by notify only. Declared here without values."
  type        = list(string)
  default     = []
}

variable "firestore_database" {
  description = "The Firestore (Native mode) database of the ledger, created here."
  type        = string
  default     = "regwarden"
}

variable "firestore_location" {
  description = "Location of the Firestore database (a region or nam5 / eur3); null: region."
  type        = string
  default     = null
}

variable "ledger_prefix" {
  description = "Prefix of the ledger's collections (PREFIX_deliveries, PREFIX_verdicts, ...)."
  type        = string
  default     = "regwarden"
}

variable "kms_key" {
  description = "A Cloud KMS key (projects/P/locations/REGION/keyRings/R/cryptoKeys/K) for the topics; empty: one is created in region."
  type        = string
  default     = ""
}

# -- delivery and scale --------------------------------------------------------------------------

variable "max_delivery_attempts" {
  description = "Deliveries of one message before its subscription dead-letters it (Pub/Sub allows 5 to 100); the last attempt alerts with what state the image is in."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts: 5 to 100, as Pub/Sub's dead-letter policy allows."
  }
}

variable "max_instances" {
  description = "Maximum instances of each gate and notify function."
  type        = number
  default     = 10
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids told when a dead-letter subscription holds messages."
  type        = list(string)
  default     = []
}

# -- schedules and retention ---------------------------------------------------------------------

variable "schedule_time_zone" {
  description = "Time zone of the scheduler jobs (tz database name)."
  type        = string
  default     = "Etc/UTC"
}

variable "retention_schedule" {
  description = "Cron schedule of a retention run (fan-out, then one work message per repository)."
  type        = string
  default     = "0 3 * * *"
}

variable "report_schedule" {
  description = "Cron schedule of the registry report written to the reports bucket."
  type        = string
  default     = "0 6 * * *"
}

variable "report_retention_days" {
  description = "Days a report (reports/YYYY/MM/DD/report.html and .json) stays in the reports bucket before its lifecycle rule deletes it."
  type        = number
  default     = 400

  validation {
    condition     = var.report_retention_days >= 1 && floor(var.report_retention_days) == var.report_retention_days
    error_message = "report_retention_days: a whole number of days, at least 1."
  }
}

variable "recovery_schedule" {
  description = "Cron schedule of the recovery sweep (unfinished quarantines, unsent alerts)."
  type        = string
  default     = "*/5 * * * *"
}

variable "retention_mode" {
  description = "`plan`: retention reports what it would delete and deletes nothing; `apply`: it deletes."
  type        = string
  default     = "plan"

  validation {
    condition     = contains(["plan", "apply"], var.retention_mode)
    error_message = "retention_mode: plan or apply."
  }
}

variable "retention_inventory" {
  description = "`cloudrun`: images that Cloud Run services of the project run count as in use (and the worker may read them); `policy`: only the policy's inventory."
  type        = string
  default     = "cloudrun"

  validation {
    condition     = contains(["cloudrun", "policy"], var.retention_inventory)
    error_message = "retention_inventory: cloudrun or policy."
  }
}

variable "retention_concurrency" {
  description = "Deletions in flight per retention worker."
  type        = number
  default     = 4
}

variable "retention_max_instances" {
  description = "Repositories processed at once (maximum instances of the retention worker)."
  type        = number
  default     = 2
}
