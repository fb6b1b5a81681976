"""Google Cloud adapter: Cloud Run functions (functions-framework HTTP functions) in
`main.py` — `on_push`, `on_scan`, `retention_fanout`, `retention_worker`, `notify`,
`recovery`, `recheck` — over the shared core, with Pub/Sub push or Eventarc CloudEvent
delivery, the ledger in Firestore, rechecks on Cloud Tasks and secrets in Secret Manager.
Importing this package imports nothing of Google's, AWS's or Azure's SDKs."""
