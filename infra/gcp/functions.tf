# The Cloud Run functions (2nd gen), each with its own service account, and who may invoke
# them: the push identity (Pub/Sub's OIDC tokens) and the tasks identity (Cloud Tasks').

resource "google_service_account" "fn" {
  for_each = local.functions

  account_id   = "${var.name}-${replace(each.key, "_", "-")}"
  display_name = "regwarden ${each.key}"
  description  = "Runs the ${each.key} function; its grants are in iam.tf"
}

resource "google_service_account" "push" {
  account_id   = "${var.name}-push"
  display_name = "regwarden Pub/Sub push"
  description  = "Identity of the OIDC tokens Pub/Sub pushes to the functions with; may only invoke them"
}

resource "google_service_account" "tasks" {
  account_id   = "${var.name}-tasks"
  display_name = "regwarden Cloud Tasks"
  description  = "Identity of the OIDC tokens of recheck tasks; may only invoke the recheck function"
}

resource "google_cloudfunctions2_function" "fn" {
  for_each = local.functions

  name        = "${var.name}-${replace(each.key, "_", "-")}"
  location    = var.region
  description = each.value.description

  build_config {
    runtime         = "python312"
    entry_point     = each.value.entry_point
    service_account = var.build_service_account
    source {
      storage_source {
        bucket = var.source_bucket
        object = var.source_object
      }
    }
  }

  service_config {
    available_memory                 = each.value.memory
    timeout_seconds                  = each.value.timeout
    max_instance_count               = each.value.max_instances
    min_instance_count               = 0
    max_instance_request_concurrency = 1
    # Pub/Sub push, Cloud Scheduler and Cloud Tasks of this project count as internal:
    # nothing from the internet reaches a function, authenticated or not.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.fn[each.key].email
    environment_variables          = merge(local.base_env, local.function_env[each.key])
  }

  depends_on = [
    google_project_service.apis,
    # a cold start reads the policy (and the gate its keys): grants first
    google_secret_manager_secret_iam_member.reader,
  ]
}

# A 2nd gen function is invoked through its Cloud Run service: roles/run.invoker there, for
# the two identities that call them and nobody else (no allUsers, no allAuthenticatedUsers).
resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  for_each = local.push_topics

  project  = var.project
  location = var.region
  name     = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push.email}"
}

resource "google_cloud_run_v2_service_iam_member" "tasks_invoker" {
  project  = var.project
  location = var.region
  name     = google_cloudfunctions2_function.fn["recheck"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.tasks.email}"
}
