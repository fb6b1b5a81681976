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
from collections.abc import Iterable, Sequence  # noqa: E402
from importlib.machinery import ModuleSpec  # noqa: E402
from types import ModuleType  # noqa: E402
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


class Hidden:
    """A meta path finder that makes the packages a deployed function would not have
    missing: an optional import of one fails as it would on Cloud Run."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (not deployed)", name=name)
        return None


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
    import http.client

    connections: dict[str, http.client.HTTPConnection] = {}
    for request in spec["requests"]:
        host = request["host"]
        connection = connections.get(host)
        if connection is None:
            connection = connections[host] = http.client.HTTPConnection(host, timeout=60)
        connection.putrequest(
            request["method"], request["target"], skip_host=True, skip_accept_encoding=True
        )
        for name, value in request["headers"]:
            connection.putheader(name, value)
        body = request["body"].encode("latin-1")
        connection.endheaders(body or None)
        connection.getresponse().read()
    handled = time.monotonic()
    for connection in connections.values():
        connection.close()
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
    sys.meta_path.insert(0, Hidden(spec.get("hidden", ())))
    marks = product(spec) if mode == "product" else floor(spec)
    with open(out_path, "w", encoding="utf-8") as file:
        json.dump(marks, file)


if __name__ == "__main__":
    main()
