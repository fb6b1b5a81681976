# What each function's service account may do, and where. No primitive role (owner, editor,
# viewer) anywhere; images are reachable only in the gated, quarantine and promotion
# repositories; project-level grants only where the API has no narrower resource.

locals {
  gate_functions = ["on_push", "on_scan", "recheck"]

  # Artifact Registry, per repository: who, where (gated: var.repositories; quarantine:
  # var.quarantine_repository; promotion: var.promotion_repositories), what, and `when` the
  # policy's quarantine actions need it (empty: always). `writer` is reader plus uploads and
  # tag create/update; `deleter` is this deployment's custom role with only versions.delete
  # and tags.delete, which no predefined role short of repoAdmin (repository settings,
  # packages, files) carries.
  repository_access = [
    # the gate judges, recovery finishes quarantines: both read what they act on
    { who = ["on_push", "on_scan", "recheck", "recovery"], where = "gated", grant = "reader", when = [] },
    # retag adds quarantined-<digest>, and either action rolls a moved tag back (writer);
    # retag removes the deployable tags, move deletes the source version (deleter)
    { who = ["on_push", "on_scan", "recheck", "recovery"], where = "gated", grant = "writer", when = ["retag", "move"] },
    { who = ["on_push", "on_scan", "recheck", "recovery"], where = "gated", grant = "deleter", when = ["retag", "move"] },
    # move writes its copy into the quarantine repository
    { who = ["on_push", "on_scan", "recheck", "recovery"], where = "quarantine", grant = "writer", when = ["move"] },
    { who = ["on_push", "on_scan", "recheck"], where = "promotion", grant = "writer", when = [] },
    # retention plans and deletes in the gated repositories and their quarantine copies
    { who = ["retention_worker"], where = "gated", grant = "reader", when = [] },
    { who = ["retention_worker"], where = "gated", grant = "deleter", when = [] },
    { who = ["retention_worker"], where = "quarantine", grant = "reader", when = [] },
    { who = ["retention_worker"], where = "quarantine", grant = "deleter", when = [] },
    # the report reads what it reports on
    { who = ["report"], where = "gated", grant = "reader", when = [] },
    { who = ["report"], where = "quarantine", grant = "reader", when = [] },
  ]
  repository_sets = {
    gated      = var.repositories
    quarantine = [var.quarantine_repository]
    promotion  = var.promotion_repositories
  }
  repository_roles = {
    reader  = "roles/artifactregistry.reader"
    writer  = "roles/artifactregistry.writer"
    deleter = google_project_iam_custom_role.artifact_deleter.name
  }
  repository_grants = flatten([
    for row in local.repository_access : [
      for p in setproduct(row.who, local.repository_sets[row.where]) : {
        function = p[0], repository = p[1], grant = row.grant
      }
    ] if length(row.when) == 0 || length(setintersection(row.when, var.quarantine_actions)) > 0
  ])

  # Project-level grants, where the API lists or reads across the project (Firestore takes
  # a condition on the database instead of a resource).
  project_access = [
    { who = ["on_push", "on_scan", "recheck"], grant = "occurrences" },
    { who = ["on_push", "on_scan", "recheck", "notify", "recovery", "retention_worker", "report"], grant = "ledger" },
    { who = ["retention_worker"], grant = "cloudrun" }, # with retention_inventory = cloudrun
    { who = ["retention_fanout", "report"], grant = "lister" },
  ]
  project_roles = {
    occurrences = "roles/containeranalysis.occurrences.viewer" # Artifact Analysis findings
    ledger      = "roles/datastore.user"                       # the ledger's database only
    cloudrun    = "roles/run.viewer"                           # images Cloud Run services run
    lister      = google_project_iam_custom_role.repository_lister.name
  }
  project_grants = flatten([
    for row in local.project_access : [
      for f in row.who : { function = f, grant = row.grant }
    ] if row.grant != "cloudrun" || var.retention_inventory == "cloudrun"
  ])

  # Topics each function publishes to.
  topic_publishers = {
    alerts         = ["on_push", "on_scan", "recheck", "recovery", "retention_worker"]
    retention_work = ["retention_fanout"]
  }
  publishers = flatten([
    for topic, who in local.topic_publishers : [for f in who : { function = f, topic = topic }]
  ])

  # Secrets each function reads: the policy's (every function), the gate's (keys), the
  # channels' (notify delivers; the others only publish to the alerts topic).
  secret_access = {
    policy  = ["on_push", "on_scan", "recheck", "notify", "recovery", "retention_fanout", "retention_worker", "report"]
    gate    = ["on_push", "on_scan", "recheck"]
    channel = ["notify"]
  }
  secret_sets = {
    policy  = local.policy_secret
    gate    = var.gate_secrets
    channel = var.channel_secrets
  }
  secret_readers = distinct(flatten([
    for kind, who in local.secret_access : [
      for p in setproduct(local.secret_sets[kind], who) : { secret = p[0], function = p[1] }
    ]
  ]))
}

# -- custom roles: exactly the permissions no predefined role narrows to -------------------------

resource "google_project_iam_custom_role" "artifact_deleter" {
  project     = var.project
  role_id     = "${replace(var.name, "-", "_")}_artifactDeleter"
  title       = "regwarden artifact deleter"
  description = "Delete image versions and tags (quarantine, retention); granted per repository"
  permissions = ["artifactregistry.tags.delete", "artifactregistry.versions.delete"]
}

resource "google_project_iam_custom_role" "repository_lister" {
  project     = var.project
  role_id     = "${replace(var.name, "-", "_")}_repositoryLister"
  title       = "regwarden repository lister"
  description = "List repository and package names (the retention fan-out); reads no image"
  permissions = ["artifactregistry.packages.list", "artifactregistry.repositories.list"]
}

# -- grants ------------------------------------------------------------------------------------

resource "google_artifact_registry_repository_iam_member" "fn" {
  for_each = { for g in local.repository_grants : "${g.function}/${g.repository}/${g.grant}" => g }

  project    = var.project
  location   = var.registry_location
  repository = each.value.repository
  role       = local.repository_roles[each.value.grant]
  member     = "serviceAccount:${google_service_account.fn[each.value.function].email}"
}

resource "google_project_iam_member" "fn" {
  for_each = { for g in local.project_grants : "${g.function}/${g.grant}" => g }

  project = var.project
  role    = local.project_roles[each.value.grant]
  member  = "serviceAccount:${google_service_account.fn[each.value.function].email}"

  # Firestore: the ledger's database only
  dynamic "condition" {
    for_each = each.value.grant == "ledger" ? [google_firestore_database.ledger.name] : []
    content {
      title      = "regwarden ledger only"
      expression = "resource.name == \"projects/${var.project}/databases/${condition.value}\""
    }
  }
}

resource "google_pubsub_topic_iam_member" "publisher" {
  for_each = { for g in local.publishers : "${g.function}/${g.topic}" => g }

  topic  = google_pubsub_topic.own[each.value.topic].id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.fn[each.value.function].email}"
}

resource "google_secret_manager_secret_iam_member" "reader" {
  for_each = { for g in local.secret_readers : "${g.secret}/${g.function}" => g }

  secret_id = google_secret_manager_secret.secret[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.fn[each.value.function].email}"
}

# Rechecks: the gate functions enqueue on the queue and create tasks whose OIDC token is the
# tasks identity's (iam.serviceAccounts.actAs on that one account, not the project).
resource "google_cloud_tasks_queue_iam_member" "enqueuer" {
  for_each = toset(local.gate_functions)

  project  = var.project
  location = var.region
  name     = google_cloud_tasks_queue.rechecks.name
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_service_account_iam_member" "tasks_act_as" {
  for_each = toset(local.gate_functions)

  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.fn[each.key].email}"
}
