# -- where -------------------------------------------------------------------------------------

variable "subscription_id" {
  description = "The subscription everything regwarden deploys goes in (the registry may be in another one)."
  type        = string
}

variable "location" {
  description = "Azure region of the resource group, the Function App, the storage account, the topics and the vault."
  type        = string
  default     = "westeurope"
}

variable "name" {
  description = "Prefix of every resource name. Two deployments in one subscription need two names. Storage account and vault names are derived from it (letters and digits only, plus a suffix)."
  type        = string
  default     = "regwarden"

  validation {
    # NAME + "st" + 6-character suffix must fit a storage account name (3-24 a-z0-9)
    condition     = can(regex("^[a-z][a-z0-9]{2,13}$", var.name))
    error_message = "name: 3 to 14 of a-z and 0-9, starting with a letter (storage account rules)."
  }
}

variable "tags" {
  description = "Tags put on every resource that takes tags."
  type        = map(string)
  default     = { managed-by = "regwarden" }
}

# -- the registry ------------------------------------------------------------------------------

variable "registry_id" {
  description = "Resource id of the Azure Container Registry regwarden gates (/subscriptions/S/resourceGroups/G/providers/Microsoft.ContainerRegistry/registries/NAME). Every grant on images is on this registry only."
  type        = string

  validation {
    condition     = can(regex("^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.ContainerRegistry/registries/[A-Za-z0-9]+$", var.registry_id))
    error_message = "registry_id: the resource id of an Azure Container Registry."
  }
}

variable "acr_quarantine_policy" {
  description = "The registry's quarantine policy is on (az acr config content-trust / quarantine): the gate PATCHes quarantineState and needs AcrQuarantineWriter."
  type        = bool
  default     = false
}

variable "extra_registry_hosts" {
  description = "Registry hosts the functions may contact besides the gated registry's login server (REGWARDEN_ALLOWED_HOSTS)."
  type        = list(string)
  default     = []
}

variable "scan_subscriptions" {
  description = "Subscriptions whose Defender for Containers findings (and Container Apps) the functions read through Resource Graph (REGWARDEN_AZURE_SUBSCRIPTION). Empty: the registry's subscription. Reader and Security Reader are granted on each."
  type        = list(string)
  default     = []
}

variable "aks_cluster_ids" {
  description = "Resource ids of the AKS clusters whose running images count as in use for retention (inventory `azure`). The identity gets Azure Kubernetes Service Cluster User Role on each of these and no other cluster."
  type        = list(string)
  default     = []
}

# -- the code and its settings -------------------------------------------------------------------

variable "policy" {
  description = "REGWARDEN_POLICY: `secret://NAME` (a secret in this deployment's Key Vault) or a path inside the published bundle."
  type        = string
  default     = "secret://regwarden-policy"
}

variable "ledger_prefix" {
  description = "Prefix of the ledger's tables in the storage account (REGWARDEN_LEDGER azuretable://ACCOUNT?prefix=PREFIX)."
  type        = string
  default     = "regwarden"
}

variable "functions_published" {
  description = "The bundle has been published to the Function App (docs/azure.md). Event Grid checks that a subscription's function exists when it is created: the first apply runs with false, the second (after publishing) with true creates the subscriptions to on_push and notify."
  type        = bool
  default     = false
}

variable "maximum_instance_count" {
  description = "Instances the Function App may scale out to (Flex Consumption: 40 to 1000)."
  type        = number
  default     = 40
}

variable "instance_memory_in_mb" {
  description = "Memory of each instance (Flex Consumption: 2048 or 4096)."
  type        = number
  default     = 2048

  validation {
    condition     = contains([2048, 4096], var.instance_memory_in_mb)
    error_message = "instance_memory_in_mb: 2048 or 4096."
  }
}

variable "on_push_always_ready" {
  description = "Instances of on_push Flex Consumption keeps running while idle (always ready, billed as such): an image pushed after a quiet spell is judged without a cold start. 0: none; every new instance starts cold."
  type        = number
  default     = 0

  validation {
    condition     = var.on_push_always_ready >= 0 && floor(var.on_push_always_ready) == var.on_push_always_ready
    error_message = "on_push_always_ready: a whole number, 0 or more."
  }
}

variable "log_retention_days" {
  description = "Days the Log Analytics workspace behind Application Insights keeps logs."
  type        = number
  default     = 30
}

# -- delivery ------------------------------------------------------------------------------------

variable "max_dequeue_count" {
  description = "Deliveries of one queue message before the host moves it to NAME-poison (host.json maxDequeueCount, REGWARDEN_MAX_DEQUEUE): keep both equal."
  type        = number
  default     = 5
}

variable "event_max_delivery_attempts" {
  description = "Event Grid deliveries of one event to on_push or notify before it is dead-lettered (1 to 30)."
  type        = number
  default     = 30

  validation {
    condition     = var.event_max_delivery_attempts >= 1 && var.event_max_delivery_attempts <= 30
    error_message = "event_max_delivery_attempts: 1 to 30, as Event Grid's retry policy allows."
  }
}

variable "event_time_to_live" {
  description = "Minutes Event Grid keeps retrying an event before dead-lettering it (1 to 1440)."
  type        = number
  default     = 1440
}

# -- schedules and retention ---------------------------------------------------------------------

variable "scan_schedule" {
  description = "NCRONTAB (6 fields, seconds first) of the on_scan timer: Defender findings changed since the last poll."
  type        = string
  default     = "0 */5 * * * *"
}

variable "recovery_schedule" {
  description = "NCRONTAB (6 fields) of the recovery timer (unfinished quarantines, unsent alerts)."
  type        = string
  default     = "30 */5 * * * *"
}

variable "retention_schedule" {
  description = "NCRONTAB (6 fields) of a retention run (fan-out, then one work message per repository)."
  type        = string
  default     = "0 0 3 * * *"
}

variable "report_schedule" {
  description = "NCRONTAB (6 fields) of the registry report written to the reports container."
  type        = string
  default     = "0 0 6 * * *"
}

variable "report_retention_days" {
  description = "Days a report (reports/YYYY/MM/DD/report.html and .json) stays in the reports container before the lifecycle policy deletes it."
  type        = number
  default     = 400

  validation {
    condition     = var.report_retention_days >= 1 && floor(var.report_retention_days) == var.report_retention_days
    error_message = "report_retention_days: a whole number of days, at least 1."
  }
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

variable "retention_prefixes" {
  description = "Repository prefixes retention may list and plan (REGWARDEN_RETENTION_PREFIXES); empty: every repository of the registry."
  type        = list(string)
  default     = []
}

variable "retention_inventory" {
  description = "`azure`: images that the AKS clusters of aks_cluster_ids and the Container Apps (and jobs) of scan_subscriptions run count as in use; `policy`: only the policy's inventory."
  type        = string
  default     = "azure"

  validation {
    condition     = contains(["azure", "policy"], var.retention_inventory)
    error_message = "retention_inventory: azure or policy."
  }
}

variable "retention_concurrency" {
  description = "Deletions in flight per retention worker."
  type        = number
  default     = 4
}

variable "retention_budget" {
  description = "Seconds a retention worker may spend on one repository before it stops starting deletions (below host.json's functionTimeout)."
  type        = number
  default     = 480
}

# -- alerts --------------------------------------------------------------------------------------

variable "team_subscriptions" {
  description = "Event Grid subscriptions of teams to the alerts topic, by name: the webhook that receives the CloudEvents (it must answer Event Grid's validation handshake) and the teams, severities and verdicts it wants (data.team / data.severity / data.verdict; an empty list does not filter on that field). A webhook URL is not a secret: protect the endpoint with Entra ID (entra_app_id)."
  type = map(object({
    webhook_url  = string
    teams        = list(string)
    severities   = optional(list(string), [])
    verdicts     = optional(list(string), [])
    entra_app_id = optional(string)
  }))
  default = {}

  validation {
    condition     = alltrue([for k, s in var.team_subscriptions : length(s.teams) > 0 && startswith(s.webhook_url, "https://")])
    error_message = "team_subscriptions: each names at least one team and an https:// webhook."
  }

  validation {
    # the values an alert's data carries (notify/_eventgrid.py): severity lower-case, verdict upper-case
    condition = alltrue([for k, s in var.team_subscriptions : alltrue(concat(
      [for v in s.severities : contains(["unknown", "negligible", "low", "medium", "high", "critical"], v)],
      [for v in s.verdicts : contains(["PASSED", "WARN", "FAILED", "PENDING", "ERROR"], v)],
    ))])
    error_message = "team_subscriptions: severities among unknown, negligible, low, medium, high, critical; verdicts among PASSED, WARN, FAILED, PENDING, ERROR."
  }
}
