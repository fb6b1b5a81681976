"""Google Cloud adapter: Cloud Run functions (functions-framework HTTP functions) in
`main.py` — `on_push`, `on_scan`, `retention_fanout`, `retention_worker`, `notify`,
`recovery`, `recheck` — over the shared core, with Pub/Sub push or Eventarc CloudEvent
delivery, the ledger in Firestore, rechecks on Cloud Tasks and secrets in Secret Manager.
Importing this package imports nothing of Google's, AWS's or Azure's SDKs."""

from functions._collector import ColdStartPause

__all__: list[str] = ["COLLECTOR"]

# Paused on Cloud Run until the first state is built (functions/_collector.py says why).
COLLECTOR = ColdStartPause("K_SERVICE")
