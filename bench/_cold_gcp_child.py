"""One cold start of the GCP `on_push` function in a fresh interpreter, for
`bench/cold_start_gcp.py` (run as a script).

    python bench/_cold_gcp_child.py product SPEC OUT   # the function's first delivery
    python bench/_cold_gcp_child.py floor SPEC OUT     # SDK clients + the same requests

Both modes first import functions-framework (the runtime, which Cloud Run has loaded
before it imports `main`) and mark `runtime`. The product then has functions-framework
load `functions/gcp/main.py` as it does when serving (`create_app`) and hands it the
Pub/Sub push through Flask's test client; the floor imports the Google client module of
every service the product called, creates one REST client each (anonymous, at the same
endpoints) and httpx's client (the OCI data plane's library), then sends the product's
requests again raw. SPEC's `hidden` packages (the AWS and Azure SDKs and the dev tools a
deployed function does not have) cannot be imported in either mode.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()

import json  # noqa: E402  # after the first mark: the interpreter start is measured alone
import sys  # noqa: E402
from typing import Any  # noqa: E402

MARKER = "cold-bench: first-delivery"

#: service → (module, client class) of the Google client library regwarden uses for it.
CLIENTS = {
    "artifactregistry": ("google.cloud.artifactregistry_v1", "ArtifactRegistryClient"),
    "containeranalysis": ("grafeas.grafeas_v1", "GrafeasClient"),
    "firestore": ("google.cloud.firestore_v1.services.firestore", "FirestoreClient"),
    "pubsub": ("google.pubsub_v1", "PublisherClient"),
    "cloudtasks": ("google.cloud.tasks_v2", "CloudTasksClient"),
    "secretmanager": ("google.cloud.secretmanager_v1", "SecretManagerServiceClient"),
    "run": ("google.cloud.run_v2", "ServicesClient"),
}


def product(spec: dict[str, Any]) -> dict[str, Any]:
    import functions_framework

    runtime = time.monotonic()
    app = functions_framework.create_app("on_push", spec["main"])  # type: ignore[no-untyped-call]
    imported = time.monotonic()
    sys.stderr.write(MARKER + "\n")
    sys.stderr.flush()
    answer = app.test_client().post("/", data=spec["body"].encode(), headers=spec["headers"])
    handled = time.monotonic()
    result = answer.get_json(silent=True) or {}
    verdicts = [r.get("verdict") for r in result.get("results", [])]
    if answer.status_code != 200 or verdicts != [spec["expect"]]:
        raise SystemExit(f"the delivery was not handled as expected: {answer.status_code} {result}")
    return {"started": STARTED, "runtime": runtime, "imported": imported, "handled": handled}


def floor(spec: dict[str, Any]) -> dict[str, Any]:
    """The least a function doing the same work pays: the client library of every Google
    service the product called, one client each, httpx for `/v2/`, and the product's
    requests sent again raw (one keep-alive connection per server, one after another)."""
    import importlib

    import functions_framework  # noqa: F401  # the runtime, as in the product
    from _cold_raw import send_raw

    runtime = time.monotonic()
    from google.auth.credentials import AnonymousCredentials

    anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
    clients = []
    for service, endpoint in spec["services"].items():
        module, name = CLIENTS[service]
        cls = getattr(importlib.import_module(module), name)
        if service == "containeranalysis":  # GrafeasClient takes its transport ready-made
            transport = importlib.import_module(
                "grafeas.grafeas_v1.services.grafeas.transports.rest"
            ).GrafeasRestTransport(host=endpoint, credentials=anonymous)
            clients.append(cls(transport=transport))
        else:
            clients.append(
                cls(
                    transport="rest",
                    credentials=anonymous,
                    client_options={"api_endpoint": endpoint},
                )
            )
    if spec["data_plane"]:
        import httpx

        clients.append(httpx.Client())
    imported = time.monotonic()
    close = send_raw(spec["requests"])
    handled = time.monotonic()
    close()
    return {
        "started": STARTED,
        "runtime": runtime,
        "imported": imported,
        "handled": handled,
        "clients": len(clients),
    }


def main() -> None:
    mode, spec_path, out_path = sys.argv[1:4]
    with open(spec_path, encoding="utf-8") as file:
        spec = json.load(file)
    from _cold_raw import Hidden

    sys.meta_path.insert(0, Hidden(spec.get("hidden", ())))
    marks = product(spec) if mode == "product" else floor(spec)
    with open(out_path, "w", encoding="utf-8") as file:
        json.dump(marks, file)


if __name__ == "__main__":
    main()
